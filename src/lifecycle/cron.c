/* lifecycle/cron.c - parsing cron expressions and finding their next run
 * (lifecycle/cron.h).
 *
 * A parsed expression is one bit set per field.  cron_next walks the local
 * calendar, not the clock: from the local date and time just after `after`
 * it jumps to the next allowed month, then day, hour and minute, and only
 * then asks mktime which instant that local minute is.  So a search costs at
 * most a few steps per day over five years, never one per minute.
 *
 * Walking local time is also what makes daylight saving come out right: a
 * local minute the clocks skip has no instant (mktime's answer does not
 * convert back to it), so it is passed over; a local minute that happens
 * twice is visited once, and fires at its earlier instant, or not at all
 * when that instant is already past.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lifecycle/cron.h"
#include "lifecycle/lifecycle-int.h"
#include "util/error.h"

struct cron {
  uint64_t minutes;         /* bit m: minute m, 0-59 */
  uint32_t hours;           /* bit h: hour h, 0-23 */
  uint32_t days;            /* bit d: day of the month d, 1-31 */
  uint16_t months;          /* bit m: month m, 1-12 */
  uint8_t weekdays;         /* bit w: weekday w, 0-6, Sunday 0 (7 folded in) */
  bool days_any, weekdays_any;   /* the day field was written "*" or "star/n" */
};

enum { F_MINUTE, F_HOUR, F_DAY, F_MONTH, F_WEEKDAY, F_COUNT };

static const char *const month_names[] = {
  "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", NULL
};
static const char *const weekday_names[] = {
  "sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL
};

struct field {
  const char *what;
  int min, max;
  const char *const *names;     /* names[i] stands for min + i */
};

static const struct field fields[F_COUNT] = {
  [F_MINUTE] = { "minute", 0, 59, NULL },
  [F_HOUR] = { "hour", 0, 23, NULL },
  [F_DAY] = { "day-of-month", 1, 31, NULL },
  [F_MONTH] = { "month", 1, 12, month_names },
  [F_WEEKDAY] = { "day-of-week", 0, 7, weekday_names },
};

static const struct {
  const char *name, *expansion;
} macros[] = {
  { "@hourly", "0 * * * *" },
  { "@daily", "0 0 * * *" },
  { "@weekly", "0 0 * * 0" },
  { "@monthly", "0 0 1 * *" },
  { "@yearly", "0 0 1 1 *" },
  { "@annually", "0 0 1 1 *" },
};

/* The text of the field being parsed, for error messages. */
struct field_text {
  const struct field *f;
  const char *s;
  size_t len;
};

static void __attribute__((format (printf, 2, 3)))
field_error (const struct field_text *ft, const char *fmt, ...)
{
  char why[320];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (why, sizeof why, fmt, ap);
  va_end (ap);
  error_set (ERR_INVALID, "schedule: %s field '%.*s': %s", ft->f->what, (int) ft->len, ft->s,
             why);
}

/* Read one value (digits, or a name where the field has names) at *p and
 * move *p past it.  Range checks are the caller's; a number too long to be
 * any value reads as 100000 or more, which they report as far out of range. */
static int
parse_value (const struct field_text *ft, const char **p, const char *end, int *out)
{
  const char *s = *p;

  if (s < end && isdigit ((unsigned char) *s)) {
    long v = 0;

    while (s < end && isdigit ((unsigned char) *s)) {
      if (v < 100000)
        v = v * 10 + (*s - '0');
      s++;
    }
    *out = (int) v;
    *p = s;
    return 0;
  }
  if (s < end && isalpha ((unsigned char) *s)) {
    const char *start = s;

    while (s < end && isalpha ((unsigned char) *s))
      s++;
    if (ft->f->names == NULL) {
      field_error (ft, "'%.*s' is not a number (names are for month and day-of-week only)",
                   (int) (s - start), start);
      return -1;
    }
    for (int i = 0; ft->f->names[i]; i++) {
      if (s - start == 3 && strncasecmp (start, ft->f->names[i], 3) == 0) {
        *out = ft->f->min + i;
        *p = s;
        return 0;
      }
    }
    field_error (ft, "unknown name '%.*s' (use %s)", (int) (s - start), start,
                 ft->f->names == month_names ? "jan..dec" : "sun..sat");
    return -1;
  }
  if (s == end)
    field_error (ft, "a value is missing");
  else
    field_error (ft, "unexpected '%c'", *s);
  return -1;
}

static int
check_range (const struct field_text *ft, int v)
{
  if (v < ft->f->min || v > ft->f->max) {
    if (v >= 100000)
      field_error (ft, "a number is far out of range %d-%d", ft->f->min, ft->f->max);
    else
      field_error (ft, "%d is out of range %d-%d", v, ft->f->min, ft->f->max);
    return -1;
  }
  return 0;
}

/* One list item: "*", "v", "a-b", each optionally followed by "/step".
 * Adds its values to *bits (bit v for value v). */
