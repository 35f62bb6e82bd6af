/* metrics/metrics.c - the metrics registry and its Prometheus text form.
 *
 * LOCKING: reg.lock guards the families, their series and their values; it
 * is held only for a lookup or an update, and for writing them out.
 * reg.render_lock is held across a whole render (collectors, then output),
 * so that two scrapes never interleave one collector's reset and sets; a
 * collector takes reg.lock through metrics_set like anybody else.
 * Families are never freed: they are few, and live as long as the process.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>   /* isnan, isinf: macros, no libm */
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics.h"
#include "util/cleanup.h"

#define METRICS_MAX_LABELS 8

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct series {
  struct series *next;
  char **values;             /* one per label of the family */
  double value;              /* counter, gauge; a histogram's sum */
  uint64_t count;            /* histogram: observations */
  uint64_t *buckets;         /* histogram: observations per bucket (not cumulative) */
};

struct metric {
  struct metric *next;
  char *name, *help;
  enum metric_type type;
  size_t n_labels;
  char **labels;
  size_t n_buckets;
  double *bounds;
  struct series *series, **series_tail;
};

struct collector {
  void (*fn) (void *opaque);
  void *opaque;
};

static struct {
  pthread_mutex_t lock, render_lock;
  struct metric *families, **tail;
  struct collector *collectors;
  size_t n_collectors;
} reg = {
  .lock = PTHREAD_MUTEX_INITIALIZER,
  .render_lock = PTHREAD_MUTEX_INITIALIZER,
  .tail = &reg.families,
};

static const char *const type_names[] = { "counter", "gauge", "histogram" };

static void
strv_free (char **v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    free (v[i]);
  free (v);
}

/* Split "a,b,c" into *out (n names).  -1 when memory runs out. */
static int
split_labels (const char *labels, char ***out, size_t *n)
{
  *out = NULL;
  *n = 0;
  if (labels == NULL || *labels == '\0')
    return 0;
  *out = calloc (METRICS_MAX_LABELS, sizeof **out);
  if (*out == NULL)
    return -1;
  for (const char *p = labels; *n < METRICS_MAX_LABELS; ) {
    size_t len = strcspn (p, ",");
    if (((*out)[(*n)++] = strndup (p, len)) == NULL)
      return -1;
    if (p[len] == '\0')
      break;
    p += len + 1;
  }
  return 0;
}

static struct metric *
family (const char *name, const char *help, enum metric_type type, const char *labels,
        const double *bounds, size_t n_bounds)
{
  struct metric *m;

  SCOPED_LOCK (&reg.lock);
  for (m = reg.families; m; m = m->next)
    if (strcmp (m->name, name) == 0)
      return m->type == type ? m : NULL;
  m = calloc (1, sizeof *m);
  if (m == NULL)
    return NULL;
  m->type = type;
  m->series_tail = &m->series;
  m->name = strdup (name);
  m->help = strdup (help);
  if (m->name == NULL || m->help == NULL ||
      split_labels (labels, &m->labels, &m->n_labels) == -1)
    goto fail;
  if (n_bounds) {
    m->bounds = malloc (n_bounds * sizeof *m->bounds);
    if (m->bounds == NULL)
      goto fail;
    memcpy (m->bounds, bounds, n_bounds * sizeof *m->bounds);
    m->n_buckets = n_bounds;
  }
  *reg.tail = m;
  reg.tail = &m->next;
  return m;
 fail:
  strv_free (m->labels, METRICS_MAX_LABELS);
  free (m->name);
  free (m->help);
  free (m);
  return NULL;
}

struct metric *
metrics_counter (const char *name, const char *help, const char *labels)
{
  return family (name, help, METRIC_COUNTER, labels, NULL, 0);
}

struct metric *
metrics_gauge (const char *name, const char *help, const char *labels)
{
  return family (name, help, METRIC_GAUGE, labels, NULL, 0);
}

struct metric *
metrics_histogram (const char *name, const char *help, const char *labels,
                   const double *buckets, size_t n_buckets)
{
  return family (name, help, METRIC_HISTOGRAM, labels, buckets, n_buckets);
}

/* The series of m with these label values, made if create; reg.lock
 * held.  NULL when it does not exist or memory runs out. */
