/* tests/unit/test-lifecycle.c - retention selection and cron schedules
 * (src/lifecycle/), in UTC and in Europe/Berlin local time.
 *
 * The expected answers in the tables were worked out by hand from the rules
 * in lifecycle/retention.h and lifecycle/cron.h; a comment beside a case
 * says how where it is not obvious.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tap.h"

#include "lifecycle/cron.h"
#include "lifecycle/retention.h"
#include "util/error.h"

static void
set_tz (const char *tz)
{
  setenv ("TZ", tz, 1);
  tzset ();
}

/* "YYYY-MM-DD HH:MM[:SS]" followed by nothing (local time, the zone decides
 * about daylight saving), " CET"/" CEST" style (standard or daylight time
 * forced, for the hour that happens twice), or "Z" (UTC). */
static time_t
at (const char *s)
{
  struct tm tm = { .tm_isdst = -1 };
  int n = 0;
  const char *rest;

  if (sscanf (s, "%d-%d-%d %d:%d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
              &tm.tm_min, &n) != 5) {
    diag ("bad time in the test: %s", s);
    abort ();
  }
  rest = s + n;
  if (rest[0] == ':') {
    tm.tm_sec = atoi (rest + 1);
    rest += 3;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  if (strcmp (rest, "Z") == 0)
    return timegm (&tm);
  if (strcmp (rest, " CEST") == 0)
    tm.tm_isdst = 1;
  else if (strcmp (rest, " CET") == 0)
    tm.tm_isdst = 0;
  return mktime (&tm);
}

/* ---- retention ---------------------------------------------------------- */

#define ABSENT -1
#define RULES(l, h, d, w, m, y) { l, h, d, w, m, y }

struct retention_case {
  const char *what;
  struct retention_rules rules;
  /* newest first; a trailing " protected" marks a protected point */
  const char *points[12];
  const char *want;            /* kept indexes, e.g. "0 2 4" */
  const char *want_utc;        /* when TZ=UTC keeps something else (NULL: same) */
};

/* Two points on 2024-03-05, two on 03-04, one on 03-03, two on 03-02. */
#define SEVERAL_A_DAY                                                   \
  "2024-03-05 18:00", "2024-03-05 09:00", "2024-03-04 23:59", "2024-03-04 00:00", \
  "2024-03-03 12:00", "2024-03-02 12:00", "2024-03-02 08:00"

static const struct retention_case retention_cases[] = {
  { "keep_last alone keeps the newest N",
    RULES (3, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT),
    { "2024-03-01 10:00", "2024-03-01 09:00", "2024-03-01 08:00", "2024-03-01 07:00",
      "2024-03-01 06:00" },
    "0 1 2", NULL },
  { "keep_last counts points, not seconds: three in one second are three",
    RULES (3, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT),
    { "2024-03-01 10:00:07", "2024-03-01 10:00:07", "2024-03-01 10:00:06",
      "2024-03-01 10:00:06", "2024-03-01 10:00:05" },
    "0 1 2", NULL },
  { "keep_last larger than the list keeps everything",
    RULES (10, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT),
    { "2024-03-01 10:00", "2024-03-01 09:00", "2024-03-01 08:00" },
    "0 1 2", NULL },
  /* the newest point of each of 3 days; day 02 would be a 4th bucket */
  { "keep_daily over several points a day keeps each day's newest",
    RULES (ABSENT, ABSENT, 3, ABSENT, ABSENT, ABSENT),
    { SEVERAL_A_DAY },
    "0 2 4", NULL },
  { "keep_daily with more days allowed than there are",
    RULES (ABSENT, ABSENT, 10, ABSENT, ABSENT, ABSENT),
    { SEVERAL_A_DAY },
    "0 2 4 5", NULL },
  /* keep_last keeps 0 and 1 (both day 05); daily then skips day 05 and
   * takes days 04 and 03 */
  { "keep_last 2 + keep_daily 2: daily skips the day keep_last covers",
    RULES (2, ABSENT, 2, ABSENT, ABSENT, ABSENT),
    { SEVERAL_A_DAY },
    "0 1 2 4", NULL },
  /* keep_last keeps 0; day 05 is covered, so daily leaves 1 undecided
   * (removed at the end) and takes days 04 and 03 */
  { "keep_last 1 + keep_daily 2: a covered day's other points go",
    RULES (1, ABSENT, 2, ABSENT, ABSENT, ABSENT),
    { SEVERAL_A_DAY },
    "0 2 4", NULL },
  /* 2021-W01 | 2020-W53 (01-03 Sun, 01-01 Fri, 12-31 Thu) | 2020-W52 | 2020-W51 */
  { "keep_weekly across a year boundary uses ISO weeks",
    RULES (ABSENT, ABSENT, ABSENT, 3, ABSENT, ABSENT),
    { "2021-01-05 12:00", "2021-01-03 12:00", "2021-01-01 12:00", "2020-12-31 12:00",
      "2020-12-27 12:00", "2020-12-21 12:00", "2020-12-20 12:00" },
    "0 1 4", NULL },
  /* 2020-01-02 and 2019-12-30 are both 2020-W01; 2019-12-29 is 2019-W52 */
  { "keep_weekly: late December can be next year's week 1",
    RULES (ABSENT, ABSENT, ABSENT, 5, ABSENT, ABSENT),
    { "2020-01-02 12:00", "2019-12-30 12:00", "2019-12-29 12:00" },
    "0 2", NULL },
  { "keep_monthly keeps each month's newest",
    RULES (ABSENT, ABSENT, ABSENT, ABSENT, 2, ABSENT),
    { "2024-03-31 23:00", "2024-03-01 00:00", "2024-02-29 12:00", "2024-02-01 12:00",
      "2024-01-15 12:00" },
    "0 2", NULL },
  { "keep_yearly keeps each year's newest",
    RULES (ABSENT, ABSENT, ABSENT, ABSENT, ABSENT, 3),
    { "2024-06-01 12:00", "2024-01-01 00:00", "2023-12-31 23:59", "2022-07-01 12:00",
      "2021-07-01 12:00" },
    "0 2 3", NULL },
  /* monthly keeps 0 (2024-03) and stops; yearly finds 2024 covered, skips 1,
   * keeps 2 (2023), removes 3 (2023 taken), keeps 4 (2022) */
  { "keep_monthly 1 + keep_yearly 2",
    RULES (ABSENT, ABSENT, ABSENT, ABSENT, 1, 2),
    { "2024-03-10 12:00", "2024-02-10 12:00", "2023-12-10 12:00", "2023-06-10 12:00",
      "2022-05-10 12:00" },
    "0 2 4", NULL },
  { "keep_hourly keeps each hour's newest",
    RULES (ABSENT, 3, ABSENT, ABSENT, ABSENT, ABSENT),
    { "2024-03-05 10:59", "2024-03-05 10:00", "2024-03-05 09:30", "2024-03-05 08:15",
      "2024-03-05 08:05", "2024-03-05 07:00" },
    "0 2 3", NULL },
  /* daily keeps 0 (day 05), passes over 1 and 2 (protected; day 04 stays
   * free), keeps 3 (day 04) and stops at day 03; 5 stays protected */
  { "protected points stay and count toward no rule",
    RULES (ABSENT, ABSENT, 2, ABSENT, ABSENT, ABSENT),
    { "2024-03-05 18:00", "2024-03-05 09:00 protected", "2024-03-04 12:00 protected",
      "2024-03-04 08:00", "2024-03-03 12:00", "2024-03-02 12:00 protected",
      "2024-03-01 12:00" },
    "0 1 2 3 5", NULL },
  { "a protected newest point: keep_last starts at the next one",
    RULES (1, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT),
    { "2024-03-05 18:00 protected", "2024-03-05 17:00", "2024-03-05 16:00" },
    "0 1", NULL },
  { "no rule at all keeps everything",
    RULES (ABSENT, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT),
    { "2024-03-05 18:00", "2024-03-05 17:00", "2023-01-01 00:00", "2020-01-01 00:00" },
    "0 1 2 3", NULL },
  { "every rule 0 keeps only the newest",
    RULES (0, 0, 0, 0, 0, 0),
    { "2024-03-05 18:00", "2024-03-05 17:00", "2023-01-01 00:00", "2020-01-01 00:00" },
    "0", NULL },
  { "every rule 0 still keeps protected points",
    RULES (0, 0, 0, 0, 0, 0),
    { "2024-03-05 18:00", "2024-03-05 17:00", "2023-01-01 00:00 protected",
      "2020-01-01 00:00" },
    "0 2", NULL },
  { "a rule of 0 beside a real rule does nothing",
    RULES (0, ABSENT, 1, ABSENT, 0, ABSENT),
    { "2024-03-05 18:00", "2024-03-05 17:00", "2024-03-04 00:00" },
    "0", NULL },
  { "a single point stays",
    RULES (ABSENT, ABSENT, 1, ABSENT, ABSENT, ABSENT),
    { "2024-03-05 18:00" },
    "0", NULL },
  { "a single point stays even when every rule is 0",
    RULES (0, 0, 0, 0, 0, 0),
    { "2024-03-05 18:00" },
    "0", NULL },
  /* Given in UTC.  Berlin (UTC+1): 0 is 2024-01-12 00:30, 1 and 2 are on
   * 2024-01-11, so two days; in UTC all three are on 2024-01-11. */
  { "keep_daily buckets by local days, not UTC days",
    RULES (ABSENT, ABSENT, 2, ABSENT, ABSENT, ABSENT),
    { "2024-01-11 23:30Z", "2024-01-11 22:30Z", "2024-01-11 10:00Z" },
    "0 1", "0" },
  /* Given in UTC, the night clocks fall back in Berlin: 03:10 CET, 02:40 CET,
   * 02:10 CEST, 01:50 CEST, so 1 and 2 share the local hour 02; in UTC the
   * four hours differ. */
  { "keep_hourly over the hour that happens twice",
    RULES (ABSENT, 5, ABSENT, ABSENT, ABSENT, ABSENT),
    { "2024-10-27 02:10Z", "2024-10-27 01:40Z", "2024-10-27 00:10Z", "2024-10-26 23:50Z" },
    "0 1 3", "0 1 2 3" },
};

static void
run_retention_case (const struct retention_case *c, bool utc)
{
  struct retention_point pts[12];
  char got[64] = "", when[64];
  size_t n = 0;
  const char *want = utc && c->want_utc ? c->want_utc : c->want;

  for (; n < 12 && c->points[n]; n++) {
    const char *prot = strstr (c->points[n], " protected");
    size_t len = prot ? (size_t) (prot - c->points[n]) : strlen (c->points[n]);

    snprintf (when, sizeof when, "%.*s", (int) len, c->points[n]);
    pts[n] = (struct retention_point) { .when = at (when), .is_protected = prot != NULL,
                                        .keep = false };
  }
  retention_select (&c->rules, pts, n);
  for (size_t i = 0; i < n; i++)
    if (pts[i].keep)
      snprintf (got + strlen (got), sizeof got - strlen (got), "%s%zu", *got ? " " : "", i);
  is_str (got, want, "%s: %s", utc ? "UTC" : "Europe/Berlin", c->what);
}

/* Properties over random points and rules: the newest and the protected
 * points always stay, no rule keeps more than its N buckets, and the result
 * does not depend on anything but the input. */
static void
test_retention_random (void)
{
  bool fine = true;

  srand (9);
  for (int round = 0; round < 2000 && fine; round++) {
    struct retention_point pts[40], again[40];
    struct retention_rules r;
    int64_t *rule[] = { &r.keep_last, &r.keep_hourly, &r.keep_daily, &r.keep_weekly,
                        &r.keep_monthly, &r.keep_yearly };
    size_t n = (size_t) (rand () % 40);
    time_t t = at ("2025-06-01 12:00") + rand () % 1000000;
    int64_t budget = 0;
    size_t kept_unprotected = 0;

    for (size_t i = 0; i < 6; i++) {
      *rule[i] = rand () % 4 == 0 ? -1 : rand () % 5;
      budget += *rule[i] > 0 ? *rule[i] : 0;
    }
    for (size_t i = 0; i < n; i++) {
      t -= rand () % 4 == 0 ? rand () % 60 : rand () % (40 * 86400);
      pts[i] = (struct retention_point) { t, rand () % 7 == 0, false };
    }
    memcpy (again, pts, sizeof pts);
    retention_select (&r, pts, n);
    retention_select (&r, again, n);
    for (size_t i = 0; i < n; i++) {
      if ((i == 0 || pts[i].is_protected || retention_rules_empty (&r)) && !pts[i].keep)
        fine = false;
      if (pts[i].keep != again[i].keep)
        fine = false;
      if (i > 0 && pts[i].keep && !pts[i].is_protected)
        kept_unprotected++;
    }
    if (!retention_rules_empty (&r) && (int64_t) kept_unprotected > budget)
      fine = false;
    if (!fine)
      diag ("round %d breaks a property", round);
  }
  ok (fine, "random points: newest and protected stay, at most N per rule, repeatable");

  struct retention_rules r = RULES (1, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT);
  retention_select (&r, NULL, 0);
  ok (true, "no points at all is fine");
  ok (retention_rules_empty (&(struct retention_rules) RULES (-1, -1, -1, -1, -1, -1)) &&
      !retention_rules_empty (&(struct retention_rules) RULES (-1, -1, -1, -1, -1, 0)),
      "only all-absent rules are empty (a 0 is a rule)");
}

static void
test_retention (void)
{
  const char *zones[] = { "UTC", "Europe/Berlin" };

  for (size_t z = 0; z < 2; z++) {
    set_tz (zones[z]);
    for (size_t i = 0; i < sizeof retention_cases / sizeof retention_cases[0]; i++) {
      run_retention_case (&retention_cases[i], z == 0);
    }
  }
  test_retention_random ();
}

/* ---- cron: parsing ------------------------------------------------------ */

static void
test_cron_parse_errors (void)
{
  static const struct { const char *text, *says; } bad[] = {
    { "", "expected 5 fields" },
    { "   ", "got 0" },
    { "* * * *", "got 4" },
    { "* * * * * *", "got 6" },
    { "60 * * * *", "minute field '60': 60 is out of range 0-59" },
    { "* 24 * * *", "hour field '24': 24 is out of range 0-23" },
    { "* * 0 * *", "day-of-month field '0': 0 is out of range 1-31" },
    { "* * 32 * *", "day-of-month field" },
    { "* * * 0 *", "month field '0'" },
    { "* * * 13 *", "13 is out of range 1-12" },
    { "* * * * 8", "day-of-week field '8': 8 is out of range 0-7" },
    { "99999999999 * * * *", "far out of range" },
    { "*/0 * * * *", "a step of 0" },
    { "0-10/0 * * * *", "a step of 0" },
    { "*/61 * * * *", "the step 61 is out of range 1-60" },
    { "*/99999999 * * * *", "out of range" },
    { "30-10 * * * *", "the range 30-10 runs backwards" },
    { "* * * dec-jan *", "the range 12-1 runs backwards" },
    { "* * * * sat-sun", "runs backwards" },
    { "a * * * *", "'a' is not a number" },
    { "* * * foo *", "unknown name 'foo'" },
    { "* * * * monday", "unknown name 'monday'" },
    { "* * * * jan", "unknown name 'jan'" },
    { "1,,2 * * * *", "empty list item" },
    { ",1 * * * *", "empty list item" },
    { "1, * * * *", "empty list item" },
    { "1- * * * *", "a value is missing" },
    { "*/ * * * *", "a step must be a number" },
    { "*/x * * * *", "a step must be a number" },
    { "1/2/3 * * * *", "unexpected '/'" },
    { "1-2-3 * * * *", "unexpected '-'" },
    { "-1 * * * *", "unexpected '-'" },
    { "*5 * * * *", "unexpected '5'" },
    { "** * * * *", "unexpected '*'" },
    { "*-5 * * * *", "unexpected '-'" },
    { "1.5 * * * *", "unexpected '.'" },
    { "0 0 * * *\n", "not allowed" },
    { "0 0 * * *\x01", "byte 0x01" },
    { "0 0 * * \xc3\xa9", "printable ASCII" },
    { "@reboot", "@reboot is not supported" },
    { "@REBOOT", "@reboot is not supported" },
    { "@fortnightly", "unknown macro '@fortnightly'" },
    { "@", "unknown macro" },
    { "@daily 0", "unknown macro" },
  };
  char longer[CRON_MAX + 2];
  struct cron *c;

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    error_clear ();
    c = cron_parse (bad[i].text);
    ok (c == NULL && error_category () == ERR_INVALID &&
        strstr (error_message (), bad[i].says) != NULL,
        "refused: %s", error_message ());
    if (c != NULL || strstr (error_message (), bad[i].says) == NULL)
      diag ("for \"%s\" wanted a message with \"%s\"", bad[i].text, bad[i].says);
    cron_free (c);
  }
  ok (cron_parse (NULL) == NULL && error_category () == ERR_INVALID, "NULL is refused");

  /* a valid expression padded with blanks to exactly the limit, then one more */
  memset (longer, ' ', sizeof longer);
  memcpy (longer, "0 0 * * *", 9);
  longer[CRON_MAX] = '\0';
  c = cron_parse (longer);
  ok (c != NULL, "an expression of %d characters is accepted", CRON_MAX);
  cron_free (c);
  longer[CRON_MAX] = ' ';
  longer[CRON_MAX + 1] = '\0';
  c = cron_parse (longer);
  ok (c == NULL && strstr (error_message (), "longer than 256") != NULL,
      "one of %d characters is refused: %s", CRON_MAX + 1, error_message ());
  cron_free (c);
}