static int
parse_item (const struct field_text *ft, const char *s, const char *end, uint64_t *bits)
{
  const struct field *f = ft->f;
  int lo, hi, step = 1;
  bool to_end = false;       /* "a/n": from a to the field's end */

  if (s == end) {
    field_error (ft, "an empty list item");
    return -1;
  }
  if (*s == '*') {
    lo = f->min;
    hi = f->max;
    s++;
  } else {
    if (parse_value (ft, &s, end, &lo) == -1 || check_range (ft, lo) == -1)
      return -1;
    hi = lo;
    if (s < end && *s == '-') {
      s++;
      if (parse_value (ft, &s, end, &hi) == -1 || check_range (ft, hi) == -1)
        return -1;
      if (hi < lo) {
        field_error (ft, "the range %d-%d runs backwards", lo, hi);
        return -1;
      }
    } else
      to_end = true;
  }
  if (s < end && *s == '/') {
    const char *digits = ++s;
    long v = 0;

    while (s < end && isdigit ((unsigned char) *s)) {
      if (v < 100000)
        v = v * 10 + (*s - '0');
      s++;
    }
    if (s == digits) {
      field_error (ft, "a step must be a number");
      return -1;
    }
    if (v == 0) {
      field_error (ft, "a step of 0 is not allowed");
      return -1;
    }
    if (v > f->max - f->min + 1) {
      field_error (ft, "the step %s%ld is out of range 1-%d", v < 100000 ? "" : "more than ",
                   v < 100000 ? v : 99999L, f->max - f->min + 1);
      return -1;
    }
    step = (int) v;
    if (to_end)
      hi = f->max;
  }
  if (s != end) {
    field_error (ft, "unexpected '%c'", *s);
    return -1;
  }
  for (int v = lo; v <= hi; v += step)
    *bits |= UINT64_C (1) << v;
  return 0;
}

/* One field: a comma-separated list of items. */
static int
parse_field (const struct field_text *ft, uint64_t *bits)
{
  const char *s = ft->s, *end = ft->s + ft->len;

  *bits = 0;
  for (;;) {
    const char *comma = memchr (s, ',', end - s);
    const char *item_end = comma ? comma : end;

    if (parse_item (ft, s, item_end, bits) == -1)
      return -1;
    if (comma == NULL)
      return 0;
    s = comma + 1;
  }
}

static bool
is_blank (char c)
{
  return c == ' ' || c == '\t';
}

struct cron *
cron_parse (const char *text)
{
  struct field_text ft[F_COUNT];
  size_t len, nfields = 0;
  uint64_t bits[F_COUNT];
  struct cron *c;
  const char *s;

  if (text == NULL) {
    error_set (ERR_INVALID, "schedule: missing");
    return NULL;
  }
  len = strnlen (text, CRON_MAX + 1);
  if (len > CRON_MAX) {
    error_set (ERR_INVALID, "schedule: longer than %d characters", CRON_MAX);
    return NULL;
  }
  /* Only printable ASCII and blanks, so that every message below can quote
   * the text safely. */
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = text[i];

    if (!is_blank (ch) && (ch < 0x21 || ch > 0x7e)) {
      error_set (ERR_INVALID, "schedule: character %zu (byte 0x%02x) is not allowed; "
                 "a schedule is printable ASCII", i + 1, ch);
      return NULL;
    }
  }

  while (is_blank (*text))
    text++;
  if (*text == '@') {
    size_t n = 0;

    while (text[n] && !is_blank (text[n]))
      n++;
    for (s = text + n; is_blank (*s); s++)
      ;
    for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++)
      if (*s == '\0' && strlen (macros[i].name) == n &&
          strncasecmp (text, macros[i].name, n) == 0)
        return cron_parse (macros[i].expansion);
    if (n == 7 && strncasecmp (text, "@reboot", 7) == 0)
      error_set (ERR_INVALID, "schedule: @reboot is not supported (the hub runs schedules, "
                 "not start-up jobs)");
    else
      error_set (ERR_INVALID, "schedule: unknown macro '%.*s' (use @hourly, @daily, @weekly, "
                 "@monthly, @yearly or @annually, or five fields)", (int) n, text);
    return NULL;
  }

  for (s = text; *s; ) {
    const char *start = s;

    while (*s && !is_blank (*s))
      s++;
    if (nfields < F_COUNT)
      ft[nfields] = (struct field_text) { &fields[nfields], start, (size_t) (s - start) };
    nfields++;
    while (is_blank (*s))
      s++;
  }
  if (nfields != F_COUNT) {
    error_set (ERR_INVALID, "schedule: expected 5 fields (minute hour day-of-month month "
               "day-of-week), got %zu", nfields);
    return NULL;
  }
  for (int i = 0; i < F_COUNT; i++)
    if (parse_field (&ft[i], &bits[i]) == -1)
      return NULL;

  c = calloc (1, sizeof *c);
  if (c == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "schedule");
    return NULL;
  }
  c->minutes = bits[F_MINUTE];
  c->hours = (uint32_t) bits[F_HOUR];
  c->days = (uint32_t) bits[F_DAY];
  c->months = (uint16_t) bits[F_MONTH];
  c->weekdays = (uint8_t) ((bits[F_WEEKDAY] | bits[F_WEEKDAY] >> 7) & 0x7f);
  c->days_any = ft[F_DAY].s[0] == '*' && memchr (ft[F_DAY].s, ',', ft[F_DAY].len) == NULL;
  c->weekdays_any = ft[F_WEEKDAY].s[0] == '*' &&
    memchr (ft[F_WEEKDAY].s, ',', ft[F_WEEKDAY].len) == NULL;
  return c;
}

