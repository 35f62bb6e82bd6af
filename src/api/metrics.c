/* api/metrics.c - GET /metrics (Prometheus' text format), and the request
 * counter and latency histogram of the HTTP layer.
 *
 * A request's class is the pattern of its route in the router's table
 * (/api/v1/tasks/ID has "tasks/" and a star), whatever its method, or one of
 * healthz, metrics, openapi, static or unmatched: a small fixed set, so
 * that no client can grow the series without bound (methods outside the
 * usual ones count as "other" for the same reason).
 */
#include <stdio.h>
#include <string.h>

#include "api/api-int.h"
#include "metrics/metrics.h"
#include "util/error.h"

static const double latency_buckets[] = {
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};

static struct metric *
requests (void)
{
  return metrics_counter ("strata_http_requests_total", "HTTP requests answered, by "
                          "route class, method and status code.", "class,method,code");
}

static struct metric *
durations (void)
{
  return metrics_histogram ("strata_http_request_duration_seconds", "Time from a "
                            "request's headers to its answer, by route class.", "class",
                            latency_buckets, sizeof latency_buckets / sizeof latency_buckets[0]);
}

int
api_metrics (struct api_req *r, char **text, size_t *len)
{
  if (api_query_check (r, (const char *const[]) { NULL }) == -1)
    return -1;
  /* Registered before the first request, so that they show at once. */
  requests ();
  durations ();
  *text = metrics_render_string (len);
  if (*text == NULL) {
    error_set (ERR_INTERNAL, "out of memory rendering the metrics");
    return -1;
  }
  return 0;
}

void
api_metrics_request (const char *class, const char *method, int status, double seconds)
{
  static const char *const methods[] = {
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", NULL
  };
  const char *m = "other";
  char code[16];

  for (size_t i = 0; methods[i]; i++)
    if (strcmp (method, methods[i]) == 0)
      m = methods[i];
  snprintf (code, sizeof code, "%d", status);
  metrics_add (requests (), 1, class, m, code);
  metrics_observe (durations (), seconds, class);
}