/* ---- cron: the next run ------------------------------------------------- */

/* cron_next as text ("YYYY-MM-DD HH:MM", with the zone when `zone`), or
 * "never", or "parse error". */
static const char *
next_text (const char *expr, const char *after, bool zone)
{
  static char buf[64];
  struct cron *c = cron_parse (expr);
  struct tm tm;
  time_t t;

  if (c == NULL) {
    snprintf (buf, sizeof buf, "parse error: %s", error_message ());
    return buf;
  }
  t = cron_next (c, at (after));
  cron_free (c);
  if (t == -1)
    return "never";
  if (t % 60 != 0)
    return "not a whole minute";
  localtime_r (&t, &tm);
  strftime (buf, sizeof buf, zone ? "%Y-%m-%d %H:%M %Z" : "%Y-%m-%d %H:%M", &tm);
  return buf;
}

struct next_case {
  const char *expr, *after, *want;
};

/* In UTC.  2026-01-01 is a Thursday. */
static const struct next_case utc_cases[] = {
  { "* * * * *", "2026-01-01 10:00", "2026-01-01 10:01" },
  { "* * * * *", "2026-01-01 10:00:30", "2026-01-01 10:01" },
  { "* * * * *", "2026-01-01 10:00:59", "2026-01-01 10:01" },
  { "*/15 * * * *", "2026-01-01 10:00", "2026-01-01 10:15" },
  { "*/15 * * * *", "2026-01-01 10:14", "2026-01-01 10:15" },
  { "*/15 * * * *", "2026-01-01 10:45", "2026-01-01 11:00" },
  { "*/15 * * * *", "2026-01-01 23:50", "2026-01-02 00:00" },
  { "30 * * * *", "2026-01-01 10:29", "2026-01-01 10:30" },
  { "30 * * * *", "2026-01-01 10:30", "2026-01-01 11:30" },
  { "0 2 * * *", "2026-01-01 01:59", "2026-01-01 02:00" },
  { "0 2 * * *", "2026-01-01 02:00", "2026-01-02 02:00" },
  { "0,30 8,20 * * *", "2026-01-01 08:00", "2026-01-01 08:30" },
  { "0,30 8,20 * * *", "2026-01-01 08:30", "2026-01-01 20:00" },
  { "5/20 * * * *", "2026-01-01 10:05", "2026-01-01 10:25" },
  { "5/20 * * * *", "2026-01-01 10:45", "2026-01-01 11:05" },
  { "10-30/10 * * * *", "2026-01-01 10:30", "2026-01-01 11:10" },
  /* weekdays: Friday 01-02, then Monday 01-05 */
  { "0 9 * * 1-5", "2026-01-01 09:00", "2026-01-02 09:00" },
  { "0 9 * * 1-5", "2026-01-02 09:00", "2026-01-05 09:00" },
  { "0 9 * * mon-fri", "2026-01-03 12:00", "2026-01-05 09:00" },
  { "0 9 * * MON-Fri", "2026-01-03 12:00", "2026-01-05 09:00" },
  { "0 0 * * 7", "2026-01-01 00:00", "2026-01-04 00:00" },
  { "0 0 * * 0", "2026-01-01 00:00", "2026-01-04 00:00" },
  { "0 0 * * sun", "2026-01-01 00:00", "2026-01-04 00:00" },
  { "0 0 * * 5-7", "2026-01-03 00:00", "2026-01-04 00:00" },
  /* both day fields restricted: the 13th or a Friday (2, 9, 16) */
  { "0 0 13 * 5", "2026-01-01 00:00", "2026-01-02 00:00" },
  { "0 0 13 * 5", "2026-01-09 00:00", "2026-01-13 00:00" },
  { "0 0 13 * 5", "2026-01-13 00:00", "2026-01-16 00:00" },
  /* "star/2" leaves the day of the month unrestricted: odd days that are
   * Mondays (5 and 19), not odd days or Mondays */
  { "0 0 */2 * 1", "2026-01-01 00:00", "2026-01-05 00:00" },
  { "0 0 */2 * 1", "2026-01-05 00:00", "2026-01-19 00:00" },
  { "0 0 1 * *", "2026-01-15 00:00", "2026-02-01 00:00" },
  { "0 0 1 jan,jul *", "2026-01-01 00:00", "2026-07-01 00:00" },
  { "0 0 1 JUL-aug *", "2026-07-01 00:00", "2026-08-01 00:00" },
  { "0 0 31 * *", "2026-01-31 00:00", "2026-03-31 00:00" },
  /* Feb 29: 2028 is a leap year, 2100 is not, 2104 is */
  { "0 0 29 2 *", "2026-01-01 00:00", "2028-02-29 00:00" },
  { "0 0 29 2 *", "2028-02-29 00:00", "2032-02-29 00:00" },
  { "0 0 29 2 *", "2099-06-01 00:00", "2104-02-29 00:00" },
  { "0 0 29 2 *", "2097-01-01 00:00", "never" },
  { "0 0 30 2 *", "2026-01-01 00:00", "never" },
  { "0 0 31 4,6,9,11 *", "2026-01-01 00:00", "never" },
  { "0 0 1 1 *", "2026-12-31 23:59", "2027-01-01 00:00" },
  { "59 23 31 12 *", "2026-12-31 23:59", "2027-12-31 23:59" },
  { "59 23 31 12 *", "2026-12-31 23:58", "2026-12-31 23:59" },
  { "@hourly", "2026-01-01 10:00", "2026-01-01 11:00" },
  { "@daily", "2026-01-01 10:00", "2026-01-02 00:00" },
  { "@weekly", "2026-01-01 10:00", "2026-01-04 00:00" },
  { "@monthly", "2026-01-01 10:00", "2026-02-01 00:00" },
  { "@yearly", "2026-01-01 10:00", "2027-01-01 00:00" },
  { " @Annually ", "2026-01-01 10:00", "2027-01-01 00:00" },
  { "\t0  12\t* * *  ", "2026-01-01 10:00", "2026-01-01 12:00" },
};

