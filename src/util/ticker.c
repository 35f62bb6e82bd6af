/* util/ticker.c - a thread that runs a pass when poked or when due.
 *
 * t->lock guards the two flags; the pass runs without it.  A poke during a
 * pass is kept (poked stays set), so the pass runs once more after it:
 * what changed while it ran is never missed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "util/error.h"
#include "util/ticker.h"

struct ticker {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stopping, poked;
  time_t (*pass) (void *opaque);
  void *opaque;
};

static void *
ticker_main (void *arg)
{
  struct ticker *t = arg;

  pthread_mutex_lock (&t->lock);
  while (!t->stopping) {
    struct timespec until = { 0 };

    t->poked = false;
    pthread_mutex_unlock (&t->lock);
    until.tv_sec = t->pass (t->opaque);
    pthread_mutex_lock (&t->lock);
    while (!t->stopping && !t->poked)
      if (pthread_cond_timedwait (&t->cond, &t->lock, &until) == ETIMEDOUT)
        break;
  }
  pthread_mutex_unlock (&t->lock);
  return NULL;
}

struct ticker *
ticker_start (const char *what, time_t (*pass) (void *opaque), void *opaque)
{
  struct ticker *t = calloc (1, sizeof *t);
  int err;

  if (t == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return NULL;
  }
  pthread_mutex_init (&t->lock, NULL);
  pthread_cond_init (&t->cond, NULL);
  t->pass = pass;
  t->opaque = opaque;
  err = pthread_create (&t->thread, NULL, ticker_main, t);
  if (err != 0) {
    pthread_cond_destroy (&t->cond);
    pthread_mutex_destroy (&t->lock);
    free (t);
    error_set_errno (ERR_INTERNAL, err, "starting %s", what);
    return NULL;
  }
  return t;
}

/* Set a flag and wake the thread. */
static void
wake (struct ticker *t, bool *flag)
{
  pthread_mutex_lock (&t->lock);
  *flag = true;
  pthread_cond_broadcast (&t->cond);
  pthread_mutex_unlock (&t->lock);
}

void
ticker_poke (struct ticker *t)
{
  if (t)
    wake (t, &t->poked);
}

void
ticker_stop (struct ticker *t)
{
  if (t == NULL)
    return;
  wake (t, &t->stopping);
  pthread_join (t->thread, NULL);
  pthread_cond_destroy (&t->cond);
  pthread_mutex_destroy (&t->lock);
  free (t);
}
