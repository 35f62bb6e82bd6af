/* agent/progress.c - what the user sees while disks copy: on a terminal a
 * live bar per disk on stderr (bytes, rate, ETA), redrawn by a thread
 * twice a second; without one, a line per disk when it is done.  And what
 * the hub hears: every REPORT_SECONDS a thread posts the disks being
 * copied (POST /api/v1/backups/{id}/progress), so the hub's listings show
 * an agent's copy as they show its own; with no disk copying it posts an
 * empty list, which renews the job's lease all the same (hub/lease.c).  A report the hub refuses (an
 * older hub without the route, a disk just completed) is dropped: it never
 * fails a backup. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent-int.h"
#include "util/cleanup.h"
#include "util/clock.h"

struct progress_display {
  struct progress_row *rows;
  int n;
  bool tty, quiet, drawn;
  pthread_t thread;
  bool have_thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stop;
};

void
progress_human (char *buf, size_t len, double bytes)
{
  static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
  int u = 0;
  while (bytes >= 1024 && u < 5) {
    bytes /= 1024;
    u++;
  }
  snprintf (buf, len, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
}

static double
elapsed (const struct engine_progress *p)
{
  int64_t start = p->started_ns;
  if (start == 0)
    return 0;
  return (clock_mono_ns () - start) / 1e9;
}

static void
draw (struct progress_display *d)
{
  int i;

  if (d->drawn)
    fprintf (stderr, "\033[%dA", d->n);
  for (i = 0; i < d->n; i++) {
    struct progress_row *r = &d->rows[i];
    int64_t total = r->p.bytes_total, done = r->p.bytes_done;
    double secs = elapsed (&r->p), rate = secs > 0 ? done / secs : 0, frac;
    char bar[31], sdone[32], stotal[32], srate[32], eta[32] = "--:--";
    int k, fill;

    frac = total > 0 ? (double) done / total : (r->done ? 1 : 0);
    fill = (int) (frac * 30);
    for (k = 0; k < 30; k++)
      bar[k] = k < fill ? '#' : '.';
    bar[30] = '\0';
    progress_human (sdone, sizeof sdone, done);
    progress_human (stotal, sizeof stotal, total);
    progress_human (srate, sizeof srate, rate);
    if (r->done)
      snprintf (eta, sizeof eta, "done");
    else if (rate > 0 && total > done) {
      long s = (long) ((total - done) / rate);
      snprintf (eta, sizeof eta, "%ld:%02ld", s / 60, s % 60);
    }
    fprintf (stderr, "\r\033[K%-10s [%s] %3d%% %10s / %-10s %10s/s ETA %s\n",
             r->label, bar, (int) (frac * 100), sdone, stotal, srate, eta);
  }
  fflush (stderr);
  d->drawn = true;
}

/* Wait on cond (lock held) for at most ms milliseconds. */
static void
wait_ms (pthread_cond_t *cond, pthread_mutex_t *lock, long ms)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000 * 1000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_cond_timedwait (cond, lock, &ts);
}

static void *
display_run (void *opaque)
{
  struct progress_display *d = opaque;

  pthread_mutex_lock (&d->lock);
  while (!d->stop) {
    draw (d);
    wait_ms (&d->cond, &d->lock, 500);
  }
  draw (d);
  pthread_mutex_unlock (&d->lock);
  return NULL;
}

struct progress_display *
progress_start (struct progress_row *rows, int n, bool quiet)
{
  struct progress_display *d = calloc (1, sizeof *d);

  if (d == NULL)
    return NULL;
  d->rows = rows;
  d->n = n;
  d->quiet = quiet;
  d->tty = !quiet && isatty (STDERR_FILENO) && getenv ("TERM") &&
           strcmp (getenv ("TERM"), "dumb") != 0;
  pthread_mutex_init (&d->lock, NULL);
  pthread_cond_init (&d->cond, NULL);
  if (d->tty && n > 0 && pthread_create (&d->thread, NULL, display_run, d) == 0)
    d->have_thread = true;
  return d;
}

