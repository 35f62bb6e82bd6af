/* tests/unit/tap.h - just enough TAP for the C unit tests.
 *
 * Each check prints "ok N - what" or "not ok N - what"; a failed check
 * prints what it got and wanted as "#" lines on stderr.  Either call
 * plan(N) first or end with done_testing(), which prints "1..N" itself;
 * main returns done_testing()'s value so that a failure, or a count that
 * does not match the plan, fails the program too.  skip_all(why), before
 * any check, reports the whole program as skipped and exits.
 */
#ifndef STRATA_TESTS_TAP_H
#define STRATA_TESTS_TAP_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_run, tap_failed, tap_planned = -1;

static inline void
plan (int n)
{
  tap_planned = n;
  printf ("1..%d\n", n);
  fflush (stdout);
}

/* Skip the whole program (a tool it needs is missing): "1..0 # SKIP why",
 * then exit successfully. */
static inline void __attribute__((format (printf, 1, 2), noreturn))
skip_all (const char *fmt, ...)
{
  va_list ap;

  printf ("1..0 # SKIP ");
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  putchar ('\n');
  fflush (stdout);
  exit (0);
}

/* A "#" line on stderr, for what a reader needs to see a failure. */
static inline void __attribute__((format (printf, 1, 2)))
diag (const char *fmt, ...)
{
  va_list ap;

  fflush (stdout);
  fputs ("# ", stderr);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

static inline bool __attribute__((format (printf, 2, 0)))
tap_vresult (bool pass, const char *fmt, va_list ap)
{
  tap_run++;
  if (!pass)
    tap_failed++;
  printf ("%sok %d - ", pass ? "" : "not ", tap_run);
  vprintf (fmt, ap);
  putchar ('\n');
  fflush (stdout);
  return pass;
}

/* One check: pass when cond is true.  Returns cond. */
static inline bool __attribute__((format (printf, 2, 3)))
ok (bool cond, const char *fmt, ...)
{
  va_list ap;
  bool r;

  va_start (ap, fmt);
  r = tap_vresult (cond, fmt, ap);
  va_end (ap);
  return r;
}

/* Pass when got equals want. */
static inline bool __attribute__((format (printf, 3, 4)))
is_int (int64_t got, int64_t want, const char *fmt, ...)
{
  va_list ap;
  bool r;

  va_start (ap, fmt);
  r = tap_vresult (got == want, fmt, ap);
  va_end (ap);
  if (!r)
    diag ("     got: %" PRId64 "\n#   wanted: %" PRId64, got, want);
  return r;
}

/* Pass when the strings are equal; NULL equals only NULL. */
static inline bool __attribute__((format (printf, 3, 4)))
is_str (const char *got, const char *want, const char *fmt, ...)
{
  va_list ap;
  bool same = (got == NULL || want == NULL) ? got == want : strcmp (got, want) == 0;
  bool r;

  va_start (ap, fmt);
  r = tap_vresult (same, fmt, ap);
  va_end (ap);
  if (!r)
    diag ("     got: %s%s%s\n#   wanted: %s%s%s",
          got ? "\"" : "", got ? got : "NULL", got ? "\"" : "",
          want ? "\"" : "", want ? want : "NULL", want ? "\"" : "");
  return r;
}

/* End the run: print the plan if none was given.  Returns the exit
 * status, 0 only when every check passed and the count is right. */
static inline int
done_testing (void)
{
  if (tap_planned < 0)
    printf ("1..%d\n", tap_run);
  else if (tap_planned != tap_run)
    diag ("planned %d tests but ran %d", tap_planned, tap_run);
  if (tap_failed)
    diag ("failed %d of %d tests", tap_failed, tap_run);
  fflush (stdout);
  return tap_failed == 0 && (tap_planned < 0 || tap_planned == tap_run) ? 0 : 1;
}

#endif