/* In Europe/Berlin.  2026-03-29: 02:00 CET jumps to 03:00 CEST.
 * 2026-10-25: 03:00 CEST falls back to 02:00 CET. */
static const struct next_case berlin_cases[] = {
  { "30 2 * * *", "2026-03-28 12:00", "2026-03-30 02:30 CEST" },
  { "* * * * *", "2026-03-29 01:59", "2026-03-29 03:00 CEST" },
  { "0 * * * *", "2026-03-29 01:00", "2026-03-29 03:00 CEST" },
  { "30 3 * * *", "2026-03-29 00:00", "2026-03-29 03:30 CEST" },
  { "0 12 * * *", "2026-03-28 12:00", "2026-03-29 12:00 CEST" },
  { "30 2 * * *", "2026-10-25 00:00", "2026-10-25 02:30 CEST" },
  { "30 2 * * *", "2026-10-25 02:30 CEST", "2026-10-26 02:30 CET" },
  { "30 2 * * *", "2026-10-25 02:45 CEST", "2026-10-26 02:30 CET" },
  { "30 2 * * *", "2026-10-25 02:10 CET", "2026-10-26 02:30 CET" },
  { "0 * * * *", "2026-10-25 01:30", "2026-10-25 02:00 CEST" },
  { "0 * * * *", "2026-10-25 02:00 CEST", "2026-10-25 03:00 CET" },
  { "* * * * *", "2026-10-25 02:59 CEST", "2026-10-25 03:00 CET" },
  { "0 3 * * *", "2026-10-25 02:30 CET", "2026-10-25 03:00 CET" },
  { "0 0 * * *", "2026-10-24 12:00", "2026-10-25 00:00 CEST" },
};

