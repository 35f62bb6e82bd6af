/* metrics/metrics.h - a process-wide registry of counters, gauges and
 * histograms with label values, rendered in Prometheus' text format 0.0.4.
 *
 * A family (name, help, label names) is registered once and lives as long
 * as the process; its series (one per set of label values) appear when
 * first touched.  Every call is thread-safe: one mutex guards the registry.
 * Label values are passed as the variadic arguments after the value, one
 * const char * per label name of the family, in that order.
 *
 * Collectors are functions run at the start of every render, one render at
 * a time: they set the gauges that are read from elsewhere at scrape time
 * (metrics_reset first drops the series of a family whose label sets
 * change, such as one per context).
 */
#ifndef STRATA_METRICS_METRICS_H
#define STRATA_METRICS_METRICS_H

#include <stddef.h>
#include <stdio.h>

struct metric;

/* Register a family, or return the one already registered under name
 * (whose type and labels must then be the same).  labels: the label names
 * separated by commas, or NULL for none.  buckets: the histogram's upper
 * bounds, increasing (+Inf is implied).  NULL when memory runs out. */
struct metric *metrics_counter (const char *name, const char *help, const char *labels);
struct metric *metrics_gauge (const char *name, const char *help, const char *labels);
struct metric *metrics_histogram (const char *name, const char *help, const char *labels,
                                  const double *buckets, size_t n_buckets);

/* Counters and gauges: add v (a counter never goes down: v < 0 is
 * ignored); gauges: set v; histograms: observe v.  m NULL is a no-op. */
void metrics_add (struct metric *m, double v, ...);
void metrics_set (struct metric *m, double v, ...);
void metrics_observe (struct metric *m, double v, ...);
/* A series' value now (a histogram's count); 0 when it does not exist. */
double metrics_value (struct metric *m, ...);
/* Drop every series of the family. */
void metrics_reset (struct metric *m);

/* Run fn (opaque) at the start of each render; remove takes it out again
 * (and waits for a render running it).  0, or -1 when memory runs out. */
int metrics_collector_add (void (*fn) (void *opaque), void *opaque);
void metrics_collector_remove (void (*fn) (void *opaque), void *opaque);

/* Run the collectors and write every family.  0, or -1 with errno. */
int metrics_render (FILE *fp);
/* The same as a string (caller frees) of *len bytes; NULL on error. */
char *metrics_render_string (size_t *len);

#endif
