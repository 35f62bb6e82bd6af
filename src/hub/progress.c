/* hub/progress.c - what the agents say of their copies: the progress of
 * each disk of a running agent-driven job, as POST .../progress reports
 * it, kept in memory so that a job's disks[].progress shows it as it shows
 * a hub-driven copy's (hub_backup_progress, hub/worker.c).
 *
 * Nothing of it is durable: a hub that restarts knows nothing until the
 * agent's next report.  An entry is dropped when its disk completes or its
 * job ends or is deleted (hub_progress_forget); one whose agent went
 * silent stays, showing the last report, until then.
 *
 * LOCKING
 *
 * A report, even one with no disks, also renews the job's lease, if it
 * has one (hub/lease.c).
 *
 * hub->progress_lock guards hub->progress.  A report takes hub->lock
 * around the check of the job and the store, so that it never lands after
 * the completion or end that forgets it (the order is hub->lock, then
 * hub->progress_lock); readers take progress_lock only.
 */
#include <stdlib.h>
#include <string.h>

#include "hub/hub-int.h"
#include "util/cleanup.h"
#include "util/error.h"

struct hub_progress_entry {
  struct hub_progress_entry *next;
  char *backup_id;
  int disk_index;
  struct hub_progress p;
};

/* Store one disk's report; progress_lock held. */
static int
store (struct hub *hub, const char *backup_id, const struct hub_progress_report *r)
{
  struct hub_progress_entry *e;

  for (e = hub->progress; e; e = e->next)
    if (e->disk_index == r->disk_index && strcmp (e->backup_id, backup_id) == 0) {
      e->p = r->p;
      return 0;
    }
  e = calloc (1, sizeof *e);
  if (e == NULL || (e->backup_id = strdup (backup_id)) == NULL) {
    free (e);
    error_set (ERR_INTERNAL, "out of memory");
    return -1;
  }
  e->disk_index = r->disk_index;
  e->p = r->p;
  e->next = hub->progress;
  hub->progress = e;
  return 0;
}

/* Check every report of a body against the job before storing any. */
static int
check_reports (const struct cat_job *job, const struct hub_progress_report *v, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    const struct cat_disk *d = hub_job_disk (job, v[i].disk_index);

    for (size_t k = 0; k < i; k++)
      if (v[k].disk_index == v[i].disk_index) {
        error_set (ERR_INVALID, "disk_index %d appears twice", v[i].disk_index);
        return -1;
      }
    if (d == NULL) {
      error_set (ERR_NOT_FOUND, "backup %s has no disk %d", job->id, v[i].disk_index);
      return -1;
    }
    if (d->status != DISK_RUNNING) {
      error_set (ERR_CONFLICT, "disk %d of backup %s is %s, not running", v[i].disk_index,
                 job->id, disk_status_name (d->status));
      return -1;
    }
    if (v[i].p.bytes_done < 0 || v[i].p.bytes_total < 0 || v[i].p.rate_bytes_per_sec < 0 ||
        v[i].p.bytes_done > v[i].p.bytes_total ||
        v[i].p.bytes_total > d->size_bytes) {
      error_set (ERR_INVALID, "disks[%zu]: need 0 <= bytes_done <= bytes_total <= the "
                 "disk's size (%lld bytes) and a rate >= 0", i, (long long) d->size_bytes);
      return -1;
    }
  }
  return 0;
}

int
hub_backup_report_progress (struct hub *hub, const char *backup_id,
                            const struct hub_progress_report *v, size_t n)
{
  CLEANUP_CAT_JOB struct cat_job job = { 0 };

  SCOPED_LOCK (&hub->lock);
  if (catalog_backup_get (hub->cat, backup_id, &job) == -1)
    return -1;
  if (job.driver != DRIVER_AGENT || job.status != JOB_RUNNING) {
    error_set (ERR_CONFLICT, "backup %s is %s%s: only a running agent's job reports "
               "progress", backup_id, job_status_name (job.status),
               job.driver != DRIVER_AGENT ? " and hub-driven" : "");
    return -1;
  }
  if (check_reports (&job, v, n) == -1 || hub_lease_renew (hub, &job) == -1)
    return -1;
  SCOPED_LOCK (&hub->progress_lock);
  for (size_t i = 0; i < n; i++)
    if (store (hub, backup_id, &v[i]) == -1)
      return -1;
  return 0;
}

bool
hub_agent_progress (struct hub *hub, const char *backup_id, int disk_index,
                    struct hub_progress *out)
{
  SCOPED_LOCK (&hub->progress_lock);
  for (struct hub_progress_entry *e = hub->progress; e; e = e->next)
    if (e->disk_index == disk_index && strcmp (e->backup_id, backup_id) == 0) {
      *out = e->p;
      return true;
    }
  return false;
}

void
hub_progress_forget (struct hub *hub, const char *backup_id, int disk_index)
{
  SCOPED_LOCK (&hub->progress_lock);
  for (struct hub_progress_entry **pp = &hub->progress; *pp; ) {
    struct hub_progress_entry *e = *pp;
    if (strcmp (e->backup_id, backup_id) == 0 &&
        (disk_index < 0 || e->disk_index == disk_index)) {
      *pp = e->next;
      free (e->backup_id);
      free (e);
    }
    else
      pp = &e->next;
  }
}

void
hub_progress_free (struct hub *hub)
{
  while (hub->progress) {
    struct hub_progress_entry *e = hub->progress;
    hub->progress = e->next;
    free (e->backup_id);
    free (e);
  }
  pthread_mutex_destroy (&hub->progress_lock);
}
