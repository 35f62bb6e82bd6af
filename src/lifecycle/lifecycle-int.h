/* lifecycle/lifecycle-int.h - calendar helpers shared by retention.c and
 * cron.c, private to src/lifecycle/. */
#ifndef STRATA_LIFECYCLE_INT_H
#define STRATA_LIFECYCLE_INT_H

#include <stdbool.h>
#include <stdint.h>

/* The Gregorian leap-year rule: every 4th year, but not every 100th, but
 * every 400th (2000 and 2024 are leap years, 2100 is not). */
static inline bool
lifecycle_is_leap (int64_t year)
{
  return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

#endif
