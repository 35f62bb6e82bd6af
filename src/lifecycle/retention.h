/* lifecycle/retention.h - which points of a context a retention policy keeps.
 *
 * Pure rules, no catalog and no files: the caller lists a context's completed
 * points newest first, this marks each kept or not, and the prune task turns
 * the rest into merges.  The semantics are Proxmox Backup Server's prune:
 *
 * - The rules run in the order keep_last, keep_hourly, keep_daily,
 *   keep_weekly, keep_monthly, keep_yearly.  A rule that is absent (-1) or 0
 *   does nothing.
 * - Each rule puts every point into a bucket of its period, in the hub's
 *   local time (localtime_r, so TZ counts): keep_last the exact time, then
 *   the hour, the day, the ISO 8601 week (week-numbering year and week), the
 *   month, the year.
 * - A rule skips the buckets that already hold a point an earlier rule kept,
 *   then walks the points newest first and keeps the newest point of each new
 *   bucket, until it has N buckets of its own.  The older points of a bucket
 *   it took are removed there and then, so later rules pass over them.
 * - Whatever no rule kept goes.  With no rule at all, everything stays.
 * - A protected point stays, and no rule counts it or its bucket.
 * - Our own rule on top: points[0], the newest, always stays (the next
 *   incremental builds on it), even when the rules removed it.
 */
#ifndef STRATA_LIFECYCLE_RETENTION_H
#define STRATA_LIFECYCLE_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* How many buckets each rule keeps; -1 = the rule is absent. */
struct retention_rules {
  int64_t keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly;
};

struct retention_point {
  time_t when;            /* when the point was taken */
  bool is_protected;
  bool keep;              /* out: set by retention_select */
};

/* Mark each of the n points (sorted newest first) kept or not, by the rules
 * above.  Never fails: should memory run out, every point is kept (a prune
 * that removes nothing is the safe way to fail). */
void retention_select (const struct retention_rules *r, struct retention_point *points,
                       size_t n);

/* True when every rule is absent: such a policy keeps everything. */
bool retention_rules_empty (const struct retention_rules *r);

#endif
