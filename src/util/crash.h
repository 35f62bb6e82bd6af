/* util/crash.h - fault injection for the crash tests.
 *
 * When the environment variable STRATA_CRASH_AT names a point, the process
 * kills itself there with SIGKILL, as a power cut would, so that a test can
 * check that the next start recovers.  When STRATA_PAUSE_AT names it, the
 * process stops itself there with SIGSTOP (a test sends SIGCONT, or
 * SIGKILL), so that a test can act while it stands at that point, as a
 * second hub sharing its catalog would.  The points are listed where they
 * are used (hub/hub-int.h, storage/merge.h) and in the README.
 */
#ifndef STRATA_UTIL_CRASH_H
#define STRATA_UTIL_CRASH_H

void crash_point (const char *where);

#endif
