/* hub/lease.c - leases of agents' jobs: a dead agent must not block its VM
 * for ever.
 *
 * A job whose starter asked for a lease (POST /api/v1/backups
 * "lease_seconds"; strata backup does) carries lease_expires_at in the
 * catalog.  Each progress report of the job renews it to now plus the
 * lease (hub_lease_renew, from hub_backup_report_progress, under
 * hub->lock); a report with no disks renews only.  One thread, the reaper,
 * wakes when the earliest lease lapses (at least once a minute, and when a
 * leased job starts) and fails every running job whose lease lapsed,
 * through hub_backup_end_lapsed: the same end as a client's fail, re-checked
 * under hub->lock so that a renewal that lands first wins.  A job without a
 * lease is never touched here, nor a job another hub runs (its owner reaps
 * it).
 *
 * A hub that was down could not be renewed: its first pass gives each
 * lapsed lease one full term from the hub's start instead of failing it,
 * so an agent that outlived a hub restart can still resume its job.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hub/hub-int.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"
#include "util/ticker.h"

#define LEASE_TICK_S 60

void
hub_lease_until (int64_t lease_seconds, char *buf, size_t len)
{
  id_time_format (time (NULL) + (time_t) lease_seconds, buf, len);
}

int
hub_lease_renew (struct hub *hub, const struct cat_job *job)
{
  char until[32];

  if (job->lease_seconds <= 0)
    return 0;
  hub_lease_until (job->lease_seconds, until, sizeof until);
  return catalog_backup_lease_renew (hub->cat, job->id, until);
}

/* The first pass: a full term again for each lease that lapsed while the
 * hub was down. */
static void
lease_grace (struct hub *hub, char *const *ids)
{
  for (size_t i = 0; ids && ids[i]; i++) {
    CLEANUP_CAT_JOB struct cat_job job = { 0 };
    SCOPED_LOCK (&hub->lock);
    if (catalog_backup_get (hub->cat, ids[i], &job) == 0 && hub_lease_renew (hub, &job) == 0)
      log_info ("backup %s: its lease lapsed while the hub was down; renewed for %lld s",
                ids[i], (long long) job.lease_seconds);
  }
}

static time_t
lease_tick (void *opaque)
{
  struct hub *hub = opaque;
  time_t t = time (NULL), wake = t + LEASE_TICK_S, next_t;
  CLEANUP_STRV char **ids = NULL;
  CLEANUP_FREE char *next = NULL;
  char now[32];

  id_time_format (t, now, sizeof now);
  if (catalog_backup_lease_lapsed (hub->cat, hub->hub_id, now, &ids, &next) == -1) {
    log_error ("leases: %s", error_message ());
    return wake;
  }
  if (!hub->leases_checked) {
    hub->leases_checked = true;
    lease_grace (hub, ids);
    return t + 1;
  }
  for (size_t i = 0; ids && ids[i] && !hub_stopping (hub); i++) {
    bool ended;
    if (hub_backup_end_lapsed (hub, ids[i], now, &ended) == -1)
      log_error ("backup %s: failing it after its lease lapsed: %s", ids[i],
                 error_message ());
  }
  /* Lapsed means before now, to the second: wake the second after. */
  if (next && id_time_parse (next, &next_t) == 0 && next_t + 1 < wake)
    wake = next_t + 1;
  return wake;
}

int
hub_lease_start (struct hub *hub)
{
  hub->leases = ticker_start ("the lease reaper", lease_tick, hub);
  return hub->leases ? 0 : -1;
}

void
hub_lease_stop (struct hub *hub)
{
  ticker_stop (hub->leases);
  hub->leases = NULL;
}

void
hub_lease_poke (struct hub *hub)
{
  ticker_poke (hub->leases);
}