static struct series *
series_get (struct metric *m, const char *const *values, bool create)
{
  struct series *s;

  for (s = m->series; s; s = s->next) {
    size_t i;
    for (i = 0; i < m->n_labels && strcmp (s->values[i], values[i]) == 0; i++)
      ;
    if (i == m->n_labels)
      return s;
  }
  if (!create || (s = calloc (1, sizeof *s)) == NULL)
    return NULL;
  s->values = calloc (m->n_labels + 1, sizeof *s->values);
  if (m->n_buckets)
    s->buckets = calloc (m->n_buckets, sizeof *s->buckets);
  if (s->values == NULL || (m->n_buckets && s->buckets == NULL))
    goto fail;
  for (size_t i = 0; i < m->n_labels; i++)
    if ((s->values[i] = strdup (values[i])) == NULL)
      goto fail;
  *m->series_tail = s;
  m->series_tail = &s->next;
  return s;
 fail:
  strv_free (s->values, m->n_labels);
  free (s->buckets);
  free (s);
  return NULL;
}

static void
series_free (struct series *s, size_t n_labels)
{
  strv_free (s->values, n_labels);
  free (s->buckets);
  free (s);
}

/* Read the family's label values from ap into values (NULL reads as ""). */
static void
label_values (const struct metric *m, va_list ap, const char *values[METRICS_MAX_LABELS])
{
  for (size_t i = 0; i < m->n_labels; i++) {
    const char *v = va_arg (ap, const char *);
    values[i] = v ? v : "";
  }
}

enum op { OP_ADD, OP_SET, OP_OBSERVE };

/* Apply op to the series of m named by the label values in ap; an op that
 * does not fit the family's type (a set on a counter) does nothing. */
static void
update (struct metric *m, enum op op, double v, va_list ap)
{
  const char *values[METRICS_MAX_LABELS];
  struct series *s;

  if (m == NULL || (op == OP_ADD && m->type == METRIC_HISTOGRAM) ||
      (op == OP_SET && m->type != METRIC_GAUGE) ||
      (op == OP_OBSERVE && m->type != METRIC_HISTOGRAM))
    return;
  label_values (m, ap, values);
  SCOPED_LOCK (&reg.lock);
  if ((s = series_get (m, values, true)) == NULL)
    return;
  if (op == OP_SET)
    s->value = v;
  else if (op == OP_ADD && (m->type != METRIC_COUNTER || v >= 0))
    s->value += v;
  else if (op == OP_OBSERVE) {
    size_t i;
    for (i = 0; i < m->n_buckets && v > m->bounds[i]; i++)
      ;
    if (i < m->n_buckets)
      s->buckets[i]++;
    s->value += v;
    s->count++;
  }
}

#define UPDATE(m, op, v) do {                   \
    va_list ap;                                 \
    va_start (ap, v);                           \
    update ((m), (op), (v), ap);                \
    va_end (ap);                                \
  } while (0)

void
metrics_add (struct metric *m, double v, ...)
{
  UPDATE (m, OP_ADD, v);
}

void
metrics_set (struct metric *m, double v, ...)
{
  UPDATE (m, OP_SET, v);
}

void
metrics_observe (struct metric *m, double v, ...)
{
  UPDATE (m, OP_OBSERVE, v);
}

double
metrics_value (struct metric *m, ...)
{
  const char *values[METRICS_MAX_LABELS];
  struct series *s;
  va_list ap;

  if (m == NULL)
    return 0;
  va_start (ap, m);
  label_values (m, ap, values);
  va_end (ap);
  SCOPED_LOCK (&reg.lock);
  if ((s = series_get (m, values, false)) == NULL)
    return 0;
  return m->type == METRIC_HISTOGRAM ? (double) s->count : s->value;
}

void
metrics_reset (struct metric *m)
{
  if (m == NULL)
    return;
  SCOPED_LOCK (&reg.lock);
  while (m->series) {
    struct series *s = m->series;
    m->series = s->next;
    series_free (s, m->n_labels);
  }
  m->series_tail = &m->series;
}

int
metrics_collector_add (void (*fn) (void *opaque), void *opaque)
{
  struct collector *v;

  SCOPED_LOCK (&reg.render_lock);
  v = realloc (reg.collectors, (reg.n_collectors + 1) * sizeof *v);
  if (v == NULL)
    return -1;
  reg.collectors = v;
  v[reg.n_collectors++] = (struct collector) { fn, opaque };
  return 0;
}

