/* util/log.c - logging to stderr.  One line per call, written with a single
 * write so that lines from different threads never interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

static enum log_level min_level = LOG_INFO;

void
log_set_level (enum log_level level)
{
  min_level = level;
}

void
log_msg (enum log_level level, const char *fmt, ...)
{
  static const char *names[] = { "debug", "info", "warn", "error" };
  char line[2048];
  struct timespec ts;
  struct tm tm;
  size_t len;
  va_list ap;

  if (level < min_level)
    return;
  clock_gettime (CLOCK_REALTIME, &ts);
  gmtime_r (&ts.tv_sec, &tm);
  len = strftime (line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
  len += snprintf (line + len, sizeof line - len, ".%03ldZ strata[%d] %s: ",
                   ts.tv_nsec / 1000000, (int) getpid (), names[level]);
  va_start (ap, fmt);
  if (len < sizeof line)
    len += vsnprintf (line + len, sizeof line - len, fmt, ap);
  va_end (ap);
  if (len >= sizeof line - 1)
    len = sizeof line - 2;
  line[len++] = '\n';
  if (write (STDERR_FILENO, line, len) < 0) {
    /* Nowhere left to report it. */
  }
}