void
cron_free (struct cron *c)
{
  free (c);
}

static int
days_in_month (int64_t year, int month)
{
  static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

  return month == 2 && lifecycle_is_leap (year) ? 29 : days[month - 1];
}

/* Days from 0001-01-01 (a Monday) to the given date of the Gregorian
 * calendar, for counting the search's days and for the weekday. */
static int64_t
day_number (int64_t year, int month, int day)
{
  static const int before[] = { 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334 };
  int64_t y = year - 1;
  int64_t n = y * 365 + y / 4 - y / 100 + y / 400 + before[month - 1] + day - 1;

  if (month > 2 && lifecycle_is_leap (year))
    n++;
  return n;
}

static bool
day_matches (const struct cron *c, int day, int64_t number)
{
  bool dom = c->days >> day & 1;
  bool dow = c->weekdays >> ((number + 1) % 7) & 1;    /* day 0 was a Monday */

  if (c->days_any || c->weekdays_any)
    return dom && dow;
  return dom || dow;
}

/* The earliest instant showing the local time year-month-day hour:minute,
 * or -1 when the clocks skip it.  mktime is asked with each daylight saving
 * guess, and an answer counts only if it converts back to the same local
 * time; of a minute that happens twice, that leaves both instants. */
static time_t
local_instant (int64_t year, int month, int day, int hour, int minute)
{
  static const int guesses[] = { -1, 0, 1 };
  time_t best = -1;

  for (size_t i = 0; i < sizeof guesses / sizeof guesses[0]; i++) {
    struct tm tm = {
      .tm_year = (int) (year - 1900), .tm_mon = month - 1, .tm_mday = day,
      .tm_hour = hour, .tm_min = minute, .tm_isdst = guesses[i],
    };
    struct tm back;
    time_t t = mktime (&tm);

    if (t == (time_t) -1 || localtime_r (&t, &back) == NULL)
      continue;
    if (back.tm_year + 1900 != year || back.tm_mon + 1 != month || back.tm_mday != day ||
        back.tm_hour != hour || back.tm_min != minute || back.tm_sec != 0)
      continue;
    if (best == -1 || t < best)
      best = t;
  }
  return best;
}

/* The lowest set bit at or above `from`, or -1. */
static int
next_bit (uint64_t bits, int from)
{
  if (from >= 64)
    return -1;
  bits &= ~UINT64_C (0) << from;
  return bits ? __builtin_ctzll (bits) : -1;
}

/* How far the search looks: five years of days, leap days included. */
#define SEARCH_DAYS (5 * 365 + 2)

time_t
cron_next (const struct cron *c, time_t after)
{
  struct tm tm;
  time_t start, rem;
  int64_t year, first_day;
  int month, day, hour, minute;

  /* Far outside any calendar a schedule serves, the date arithmetic below
   * would overflow: no run there. */
  if (after > (time_t) (INT64_MAX - 120) || after < (time_t) (INT64_MIN + 120))
    return -1;
  rem = after % 60;
  if (rem < 0)
    rem += 60;
  start = after - rem + 60;
  if (localtime_r (&start, &tm) == NULL)
    return -1;
  year = (int64_t) tm.tm_year + 1900;
  if (year < 1 || year > 1000000)
    return -1;
  month = tm.tm_mon + 1;
  day = tm.tm_mday;
  hour = tm.tm_hour;
  minute = tm.tm_min;
  first_day = day_number (year, month, day);

  for (;;) {
    int64_t number;
    time_t t;
    int h, m;

    if (day > days_in_month (year, month) || !(c->months >> month & 1)) {
      /* on to the first of the next month */
      if (++month > 12) {
        month = 1;
        year++;
      }
      day = 1;
      hour = minute = 0;
      if (day_number (year, month, day) - first_day > SEARCH_DAYS)
        return -1;
      continue;
    }
    number = day_number (year, month, day);
    if (number - first_day > SEARCH_DAYS)
      return -1;
    if (!day_matches (c, day, number)) {
      day++;
      hour = minute = 0;
      continue;
    }
    h = next_bit (c->hours, hour);
    if (h == -1) {
      day++;
      hour = minute = 0;
      continue;
    }
    if (h != hour) {
      hour = h;
      minute = 0;
    }
    m = next_bit (c->minutes, minute);
    if (m == -1) {
      hour++;
      minute = 0;
      if (hour > 23) {
        day++;
        hour = 0;
      }
      continue;
    }
    minute = m;

    t = local_instant (year, month, day, hour, minute);
    if (t != -1 && t > after)
      return t;
    /* skipped by the clocks, or first shown before `after`: the next minute */
    if (++minute > 59) {
      minute = 0;
      if (++hour > 23) {
        hour = 0;
        day++;
      }
    }
  }
}
