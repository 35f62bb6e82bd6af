/* util/ticker.h - a thread that runs a pass at once, then again whenever it
 * is poked or the time the last pass asked for has come: the scheduler's
 * and the repository usage's loops (hub/schedule.c, hub/usage.c). */
#ifndef STRATA_UTIL_TICKER_H
#define STRATA_UTIL_TICKER_H

#include <time.h>

struct ticker;

/* Start the thread.  pass (opaque) returns the wall-clock time of its next
 * run at the latest.  NULL with ERR_INTERNAL (naming what) on failure. */
struct ticker *ticker_start (const char *what, time_t (*pass) (void *opaque),
                             void *opaque);
/* Run the pass again as soon as the one running (if any) ends.  NULL is a
 * no-op. */
void ticker_poke (struct ticker *t);
/* Stop the thread, waiting for a pass that runs, and free it.  NULL is a
 * no-op. */
void ticker_stop (struct ticker *t);

#endif
