/* util/clock.c - the monotonic clock (util/clock.h). */
#include <time.h>

#include "util/clock.h"

int64_t
clock_mono_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t
clock_mono_ms (void)
{
  return clock_mono_ns () / 1000000;
}
