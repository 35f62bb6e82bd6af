/* util/error.h - thread-local error record.
 *
 * A failing function returns -1 (or NULL) and leaves the reason here, as
 * libnbd's lib/errors.c does: a category that decides the HTTP status, the
 * errno if one applies, and a human-readable message.  The error is logged
 * once, by whoever finally handles it.
 */
#ifndef STRATA_UTIL_ERROR_H
#define STRATA_UTIL_ERROR_H

enum error_category {
  ERR_NONE = 0,
  ERR_INVALID,        /* 400: the request itself is wrong */
  ERR_UNAUTHORIZED,   /* 401 */
  ERR_NOT_FOUND,      /* 404 */
  ERR_METHOD,         /* 405 */
  ERR_CONFLICT,       /* 409: valid, but not in the current state */
  ERR_TOO_LARGE,      /* 413 */
  ERR_URI_TOO_LONG,   /* 414 */
  ERR_UNSUPPORTED_MEDIA, /* 415 */
  ERR_HEADERS_TOO_LARGE, /* 431 */
  ERR_INTERNAL,       /* 500 */
  ERR_UNAVAILABLE,    /* 503: a dependency (storage daemon, catalog) is down */
  ERR_NO_SPACE,       /* 507: the repository's file system is full */
};

/* Set the calling thread's error.  The message is formatted like printf. */
void error_set (enum error_category cat, const char *fmt, ...)
  __attribute__((format (printf, 2, 3)));
/* Same, recording errno (its text is appended to the message). */
void error_set_errno (enum error_category cat, int errnum, const char *fmt, ...)
  __attribute__((format (printf, 3, 4)));
/* Prefix the current message with more context ("starting backup: ..."). */
void error_prefix (const char *fmt, ...) __attribute__((format (printf, 1, 2)));
void error_clear (void);
/* Keep the message, give it another category (a missing file further down
 * is the client's conflict, a malformed upload the client's request). */
void error_recategorize (enum error_category cat);

/* Keep the current error across clean-up work that may overwrite it. */
struct error_saved {
  enum error_category cat;
  int errnum;
  char msg[1024];
};
void error_save (struct error_saved *s);
void error_restore (const struct error_saved *s);

enum error_category error_category (void);
int error_errno (void);
/* The message; valid until the next error_* call on this thread. */
const char *error_message (void);

/* The one table mapping categories to HTTP statuses and JSON codes. */
int error_http_status (enum error_category cat);
const char *error_code (enum error_category cat);

#endif
