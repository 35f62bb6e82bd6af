/* tests/fuzz/fuzz.h - what the libFuzzer targets share: a check that
 * survives NDEBUG, and plain re-statements of the documented input rules
 * (util/id.h) that the targets hold the real validators to.
 *
 * The reference checks are written from the header comments, not from the
 * code, so a fuzzer that finds them disagreeing with the real one has found
 * a place where the code and its contract part ways. */
#ifndef STRATA_TESTS_FUZZ_H
#define STRATA_TESTS_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <errno.h>
#include <fcntl.h>

#include "util/error.h"
#include "util/id.h"

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf (stderr, "%s:%d: invariant broken: %s\n",                 \
               __FILE__, __LINE__, #cond);                              \
      abort ();                                                         \
    }                                                                   \
  } while (0)

/* A copy of the fuzzer's bytes as a C string (an inner NUL ends it early).
 * Caller frees. */
static inline char *
fuzz_cstr (const uint8_t *data, size_t size)
{
  char *s = malloc (size + 1);
  if (s == NULL)
    abort ();
  memcpy (s, data, size);
  s[size] = '\0';
  return s;
}

/* A file holding the fuzzer's bytes, for the readers of files: a memfd
 * (or, failing that, an unlinked file in /dev/shm or /tmp) reached through
 * /proc/self/fd, so that no run, not even a crashing one, leaves a file
 * behind.  The same file each call; returns its path. */
static inline const char *
fuzz_scratch_file (const uint8_t *data, size_t size)
{
  static const char *const dirs[] = { "/dev/shm", "/tmp" };
  static int fd = -1;
  static char path[64];
  size_t done = 0;

  if (fd == -1) {
    fd = memfd_create ("strata-fuzz", MFD_CLOEXEC);
    for (size_t i = 0; fd == -1 && i < sizeof dirs / sizeof dirs[0]; i++) {
      char tmpl[64];
      snprintf (tmpl, sizeof tmpl, "%s/strata-fuzz-XXXXXX", dirs[i]);
      fd = mkostemp (tmpl, O_CLOEXEC);
      if (fd != -1)
        unlink (tmpl);
    }
    if (fd == -1) {
      perror ("fuzz: scratch file");
      abort ();
    }
    snprintf (path, sizeof path, "/proc/self/fd/%d", fd);
  }
  if (ftruncate (fd, 0) == -1)
    abort ();
  while (done < size) {
    ssize_t n = pwrite (fd, data + done, size - done, done);
    if (n <= 0 && errno != EINTR)
      abort ();
    if (n > 0)
      done += n;
  }
  return path;
}

/* A validator that said no must have said why, as a client error. */
static inline void
fuzz_check_invalid (void)
{
  CHECK (error_category () == ERR_INVALID);
  CHECK (strcmp (error_message (), "unknown error") != 0);
}

/* util/id.h: 1..ID_MAX characters of [A-Za-z0-9._-], not "." or "..". */
static inline bool
ref_id_ok (const char *s)
{
  size_t n = strlen (s);
  if (n < 1 || n > ID_MAX || strcmp (s, ".") == 0 || strcmp (s, "..") == 0)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return false;
  }
  return true;
}

/* Well-formed UTF-8: shortest forms only, no surrogates, nothing past
 * U+10FFFF. */
static inline bool
ref_utf8_ok (const unsigned char *s, size_t len)
{
  for (size_t i = 0; i < len; ) {
    unsigned char c = s[i];
    uint32_t cp, min;
    size_t n;

    if (c < 0x80) { n = 1; cp = c; min = 0; }
    else if ((c & 0xe0) == 0xc0) { n = 2; cp = c & 0x1f; min = 0x80; }
    else if ((c & 0xf0) == 0xe0) { n = 3; cp = c & 0x0f; min = 0x800; }
    else if ((c & 0xf8) == 0xf0) { n = 4; cp = c & 0x07; min = 0x10000; }
    else return false;
    if (n > len - i)
      return false;
    for (size_t k = 1; k < n; k++) {
      if ((s[i + k] & 0xc0) != 0x80)
        return false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n;
  }
  return true;
}

/* util/id.h: a VM name is 1..VM_NAME_MAX bytes of valid UTF-8 with no
 * control character (C0, DEL, C1 U+0080..U+009F, U+2028, U+2029), no '/' or
 * '\\', not "." or "..", and no leading or trailing space. */
static inline bool
ref_vm_name_ok (const char *s)
{
  size_t n = strlen (s);
  const unsigned char *u = (const unsigned char *) s;
  if (n < 1 || n > VM_NAME_MAX || strcmp (s, ".") == 0 || strcmp (s, "..") == 0 ||
      s[0] == ' ' || s[n - 1] == ' ')
    return false;
  if (!ref_utf8_ok (u, n))
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = u[i];
    if (c < 0x20 || c == 0x7f || c == '/' || c == '\\')
      return false;
    /* In valid UTF-8, U+0080..U+009F is C2 80..C2 9F; U+2028/9 is E2 80 A8/A9. */
    if (c == 0xc2 && i + 1 < n && u[i + 1] <= 0x9f)
      return false;
    if (c == 0xe2 && i + 2 < n && u[i + 1] == 0x80 && (u[i + 2] == 0xa8 || u[i + 2] == 0xa9))
      return false;
  }
  return true;
}

/* id_check_vm_name, held to the rule above both ways. */
static inline int
fuzz_vm_name (const char *name)
{
  int r;

  error_clear ();
  r = id_check_vm_name (name);
  CHECK (r == 0 || r == -1);
  CHECK ((r == 0) == ref_vm_name_ok (name));
  if (r == -1)
    fuzz_check_invalid ();
  return r;
}

#endif
