/* util/error.c - thread-local error record. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/error.h"

#define ERROR_MAX 1024

static __thread struct {
  enum error_category cat;
  int errnum;
  char msg[ERROR_MAX];
} last_error;

static void __attribute__((format (printf, 3, 0)))
error_vset (enum error_category cat, int errnum, const char *fmt, va_list ap)
{
  last_error.cat = cat;
  last_error.errnum = errnum;
  vsnprintf (last_error.msg, sizeof last_error.msg, fmt, ap);
  if (errnum) {
    size_t len = strlen (last_error.msg);
    snprintf (last_error.msg + len, sizeof last_error.msg - len, ": %s",
              strerror (errnum));
  }
}

void
error_set (enum error_category cat, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  error_vset (cat, 0, fmt, ap);
  va_end (ap);
}

void
error_set_errno (enum error_category cat, int errnum, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  /* A full or read-only file system is the operator's problem, not a
   * bug: say so (the message carries strerror's "Read-only file system"). */
  if (cat == ERR_INTERNAL && (errnum == ENOSPC || errnum == EDQUOT))
    cat = ERR_NO_SPACE;
  if (cat == ERR_INTERNAL && errnum == EROFS)
    cat = ERR_UNAVAILABLE;
  error_vset (cat, errnum, fmt, ap);
  va_end (ap);
}

void
error_prefix (const char *fmt, ...)
{
  char prefix[256], old[ERROR_MAX];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (prefix, sizeof prefix, fmt, ap);
  va_end (ap);
  memcpy (old, last_error.msg, sizeof old);
  /* Truncation is fine here: the message is for people. */
  size_t plen = strlen (prefix);
  if (plen > ERROR_MAX - 3)
    plen = ERROR_MAX - 3;
  memcpy (last_error.msg, prefix, plen);
  memcpy (last_error.msg + plen, ": ", 2);
  size_t olen = strnlen (old, ERROR_MAX - plen - 3);
  memcpy (last_error.msg + plen + 2, old, olen);
  last_error.msg[plen + 2 + olen] = '\0';
}

void
error_recategorize (enum error_category cat)
{
  last_error.cat = cat;
}

void
error_clear (void)
{
  last_error.cat = ERR_NONE;
  last_error.errnum = 0;
  last_error.msg[0] = '\0';
}

void
error_save (struct error_saved *s)
{
  s->cat = last_error.cat;
  s->errnum = last_error.errnum;
  memcpy (s->msg, last_error.msg, sizeof s->msg);
}

void
error_restore (const struct error_saved *s)
{
  last_error.cat = s->cat;
  last_error.errnum = s->errnum;
  memcpy (last_error.msg, s->msg, sizeof last_error.msg);
}

enum error_category
error_category (void)
{
  return last_error.cat == ERR_NONE ? ERR_INTERNAL : last_error.cat;
}

int
error_errno (void)
{
  return last_error.errnum;
}

const char *
error_message (void)
{
  return last_error.msg[0] ? last_error.msg : "unknown error";
}

static const struct {
  int status;
  const char *code;
} error_table[] = {
  [ERR_NONE]         = { 500, "internal" },
  [ERR_INVALID]      = { 400, "invalid_request" },
  [ERR_UNAUTHORIZED] = { 401, "unauthorized" },
  [ERR_NOT_FOUND]    = { 404, "not_found" },
  [ERR_METHOD]       = { 405, "method_not_allowed" },
  [ERR_CONFLICT]     = { 409, "conflict" },
  [ERR_TOO_LARGE]    = { 413, "payload_too_large" },
  [ERR_URI_TOO_LONG] = { 414, "uri_too_long" },
  [ERR_UNSUPPORTED_MEDIA] = { 415, "unsupported_media_type" },
  [ERR_HEADERS_TOO_LARGE] = { 431, "headers_too_large" },
  [ERR_INTERNAL]     = { 500, "internal" },
  [ERR_UNAVAILABLE]  = { 503, "unavailable" },
  [ERR_NO_SPACE]     = { 507, "insufficient_storage" },
};

int
error_http_status (enum error_category cat)
{
  if ((unsigned) cat >= sizeof error_table / sizeof error_table[0])
    return 500;
  return error_table[cat].status;
}

const char *
error_code (enum error_category cat)
{
  if ((unsigned) cat >= sizeof error_table / sizeof error_table[0])
    return "internal";
  return error_table[cat].code;
}
