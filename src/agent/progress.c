/* agent/progress.c - what the user sees while disks copy: on a terminal a
 * live bar per disk on stderr (bytes, rate, ETA), redrawn by a thread
 * twice a second; without one, a line per disk when it is done. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent-int.h"
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

static void *
display_run (void *opaque)
{
  struct progress_display *d = opaque;

  pthread_mutex_lock (&d->lock);
  while (!d->stop) {
    struct timespec ts;
    draw (d);
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_nsec += 500 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait (&d->cond, &d->lock, &ts);
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
