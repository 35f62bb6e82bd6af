/* lifecycle/retention.c - the retention rules (lifecycle/retention.h).
 *
 * Each point carries a mark while the rules run: undecided, kept by a rule,
 * removed by a rule, or protected.  A rule only ever decides undecided
 * points, so the order of the rules matters: keep_last goes first and the
 * coarser periods fill in around what the finer ones kept.
 *
 * A bucket is a 64-bit number made from the local calendar fields of the
 * rule's period (2024-01-11 becomes 20240111 for keep_daily), so equal
 * periods give equal numbers and different ones differ.  One small hash table
 * per rule remembers the buckets: "covered" (an earlier rule kept a point
 * there) or "taken" (this rule kept a point there).  That keeps the work
 * linear in the number of points, which matters for a context that has
 * collected thousands of them.
 */
#include <stdlib.h>
#include <string.h>

#include "lifecycle/lifecycle-int.h"
#include "lifecycle/retention.h"

enum mark {
  MARK_UNDECIDED = 0,
  MARK_KEPT,
  MARK_REMOVED,
  MARK_PROTECTED,        /* kept, but never counts toward a rule */
};

enum period {
  PERIOD_EXACT,          /* keep_last: every point its own bucket */
  PERIOD_HOUR,
  PERIOD_DAY,
  PERIOD_WEEK,
  PERIOD_MONTH,
  PERIOD_YEAR,
};

enum bucket_state {
  BUCKET_EMPTY = 0,      /* a free slot of the table */
  BUCKET_COVERED,        /* an earlier rule kept a point in it */
  BUCKET_TAKEN,          /* this rule kept a point in it */
};

struct bucket {
  int64_t key;
  unsigned char state;   /* enum bucket_state */
};

/* Open addressing over a power-of-two table, at most half full (a rule sees
 * at most n buckets and the table has room for 2n). */
struct bucket_table {
  struct bucket *slots;
  size_t mask;
};

static struct bucket *
bucket_find (struct bucket_table *t, int64_t key)
{
  size_t i = (size_t) (((uint64_t) key * UINT64_C (0x9e3779b97f4a7c15)) >> 17) & t->mask;

  while (t->slots[i].state != BUCKET_EMPTY && t->slots[i].key != key)
    i = (i + 1) & t->mask;
  return &t->slots[i];
}

/* The ISO 8601 week of a local date, as year * 100 + week (what strftime's
 * "%G%V" says): weeks start on Monday, and a week belongs to the year that
 * holds its Thursday, so 2020-12-31 and 2021-01-01 are both 2020-W53. */
static int64_t
iso_week (const struct tm *tm)
{
  int64_t year = (int64_t) tm->tm_year + 1900;
  int since_monday = (tm->tm_wday + 6) % 7;
  int thursday = tm->tm_yday - since_monday + 3;    /* day of the year of this week's Thursday */

  if (thursday < 0) {
    year--;
    thursday += lifecycle_is_leap (year) ? 366 : 365;
  } else if (thursday >= (lifecycle_is_leap (year) ? 366 : 365)) {
    thursday -= lifecycle_is_leap (year) ? 366 : 365;
    year++;
  }
  return year * 100 + thursday / 7 + 1;
}

/* The bucket of point i for a period, from its local time.  For keep_last
 * every point is its own bucket, whatever its time: two backups taken in
 * the same second are two points (the key is the point's index, and
 * keep_last, the first rule, meets no bucket of another period).  A time
 * localtime_r cannot convert (beyond any real calendar) is its own bucket;
 * such a number is larger than any calendar key, so it collides with none. */