static void
run_next_cases (const struct next_case *cases, size_t n, bool zone)
{
  for (size_t i = 0; i < n; i++)
    is_str (next_text (cases[i].expr, cases[i].after, zone), cases[i].want,
            "'%s' after %s", cases[i].expr, cases[i].after);
}

/* A minute matches as our reference: the local fields are in the sets, and
 * this is the first time the local clock shows that minute (an hour earlier
 * it did not show the same). */
struct sets {
  bool minute[60], hour[24], day[32], month[13], weekday[7];
  bool day_any, weekday_any;
};

static bool
same_wall (const struct tm *a, const struct tm *b)
{
  return a->tm_year == b->tm_year && a->tm_mon == b->tm_mon && a->tm_mday == b->tm_mday &&
    a->tm_hour == b->tm_hour && a->tm_min == b->tm_min;
}

static bool
reference_match (const struct sets *s, time_t t)
{
  struct tm tm, before;
  time_t earlier = t - 3600;
  bool dom, dow;

  localtime_r (&t, &tm);
  localtime_r (&earlier, &before);
  if (same_wall (&tm, &before))
    return false;
  if (!s->minute[tm.tm_min] || !s->hour[tm.tm_hour] || !s->month[tm.tm_mon + 1])
    return false;
  dom = s->day[tm.tm_mday];
  dow = s->weekday[tm.tm_wday];
  return s->day_any || s->weekday_any ? dom && dow : dom || dow;
}