void
progress_row_done (struct progress_display *d, int i)
{
  if (d == NULL)
    return;
  pthread_mutex_lock (&d->lock);
  d->rows[i].done = true;
  if (!d->quiet && !d->have_thread) {
    fprintf (stderr, "%s: %s\n", d->rows[i].label, d->rows[i].summary);
    fflush (stderr);
  }
  pthread_mutex_unlock (&d->lock);
}

void
progress_stop (struct progress_display *d)
{
  if (d == NULL)
    return;
  if (d->have_thread) {
    pthread_mutex_lock (&d->lock);
    d->stop = true;
    pthread_cond_signal (&d->cond);
    pthread_mutex_unlock (&d->lock);
    pthread_join (d->thread, NULL);
  }
  pthread_mutex_destroy (&d->lock);
  pthread_cond_destroy (&d->cond);
  free (d);
}

#define REPORT_SECONDS 2

struct progress_reporter {
  struct client c;            /* the caller's, with a short timeout */
  char *path;
  struct progress_row *rows;
  int n;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stop;
};

/* Post the rows whose copy has started and is not done. */
static void
report_once (struct progress_reporter *r)
{
  CLEANUP_JSON json_t *body = NULL;
  json_t *disks = json_array ();

  body = json_pack ("{s:o}", "disks", disks);
  if (body == NULL)
    return;
  for (int i = 0; i < r->n; i++) {
    struct engine_progress *p = &r->rows[i].p;
    if (atomic_load (&p->started_ns) == 0 || r->rows[i].done)
      continue;
    json_array_append_new (disks, json_pack ("{s:i,s:I,s:I,s:I}", "disk_index", i,
                                             "bytes_done",
                                             (json_int_t) atomic_load (&p->bytes_done),
                                             "bytes_total",
                                             (json_int_t) atomic_load (&p->bytes_total),
                                             "rate_bytes_per_sec",
                                             (json_int_t) engine_progress_rate (p)));
  }
  /* An empty list still says the agent lives: it renews the job's lease. */
  client_call (&r->c, "POST", r->path, body, NULL);
}

static void *
report_run (void *opaque)
{
  struct progress_reporter *r = opaque;

  pthread_mutex_lock (&r->lock);
  while (!r->stop) {
    wait_ms (&r->cond, &r->lock, REPORT_SECONDS * 1000);
    if (r->stop)
      break;
    pthread_mutex_unlock (&r->lock);
    report_once (r);
    pthread_mutex_lock (&r->lock);
  }
  pthread_mutex_unlock (&r->lock);
  return NULL;
}

struct progress_reporter *
progress_report_start (struct client *c, const char *backup_id,
                       struct progress_row *rows, int n)
{
  struct progress_reporter *r = calloc (1, sizeof *r);
  CLEANUP_FREE char *esc = client_escape (backup_id);

  if (r == NULL || esc == NULL ||
      asprintf (&r->path, "/api/v1/backups/%s/progress", esc) == -1) {
    free (r);
    return NULL;
  }
  /* A hub that hangs must not hold the backup's end for long: a report is
   * worth a few seconds at most. */
  r->c = *c;
  r->c.timeout = 5;
  r->rows = rows;
  r->n = n;
  pthread_mutex_init (&r->lock, NULL);
  pthread_cond_init (&r->cond, NULL);
  if (pthread_create (&r->thread, NULL, report_run, r) != 0) {
    pthread_mutex_destroy (&r->lock);
    pthread_cond_destroy (&r->cond);
    free (r->path);
    free (r);
    return NULL;
  }
  return r;
}

void
progress_report_stop (struct progress_reporter *r)
{
  if (r == NULL)
    return;
  pthread_mutex_lock (&r->lock);
  r->stop = true;
  pthread_cond_signal (&r->cond);
  pthread_mutex_unlock (&r->lock);
  pthread_join (r->thread, NULL);
  pthread_mutex_destroy (&r->lock);
  pthread_cond_destroy (&r->cond);
  free (r->path);
  free (r);
}