static int64_t
bucket_key (enum period p, const struct retention_point *points, size_t i)
{
  time_t when = points[i].when;
  struct tm tm;
  int64_t year;

  if (p == PERIOD_EXACT)
    return (int64_t) i;
  if (localtime_r (&when, &tm) == NULL)
    return (int64_t) when;
  year = (int64_t) tm.tm_year + 1900;
  switch (p) {
  case PERIOD_HOUR:
    return ((year * 100 + tm.tm_mon + 1) * 100 + tm.tm_mday) * 100 + tm.tm_hour;
  case PERIOD_DAY:
    return (year * 100 + tm.tm_mon + 1) * 100 + tm.tm_mday;
  case PERIOD_WEEK:
    return iso_week (&tm);
  case PERIOD_MONTH:
    return year * 100 + tm.tm_mon + 1;
  case PERIOD_YEAR:
  default:
    return year;
  }
}

/* Run one rule that keeps up to `count` buckets of `period` over the marks
 * the earlier rules left. */
static void
apply_rule (enum period period, int64_t count, const struct retention_point *points,
            unsigned char *marks, size_t n, struct bucket_table *t)
{
  int64_t taken = 0;

  if (count <= 0)
    return;
  memset (t->slots, 0, (t->mask + 1) * sizeof *t->slots);

  /* Buckets an earlier rule already keeps a point in are not this rule's
   * to fill (a protected point covers nothing). */
  for (size_t i = 0; i < n; i++) {
    if (marks[i] == MARK_KEPT) {
      int64_t key = bucket_key (period, points, i);
      struct bucket *b = bucket_find (t, key);

      b->key = key;
      b->state = BUCKET_COVERED;
    }
  }

  for (size_t i = 0; i < n; i++) {
    int64_t key;
    struct bucket *b;

    if (marks[i] != MARK_UNDECIDED)
      continue;
    key = bucket_key (period, points, i);
    b = bucket_find (t, key);
    if (b->state == BUCKET_COVERED)
      continue;                       /* left for a later rule */
    if (b->state == BUCKET_TAKEN) {
      marks[i] = MARK_REMOVED;        /* an older point of a bucket kept here */
      continue;
    }
    if (taken >= count)
      break;
    b->key = key;
    b->state = BUCKET_TAKEN;
    marks[i] = MARK_KEPT;
    taken++;
  }
}

bool
retention_rules_empty (const struct retention_rules *r)
{
  return r->keep_last < 0 && r->keep_hourly < 0 && r->keep_daily < 0 &&
    r->keep_weekly < 0 && r->keep_monthly < 0 && r->keep_yearly < 0;
}

void
retention_select (const struct retention_rules *r, struct retention_point *points, size_t n)
{
  const int64_t counts[] = {
    [PERIOD_EXACT] = r->keep_last, [PERIOD_HOUR] = r->keep_hourly,
    [PERIOD_DAY] = r->keep_daily, [PERIOD_WEEK] = r->keep_weekly,
    [PERIOD_MONTH] = r->keep_monthly, [PERIOD_YEAR] = r->keep_yearly,
  };
  unsigned char *marks = NULL;
  struct bucket_table t = { NULL, 0 };
  size_t cap = 8;

  if (n == 0)
    return;
  for (size_t i = 0; i < n; i++)
    points[i].keep = true;
  if (retention_rules_empty (r))
    return;

  while (cap < 2 * n && cap <= SIZE_MAX / 4)
    cap *= 2;
  marks = calloc (n, 1);
  t.slots = cap >= 2 * n ? calloc (cap, sizeof *t.slots) : NULL;
  t.mask = cap - 1;
  if (marks == NULL || t.slots == NULL)
    goto out;                         /* everything stays */

  for (size_t i = 0; i < n; i++)
    if (points[i].is_protected)
      marks[i] = MARK_PROTECTED;
  for (int p = PERIOD_EXACT; p <= PERIOD_YEAR; p++)
    apply_rule ((enum period) p, counts[p], points, marks, n, &t);

  /* Undecided points are removed like the ones a rule removed; then the
   * newest stays whatever the rules said. */
  for (size_t i = 0; i < n; i++)
    points[i].keep = marks[i] == MARK_KEPT || marks[i] == MARK_PROTECTED;
  points[0].keep = true;

 out:
  free (marks);
  free (t.slots);
}
