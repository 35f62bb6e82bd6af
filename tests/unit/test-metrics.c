/* tests/unit/test-metrics.c - the metrics registry: its text form (HELP and
 * TYPE lines, escaped label values, cumulative histogram buckets), counters
 * that never go down, collectors run at each render, and updates from many
 * threads at once.  (promtool checks the hub's real output in
 * tests/integration/test-metrics.sh.) */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#include "metrics/metrics.h"

static char *
render (void)
{
  size_t len;
  char *text = metrics_render_string (&len);
  ok (text != NULL && strlen (text) == len, "the registry renders");
  return text;
}

/* Whether text holds line as a whole line. */
static bool
has_line (const char *text, const char *line)
{
  size_t n = strlen (line);
  for (const char *p = text; p && *p; p = strchr (p, '\n'), p = p ? p + 1 : NULL)
    if (strncmp (p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
      return true;
  return false;
}

static void
test_text (void)
{
  struct metric *c = metrics_counter ("t_requests_total", "Requests, with a \\ and a\nnewline.",
                                      "path,code");
  struct metric *g = metrics_gauge ("t_temperature_celsius", "A gauge.", NULL);
  char *text;

  ok (c && metrics_counter ("t_requests_total", "other help", "path,code") == c,
      "registering a name again gives the same family");
  ok (metrics_gauge ("t_requests_total", "x", NULL) == NULL,
      "the same name with another type is refused");
  metrics_add (c, 2, "/a \"quoted\" \\ path\nwith newline", "200");
  metrics_add (c, 1, "/b", "404");
  metrics_add (c, -5, "/b", "404");
  metrics_add (c, 0.5, "/b", "404");
  metrics_set (g, -3.25);
  text = render ();
  ok (has_line (text, "# HELP t_requests_total Requests, with a \\\\ and a\\nnewline."),
      "HELP escapes backslash and newline");
  ok (has_line (text, "# TYPE t_requests_total counter"), "TYPE counter");
  ok (has_line (text, "t_requests_total{path=\"/a \\\"quoted\\\" \\\\ path\\nwith newline\","
                "code=\"200\"} 2"), "label values escape quote, backslash and newline");
  ok (has_line (text, "t_requests_total{path=\"/b\",code=\"404\"} 1.5"),
      "a counter ignores a negative add; fractions print as they are");
  ok (has_line (text, "t_temperature_celsius -3.25"), "a gauge without labels");
  is_int ((int64_t) metrics_value (c, "/b", "404"), 1, "metrics_value reads a series");
  free (text);

  metrics_reset (c);
  text = render ();
  ok (has_line (text, "# TYPE t_requests_total counter") &&
      strstr (text, "t_requests_total{") == NULL, "reset drops the series, keeps the family");
  free (text);
}

static void
test_histogram (void)
{
  static const double b[] = { 0.1, 1, 10 };
  struct metric *h = metrics_histogram ("t_duration_seconds", "Durations.", "route", b, 3);
  char *text;

  metrics_observe (h, 0.05, "x");
  metrics_observe (h, 0.1, "x");     /* on a bound: in that bucket (le) */
  metrics_observe (h, 5, "x");
  metrics_observe (h, 100, "x");
  text = render ();
  ok (has_line (text, "# TYPE t_duration_seconds histogram"), "TYPE histogram");
  ok (has_line (text, "t_duration_seconds_bucket{route=\"x\",le=\"0.1\"} 2") &&
      has_line (text, "t_duration_seconds_bucket{route=\"x\",le=\"1\"} 2") &&
      has_line (text, "t_duration_seconds_bucket{route=\"x\",le=\"10\"} 3") &&
      has_line (text, "t_duration_seconds_bucket{route=\"x\",le=\"+Inf\"} 4"),
      "buckets are cumulative, +Inf counts all");
  ok (has_line (text, "t_duration_seconds_sum{route=\"x\"} 105.15") &&
      has_line (text, "t_duration_seconds_count{route=\"x\"} 4"), "sum and count");
  free (text);
}

static int collected;

static void
collect (void *opaque)
{
  struct metric *g = opaque;
  collected++;
  metrics_set (g, collected);
}

static void
test_collector (void)
{
  struct metric *g = metrics_gauge ("t_collected", "Set by a collector.", NULL);
  char *text;

  ok (metrics_collector_add (collect, g) == 0, "add a collector");
  free (render ());
  text = render ();
  ok (has_line (text, "t_collected 2"), "it runs at each render");
  free (text);
  metrics_collector_remove (collect, g);
  free (render ());
  is_int (collected, 2, "a removed collector no longer runs");
}

#define THREADS 8
#define ADDS 20000

static void *
adder (void *arg)
{
  struct metric *c = arg;
  for (int i = 0; i < ADDS; i++)
    metrics_add (c, 1, i % 2 ? "odd" : "even");
  return NULL;
}

static void
test_threads (void)
{
  struct metric *c = metrics_counter ("t_adds_total", "Adds.", "kind");
  pthread_t t[THREADS];

  for (int i = 0; i < THREADS; i++)
    pthread_create (&t[i], NULL, adder, c);
  for (int i = 0; i < 50; i++)
    free (metrics_render_string (&(size_t) { 0 }));
  for (int i = 0; i < THREADS; i++)
    pthread_join (t[i], NULL);
  is_int ((int64_t) (metrics_value (c, "odd") + metrics_value (c, "even")),
          THREADS * ADDS, "no add is lost among %d threads", THREADS);
}

int
main (void)
{
  test_text ();
  test_histogram ();
  test_collector ();
  test_threads ();
  return done_testing ();
}
