/* util/clock.h - the monotonic clock, for durations, deadlines and rates.
 *
 * Wall-clock time (timestamps people read) comes from util/id.h's id_now;
 * everything that measures or waits uses these, so that a clock step
 * never stretches or cuts a timeout. */
#ifndef STRATA_UTIL_CLOCK_H
#define STRATA_UTIL_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds and in milliseconds. */
int64_t clock_mono_ns (void);
int64_t clock_mono_ms (void);

#endif
