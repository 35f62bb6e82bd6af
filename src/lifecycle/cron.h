/* lifecycle/cron.h - a policy's schedule: standard 5-field cron expressions.
 *
 * The fields are minute (0-59), hour (0-23), day of the month (1-31), month
 * (1-12 or jan-dec) and day of the week (0-7 or sun-sat; 0 and 7 are both
 * Sunday), separated by blanks.  Each field is a list "a,b,c" of items; an
 * item is "*", a number or name, a range "a-b", or either with a step:
 * "star/n" (every n-th value), "a-b/n", and "a/n" meaning a to the field's
 * end every n.  Names are case-insensitive.
 *
 * Days: when both day fields are restricted, a day matches if either field
 * does ("0 0 1 * mon" runs on the 1st and on every Monday); when either one
 * is unrestricted, both must match.  A field is unrestricted when it is
 * written "*" or "star/n", as in Vixie cron and cronie.
 *
 * The macros @hourly, @daily, @weekly, @monthly, @yearly and @annually stand
 * for "0 * * * *", "0 0 * * *", "0 0 * * 0", "0 0 1 * *" and "0 0 1 1 *".
 * @reboot is refused: the hub runs schedules, not start-up jobs.
 *
 * Times are the hub's local time (TZ).  Across daylight saving changes a
 * local minute that does not exist (clocks spring forward over it) is
 * skipped, and one that happens twice (clocks fall back) fires once, at its
 * first occurrence.
 */
#ifndef STRATA_LIFECYCLE_CRON_H
#define STRATA_LIFECYCLE_CRON_H

#include <time.h>

/* Longest expression cron_parse accepts, in bytes. */
#define CRON_MAX 256

struct cron;

/* Parse an expression.  Returns a new schedule the caller frees with
 * cron_free, or NULL with ERR_INVALID saying which field is wrong and how. */
struct cron *cron_parse (const char *text);
void cron_free (struct cron *c);

/* The first whole minute strictly after `after` that the schedule matches,
 * in local time; -1 when none comes within 5 years ("0 0 30 2 *"). */
time_t cron_next (const struct cron *c, time_t after);

#endif