void
metrics_collector_remove (void (*fn) (void *opaque), void *opaque)
{
  SCOPED_LOCK (&reg.render_lock);
  for (size_t i = 0; i < reg.n_collectors; i++)
    if (reg.collectors[i].fn == fn && reg.collectors[i].opaque == opaque) {
      memmove (&reg.collectors[i], &reg.collectors[i + 1],
               (reg.n_collectors - i - 1) * sizeof *reg.collectors);
      reg.n_collectors--;
      return;
    }
}

/* A sample value: integers as integers, others in their shortest form
 * that reads back the same. */
static void
format_value (char *buf, size_t len, double v)
{
  if (isnan (v))
    snprintf (buf, len, "NaN");
  else if (isinf (v))
    snprintf (buf, len, v > 0 ? "+Inf" : "-Inf");
  else if (v > -1e15 && v < 1e15 && v == (double) (int64_t) v)
    snprintf (buf, len, "%.0f", v);
  else {
    snprintf (buf, len, "%.15g", v);
    if (strtod (buf, NULL) != v)
      snprintf (buf, len, "%.17g", v);
  }
}

/* Text with '\\' and '\n' escaped, and '"' too in a label value. */
static void
write_escaped (FILE *fp, const char *s, bool quote)
{
  for (; *s; s++) {
    if (*s == '\\')
      fputs ("\\\\", fp);
    else if (*s == '\n')
      fputs ("\\n", fp);
    else if (*s == '"' && quote)
      fputs ("\\\"", fp);
    else
      fputc (*s, fp);
  }
}

/* name{labels...,extra="extra_value"} value */
static void
write_sample (FILE *fp, const struct metric *m, const char *suffix,
              const struct series *s, const char *extra, const char *extra_value,
              double v)
{
  char num[64];
  bool any = m->n_labels > 0 || extra;

  fprintf (fp, "%s%s", m->name, suffix);
  if (any) {
    fputc ('{', fp);
    for (size_t i = 0; i < m->n_labels; i++) {
      fprintf (fp, "%s%s=\"", i ? "," : "", m->labels[i]);
      write_escaped (fp, s->values[i], true);
      fputc ('"', fp);
    }
    if (extra)
      fprintf (fp, "%s%s=\"%s\"", m->n_labels ? "," : "", extra, extra_value);
    fputc ('}', fp);
  }
  format_value (num, sizeof num, v);
  fprintf (fp, " %s\n", num);
}

static void
write_family (FILE *fp, const struct metric *m)
{
  fprintf (fp, "# HELP %s ", m->name);
  write_escaped (fp, m->help, false);
  fprintf (fp, "\n# TYPE %s %s\n", m->name, type_names[m->type]);
  for (const struct series *s = m->series; s; s = s->next) {
    uint64_t cumulative = 0;
    char le[64];

    if (m->type != METRIC_HISTOGRAM) {
      write_sample (fp, m, "", s, NULL, NULL, s->value);
      continue;
    }
    for (size_t i = 0; i < m->n_buckets; i++) {
      cumulative += s->buckets[i];
      format_value (le, sizeof le, m->bounds[i]);
      write_sample (fp, m, "_bucket", s, "le", le, (double) cumulative);
    }
    write_sample (fp, m, "_bucket", s, "le", "+Inf", (double) s->count);
    write_sample (fp, m, "_sum", s, NULL, NULL, s->value);
    write_sample (fp, m, "_count", s, NULL, NULL, (double) s->count);
  }
}

int
metrics_render (FILE *fp)
{
  SCOPED_LOCK (&reg.render_lock);
  for (size_t i = 0; i < reg.n_collectors; i++)
    reg.collectors[i].fn (reg.collectors[i].opaque);
  {
    SCOPED_LOCK (&reg.lock);
    for (const struct metric *m = reg.families; m; m = m->next)
      write_family (fp, m);
  }
  return ferror (fp) ? -1 : 0;
}

char *
metrics_render_string (size_t *len)
{
  char *text = NULL;
  FILE *fp = open_memstream (&text, len);
  int r;

  if (fp == NULL)
    return NULL;
  r = metrics_render (fp);
  if (fclose (fp) != 0 || r == -1) {
    free (text);
    return NULL;
  }
  return text;
}