/* Append a field as a plain list of the chosen values. */
static void
render (char *buf, size_t size, const bool *set, int lo, int hi)
{
  bool first = true;

  for (int v = lo; v <= hi; v++) {
    if (set[v]) {
      snprintf (buf + strlen (buf), size - strlen (buf), "%s%d", first ? "" : ",", v);
      first = false;
    }
  }
  strncat (buf, " ", size - strlen (buf) - 1);
}

/* Random dense schedules against a minute-by-minute reference search, at
 * random times around the two DST changes of 2026 in the current zone. */
static void
test_cron_against_reference (const char *zone)
{
  int bad = 0, checked = 0;

  srand (29);
  for (int round = 0; round < 300; round++) {
    struct sets s = { 0 };
    char expr[CRON_MAX + 1] = "";
    struct cron *c;
    time_t after, got, t, limit;

    for (int i = 0; i < 60; i++) s.minute[i] = rand () % 3 == 0;
    for (int i = 0; i < 24; i++) s.hour[i] = rand () % 2 == 0;
    for (int i = 1; i < 32; i++) s.day[i] = rand () % 2 == 0;
    for (int i = 1; i < 13; i++) s.month[i] = rand () % 4 != 0;
    for (int i = 0; i < 7; i++) s.weekday[i] = rand () % 2 == 0;
    s.minute[rand () % 60] = s.hour[rand () % 24] = s.day[1 + rand () % 31] = true;
    s.month[1 + rand () % 12] = s.weekday[rand () % 7] = true;
    s.day_any = rand () % 3 == 0;
    s.weekday_any = rand () % 3 == 0;
    if (s.day_any)
      memset (s.day, true, sizeof s.day);
    if (s.weekday_any)
      memset (s.weekday, true, sizeof s.weekday);
    render (expr, sizeof expr, s.minute, 0, 59);
    render (expr, sizeof expr, s.hour, 0, 23);
    if (s.day_any)
      strcat (expr, "* ");
    else
      render (expr, sizeof expr, s.day, 1, 31);
    render (expr, sizeof expr, s.month, 1, 12);
    if (s.weekday_any)
      strcat (expr, "*");
    else
      render (expr, sizeof expr, s.weekday, 0, 6);

    c = cron_parse (expr);
    if (c == NULL) {
      diag ("'%s' did not parse: %s", expr, error_message ());
      bad++;
      continue;
    }
    after = (round % 2 ? at ("2026-03-28 22:00") : at ("2026-10-24 22:00")) +
      rand () % (6 * 3600) * 10 + rand () % 60;
    got = cron_next (c, after);
    cron_free (c);
    /* the reference walks minute by minute, as far as 400 days */
    limit = after + 400 * 86400;
    for (t = after - after % 60 + 60; t <= limit && !reference_match (&s, t); t += 60)
      ;
    if (t > limit)
      t = -2;          /* too far for the reference: only check got's match */
    if ((t != -2 && got != t) || (t == -2 && (got == -1 || !reference_match (&s, got)))) {
      diag ("'%s' after %lld: got %lld, reference %lld", expr, (long long) after,
            (long long) got, (long long) t);
      bad++;
    }
    checked++;
  }
  ok (bad == 0 && checked == 300, "%s: %d random schedules agree with a minute-by-minute search",
      zone, checked);
}

