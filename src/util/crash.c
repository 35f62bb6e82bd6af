/* util/crash.c - STRATA_CRASH_AT and STRATA_PAUSE_AT fault injection
 * (util/crash.h). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "util/crash.h"
#include "util/log.h"

void
crash_point (const char *where)
{
  const char *at = getenv ("STRATA_CRASH_AT");
  const char *pause = getenv ("STRATA_PAUSE_AT");

  if (at && strcmp (at, where) == 0) {
    log_warn ("STRATA_CRASH_AT=%s: dying here, as a power cut would", where);
    raise (SIGKILL);
  }
  if (pause && strcmp (pause, where) == 0) {
    log_warn ("STRATA_PAUSE_AT=%s: stopping here until SIGCONT", where);
    raise (SIGSTOP);
  }
}
