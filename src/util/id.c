/* util/id.c - identifiers, names and timestamps. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "util/error.h"
#include "util/id.h"

#define SLUG_MAX 40

int
id_random (void *buf, size_t n)
{
  unsigned char *p = buf;
  while (n > 0) {
    ssize_t r = getrandom (p, n, 0);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      error_set_errno (ERR_INTERNAL, errno, "getrandom");
      return -1;
    }
    p += r;
    n -= r;
  }
  return 0;
}

static int
random_hex (char *out, size_t nbytes)
{
  unsigned char raw[32];
  if (nbytes > sizeof raw || id_random (raw, nbytes) == -1)
    return -1;
  for (size_t i = 0; i < nbytes; i++)
    sprintf (out + 2 * i, "%02x", raw[i]);
  return 0;
}

static bool
id_char (unsigned char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/* A VM name reduced to id characters: anything else becomes '_', and dots
 * are not allowed to lead so that a slug can never be "." or "..". */
static void
slug (const char *name, char *out)
{
  size_t j = 0;
  for (size_t i = 0; name[i] && j < SLUG_MAX; i++) {
    unsigned char c = name[i];
    out[j] = id_char (c) && !(c == '.' && j == 0) ? c : '_';
    j++;
  }
  out[j] = '\0';
}

char *
id_new (const char *prefix, const char *vm_name)
{
  char s[SLUG_MAX + 1] = "", stamp[32], rnd[13], *ret;
  time_t t = time (NULL);
  struct tm tm;

  if (vm_name)
    slug (vm_name, s);
  gmtime_r (&t, &tm);
  strftime (stamp, sizeof stamp, "%Y%m%dT%H%M%S", &tm);
  if (random_hex (rnd, 6) == -1)
    return NULL;
  if (asprintf (&ret, "%s%s%s-%s-%s", prefix, *s ? "-" : "", s, stamp, rnd) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "asprintf");
    return NULL;
  }
  return ret;
}

char *
id_export_name (void)
{
  char rnd[33], *ret;
  if (random_hex (rnd, 16) == -1)
    return NULL;
  if (asprintf (&ret, "strata-%s", rnd) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "asprintf");
    return NULL;
  }
  return ret;
}

bool
id_valid (const char *s)
{
  size_t n;
  if (s == NULL || strcmp (s, ".") == 0 || strcmp (s, "..") == 0)
    return false;
  for (n = 0; s[n]; n++)
    if (n >= ID_MAX || !id_char (s[n]))
      return false;
  return n > 0;
}

/* Length of the UTF-8 sequence at p, or 0 when it is malformed (overlong
 * forms, surrogates and values past U+10FFFF included). */
static size_t
utf8_len (const unsigned char *p)
{
  if (p[0] < 0x80) return 1;
  if (p[0] >= 0xc2 && p[0] <= 0xdf)
    return (p[1] & 0xc0) == 0x80 ? 2 : 0;
  if (p[0] >= 0xe0 && p[0] <= 0xef) {
    if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80) return 0;
    if (p[0] == 0xe0 && p[1] < 0xa0) return 0;
    if (p[0] == 0xed && p[1] >= 0xa0) return 0;
    return 3;
  }
  if (p[0] >= 0xf0 && p[0] <= 0xf4) {
    if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
      return 0;
    if (p[0] == 0xf0 && p[1] < 0x90) return 0;
    if (p[0] == 0xf4 && p[1] >= 0x90) return 0;
    return 4;
  }
  return 0;
}

int
id_check_vm_name (const char *name)
{
  const unsigned char *p = (const unsigned char *) name;
  size_t len;

  if (name == NULL || *name == '\0') {
    error_set (ERR_INVALID, "vm_name must not be empty");
    return -1;
  }
  len = strlen (name);
  if (len > VM_NAME_MAX) {
    error_set (ERR_INVALID, "vm_name is %zu bytes long; the limit is %d",
               len, VM_NAME_MAX);
    return -1;
  }
  if (strcmp (name, ".") == 0 || strcmp (name, "..") == 0 ||
      strchr (name, '/') || strchr (name, '\\')) {
    error_set (ERR_INVALID, "vm_name must not look like a path "
               "(no '/', '\\', '.' or '..')");
    return -1;
  }
  if (name[0] == ' ' || name[len - 1] == ' ') {
    error_set (ERR_INVALID, "vm_name must not start or end with a space");
    return -1;
  }
  while (*p) {
    size_t n = utf8_len (p);
    if (n == 0) {
      error_set (ERR_INVALID, "vm_name is not valid UTF-8");
      return -1;
    }
    /* C0 controls and DEL, C1 controls (U+0080..U+009F), and the line and
     * paragraph separators U+2028/U+2029, which break lines as well. */
    if ((n == 1 && (*p < 0x20 || *p == 0x7f)) ||
        (n == 2 && p[0] == 0xc2 && p[1] <= 0x9f) ||
        (n == 3 && p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9))) {
      error_set (ERR_INVALID, "vm_name must not contain control characters");
      return -1;
    }
    p += n;
  }
  return 0;
}

void
id_now (char *buf, size_t len)
{
  struct timespec ts;
  struct tm tm;
  size_t n;

  clock_gettime (CLOCK_REALTIME, &ts);
  gmtime_r (&ts.tv_sec, &tm);
  n = strftime (buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf (buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

void
id_time_format (time_t t, char *buf, size_t len)
{
  struct tm tm;
  size_t n;

  gmtime_r (&t, &tm);
  n = strftime (buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf (buf + n, len - n, ".000Z");
}

int
id_time_parse (const char *s, time_t *out)
{
  struct tm tm = { 0 };
  const char *rest;

  if (s == NULL || (rest = strptime (s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
    return -1;
  if (*rest == '.')
    for (rest++; *rest >= '0' && *rest <= '9'; rest++)
      ;
  if (strcmp (rest, "Z") != 0)
    return -1;
  *out = timegm (&tm);
  return 0;
}