/* Garbage never crashes the parser, and whatever parses gives a sane next
 * run. */
static void
test_cron_garbage (void)
{
  static const char alphabet[] = "0123456789*/-, \tjanfebsunmonJANxyz@#\x01\xff";
  int parsed = 0, insane = 0;

  srand (7);
  for (int round = 0; round < 20000; round++) {
    char text[320];
    size_t len = (size_t) (rand () % 300);
    struct cron *c;

    for (size_t i = 0; i < len; i++)
      text[i] = rand () % 8 == 0 ? (char) (1 + rand () % 255)
        : alphabet[rand () % (sizeof alphabet - 1)];
    text[len] = '\0';
    /* a third of the rounds: five fields of cron-like tokens (often valid);
     * another third: a valid expression with a few bytes changed */
    if (round % 3 == 0) {
      static const char *const tokens[] = {
        "*", "*/5", "1", "7", "0-5", "1-31/2", "3/4", "jan", "mon-fri", "12", "59", "0",
        "sun", "6-7", "*/0", "5-1", "", "x", "2,3", "60",
      };
      text[0] = '\0';
      for (int f = 0; f < 4 + rand () % 3; f++) {
        for (int k = 0; k < 1 + rand () % 3; k++)
          snprintf (text + strlen (text), sizeof text - strlen (text), "%s%s", k ? "," : "",
                    tokens[rand () % (sizeof tokens / sizeof tokens[0])]);
        strcat (text, " ");
      }
    } else if (round % 3 == 1) {
      snprintf (text, sizeof text, "%s", "0-30/5 2,14 1-15 jan-jun mon-fri");
      for (int k = 0; k < 1 + rand () % 3; k++)
        text[rand () % strlen (text)] = alphabet[rand () % (sizeof alphabet - 1)];
    }
    c = cron_parse (text);
    if (c != NULL) {
      time_t after = 1767225600 + rand () % 100000000, next = cron_next (c, after);

      parsed++;
      if (next != -1 && (next <= after || next % 60 != 0))
        insane++;
    } else if (error_category () != ERR_INVALID || error_message ()[0] == '\0')
      insane++;
    cron_free (c);
  }
  ok (insane == 0, "20000 garbage inputs: no crash, %d parsed, every answer sane", parsed);

  /* the ends of time_t */
  struct cron *every = cron_parse ("* * * * *");
  const time_t ends[] = { INT64_MIN, INT64_MIN + 60, -62135596801 /* year 0 */, -1, 0,
                          253402300799 /* 9999-12-31 */, INT64_MAX - 60, INT64_MAX };
  insane = 0;
  for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
    time_t next = cron_next (every, ends[i]);
    if (next != -1 && (next <= ends[i] || next - ends[i] > 60))
      insane++;
  }
  is_int (cron_next (every, -1), 0, "the minute after -1 is the epoch");
  ok (insane == 0, "at the ends of time_t: no crash, -1 or the next minute");
  cron_free (every);
}

static void
test_cron (void)
{
  test_cron_parse_errors ();
  set_tz ("UTC");
  run_next_cases (utc_cases, sizeof utc_cases / sizeof utc_cases[0], false);
  test_cron_against_reference ("UTC");
  test_cron_garbage ();
  set_tz ("Europe/Berlin");
  run_next_cases (berlin_cases, sizeof berlin_cases / sizeof berlin_cases[0], true);
  test_cron_against_reference ("Europe/Berlin");
}

int
main (void)
{
  test_retention ();
  test_cron ();
  return done_testing ();
}
