/* hub/usage.c - the repositories' used and free bytes, cached.
 *
 * Measuring what a repository uses walks its tree (storage/repo.h's
 * repo_usage), which is slow on a big or remote repository; /metrics must
 * never do that per scrape.  So a thread walks every repository at most
 * once a minute (USAGE_PERIOD_S) and whenever it is poked, and keeps the
 * numbers here.  What changes the files says so (hub_usage_changed: a job
 * ended or completed, a backup or context was deleted, a prune ended),
 * which bumps a generation and pokes the thread.
 *
 * Readers: the scrape (hub_usage_cached) takes whatever is cached, never
 * walking.  The API (hub_repo_usage) wants numbers that reflect what just
 * happened, so an entry of an older generation, older than the period, or
 * missing, is measured again on its thread; that is one walk per change,
 * not one per request.
 *
 * LOCKING: u->lock guards the entries and the generation.  Walks are
 * serialised by u->walk_lock (one tree walk at a time, however many
 * requests want one), and never run under u->lock or hub->lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hub/hub-int.h"
#include "storage/repo.h"
#include "util/clock.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/log.h"
#include "util/ticker.h"

#define USAGE_PERIOD_S 60

struct usage_entry {
  char *repo_id;
  int64_t used, available;
  int64_t measured_ms;       /* clock_mono_ms of the walk's start */
  unsigned gen;              /* the generation when the walk started */
};

struct hub_usage {
  pthread_mutex_t lock, walk_lock;
  struct ticker *ticker;     /* the thread (util/ticker.h) */
  unsigned gen;
  struct usage_entry *v;
  size_t n;
};

/* The entry of repo_id, or NULL; u->lock held. */
static struct usage_entry *
entry_find (struct hub_usage *u, const char *repo_id)
{
  for (size_t i = 0; i < u->n; i++)
    if (strcmp (u->v[i].repo_id, repo_id) == 0)
      return &u->v[i];
  return NULL;
}

/* Walk one repository and store what it found.  -1 with the error set. */
static int
measure (struct hub_usage *u, const struct cat_repository *r, int64_t *used,
         int64_t *available)
{
  struct usage_entry *e;
  int64_t started;
  unsigned gen;
  int ret;

  {
    SCOPED_LOCK (&u->lock);
    gen = u->gen;
  }
  {
    SCOPED_LOCK (&u->walk_lock);
    started = clock_mono_ms ();
    ret = repo_usage (r->path, used, available);
  }
  if (ret == -1)
    return -1;
  SCOPED_LOCK (&u->lock);
  if ((e = entry_find (u, r->id)) == NULL) {
    struct usage_entry *v = realloc (u->v, (u->n + 1) * sizeof *v);
    char *id = strdup (r->id);
    if (v == NULL || id == NULL) {
      free (id);
      if (v)
        u->v = v;
      return 0;          /* measured, only not kept */
    }
    u->v = v;
    e = &u->v[u->n++];
    e->repo_id = id;
  }
  *e = (struct usage_entry) { e->repo_id, *used, *available, started, gen };
  return 0;
}

/* Measure every repository of the catalog; forget the ones it no longer
 * has. */
static void
refresh_all (struct hub *hub)
{
  struct hub_usage *u = hub->usage;
  CLEANUP_CAT_REPO_LIST struct cat_repository_list repos = { 0 };

  if (catalog_repo_list (hub->cat, &repos.v, &repos.n) == -1) {
    log_warn ("repository usage: %s", error_message ());
    return;
  }
  for (size_t i = 0; i < repos.n; i++) {
    int64_t used, available;
    if (measure (u, &repos.v[i], &used, &available) == -1)
      log_warn ("repository %s: %s", repos.v[i].id, error_message ());
  }
  SCOPED_LOCK (&u->lock);
  for (size_t i = 0; i < u->n; ) {
    bool known = false;
    for (size_t j = 0; j < repos.n && !known; j++)
      known = strcmp (u->v[i].repo_id, repos.v[j].id) == 0;
    if (known) {
      i++;
      continue;
    }
    free (u->v[i].repo_id);
    u->v[i] = u->v[--u->n];
  }
}

/* One run of the thread: measure, and again in a minute at the latest. */
static time_t
usage_tick (void *opaque)
{
  refresh_all (opaque);
  return time (NULL) + USAGE_PERIOD_S;
}

int
hub_usage_start (struct hub *hub)
{
  struct hub_usage *u = calloc (1, sizeof *u);

  if (u == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  pthread_mutex_init (&u->lock, NULL);
  pthread_mutex_init (&u->walk_lock, NULL);
  hub->usage = u;
  u->ticker = ticker_start ("the repository usage thread", usage_tick, hub);
  if (u->ticker == NULL) {
    hub_usage_stop (hub);
    return -1;
  }
  return 0;
}

void
hub_usage_stop (struct hub *hub)
{
  struct hub_usage *u = hub->usage;

  if (u == NULL)
    return;
  ticker_stop (u->ticker);
  for (size_t i = 0; i < u->n; i++)
    free (u->v[i].repo_id);
  free (u->v);
  pthread_mutex_destroy (&u->walk_lock);
  pthread_mutex_destroy (&u->lock);
  free (u);
  hub->usage = NULL;
}

void
hub_usage_changed (struct hub *hub)
{
  struct hub_usage *u = hub->usage;

  if (u == NULL)
    return;
  {
    SCOPED_LOCK (&u->lock);
    u->gen++;
  }
  ticker_poke (u->ticker);
}

bool
hub_usage_cached (struct hub *hub, const char *repo_id, int64_t *used, int64_t *available)
{
  struct hub_usage *u = hub->usage;
  struct usage_entry *e;

  if (u == NULL)
    return false;
  SCOPED_LOCK (&u->lock);
  if ((e = entry_find (u, repo_id)) == NULL)
    return false;
  *used = e->used;
  *available = e->available;
  return true;
}

int
hub_repo_usage (struct hub *hub, const struct cat_repository *r, int64_t *used,
                int64_t *available)
{
  struct hub_usage *u = hub->usage;

  if (u == NULL)
    return repo_usage (r->path, used, available);
  {
    SCOPED_LOCK (&u->lock);
    struct usage_entry *e = entry_find (u, r->id);
    if (e && e->gen == u->gen &&
        clock_mono_ms () - e->measured_ms < USAGE_PERIOD_S * 1000) {
      *used = e->used;
      *available = e->available;
      return 0;
    }
  }
  return measure (u, r, used, available);
}
