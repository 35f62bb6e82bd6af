/* hub/metrics.c - the hub's Prometheus series (metrics/metrics.h): the
 * counters the backup transitions and the storage daemon's supervisor add
 * to, and the gauges read at scrape time from the catalog and from the
 * repository usage cache (hub/usage.c).
 *
 * The families are registered once per process (the registry is
 * process-wide) and the counters count from the start of the process.
 * The scrape-time collector reads only the catalog and cached numbers: a
 * scrape never walks a repository.
 */
#include <time.h>

#include "hub/hub-int.h"
#include "metrics/metrics.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

static struct metric *m_jobs, *m_written, *m_zeroed, *m_restarts;
static struct metric *m_last_success, *m_running_jobs, *m_running_disks;
static struct metric *m_repo_used, *m_repo_free, *m_build, *m_start;

/* Set the scrape-time gauges from the catalog and the usage cache. */
static void
collect (void *opaque)
{
  struct hub *hub = opaque;
  CLEANUP_CAT_CONTEXT_LIST struct cat_context_list ctxs = { 0 };
  CLEANUP_CAT_REPO_LIST struct cat_repository_list repos = { 0 };
  double running[2] = { 0, 0 }, disks = 0;
  int64_t total;

  metrics_reset (m_last_success);
  if (catalog_context_list (hub->cat, NULL, &ctxs.v, &ctxs.n) == -1)
    log_warn ("metrics: %s", error_message ());
  for (size_t i = 0; i < ctxs.n; i++) {
    const struct cat_context *c = &ctxs.v[i];
    time_t t;
    if (c->last_backup_at && id_time_parse (c->last_backup_at, &t) == 0)
      metrics_set (m_last_success, (double) t, c->context_id, c->vm_name,
                   c->repository_id);
  }

  /* Running and finishing jobs: both still hold their context. */
  for (enum job_status st = JOB_RUNNING; st <= JOB_FINISHING; st++) {
    struct cat_job_filter f = { .by_status = true, .status = st };
    CLEANUP_CAT_JOB_LIST struct cat_job_list l = { 0 };
    if (catalog_backup_list (hub->cat, &f, &l.v, &l.n, &total) == -1) {
      log_warn ("metrics: %s", error_message ());
      continue;
    }
    for (size_t i = 0; i < l.n; i++) {
      running[l.v[i].driver == DRIVER_HUB]++;
      for (size_t j = 0; j < l.v[i].n_disks; j++)
        disks += l.v[i].disks[j].status == DISK_RUNNING ||
                 l.v[i].disks[j].status == DISK_PENDING;
    }
  }
  metrics_set (m_running_jobs, running[0], job_driver_name (DRIVER_AGENT));
  metrics_set (m_running_jobs, running[1], job_driver_name (DRIVER_HUB));
  metrics_set (m_running_disks, disks);

  metrics_reset (m_repo_used);
  metrics_reset (m_repo_free);
  if (catalog_repo_list (hub->cat, &repos.v, &repos.n) == -1)
    log_warn ("metrics: %s", error_message ());
  for (size_t i = 0; i < repos.n; i++) {
    int64_t used, available;
    if (!hub_usage_cached (hub, repos.v[i].id, &used, &available))
      continue;          /* not measured yet: the series appears later */
    metrics_set (m_repo_used, (double) used, repos.v[i].id);
    metrics_set (m_repo_free, (double) available, repos.v[i].id);
  }
}

/* The hub's families, registered by hub_metrics_open. */
static const struct family {
  struct metric **m;
  bool counter;              /* else a gauge */
  const char *name, *labels, *help;
} families[] = {
  { &m_jobs, true, "strata_jobs_total", "status,driver",
    "Backup jobs that ended, by how they ended and who copied the data." },
  { &m_written, true, "strata_written_bytes_total", NULL,
    "Bytes written to backup images (hub-driven copies, and agents that report it)." },
  { &m_zeroed, true, "strata_zeroed_bytes_total", NULL,
    "Bytes written to backup images as zeroes (hub-driven copies, and agents that "
    "report bytes_zeroed)." },
  { &m_restarts, true, "strata_storage_daemon_restarts_total", NULL,
    "Times the qemu-storage-daemon died and was started again." },
  { &m_last_success, false, "strata_last_success_timestamp_seconds", "context,vm,repository",
    "When the newest completed backup of a context completed (Unix time)." },
  { &m_running_jobs, false, "strata_running_jobs", "driver",
    "Backup jobs running or finishing now." },
  { &m_running_disks, false, "strata_running_disks", NULL,
    "Disks of running backup jobs not yet completed." },
  { &m_repo_used, false, "strata_repository_used_bytes", "repository",
    "Bytes the repository's files take (measured at most once a minute, and after "
    "changes)." },
  { &m_repo_free, false, "strata_repository_free_bytes", "repository",
    "Bytes the repository's file system offers." },
  { &m_build, false, "strata_build_info", "version",
    "The running strata's version (always 1)." },
  { &m_start, false, "strata_start_time_seconds", NULL,
    "When the hub process started (Unix time)." },
};

int
hub_metrics_open (struct hub *hub)
{
  static const enum job_status ends[] = { JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED };
  struct timespec now;

  for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
    const struct family *f = &families[i];
    *f->m = f->counter ? metrics_counter (f->name, f->help, f->labels)
                       : metrics_gauge (f->name, f->help, f->labels);
    if (*f->m == NULL) {
      error_set (ERR_INTERNAL, "out of memory registering the metrics");
      return -1;
    }
  }
  /* Every series an alert may watch exists from the start, at 0, so that
   * its first increase is seen. */
  for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
    metrics_add (m_jobs, 0, job_status_name (ends[i]), job_driver_name (DRIVER_AGENT));
    metrics_add (m_jobs, 0, job_status_name (ends[i]), job_driver_name (DRIVER_HUB));
  }
  metrics_add (m_written, 0);
  metrics_add (m_zeroed, 0);
  metrics_add (m_restarts, 0);
  metrics_set (m_build, 1, STRATA_VERSION);
  clock_gettime (CLOCK_REALTIME, &now);
  metrics_set (m_start, (double) now.tv_sec + now.tv_nsec / 1e9);
  if (metrics_collector_add (collect, hub) == -1) {
    error_set (ERR_INTERNAL, "out of memory registering the metrics");
    return -1;
  }
  return 0;
}

void
hub_metrics_close (struct hub *hub)
{
  metrics_collector_remove (collect, hub);
}

void
hub_metrics_job_ended (const struct cat_job *job)
{
  metrics_add (m_jobs, 1, job_status_name (job->status), job_driver_name (job->driver));
}

void
hub_metrics_disk_copied (int64_t bytes_written, int64_t bytes_zeroed)
{
  if (bytes_written > 0)
    metrics_add (m_written, (double) bytes_written);
  if (bytes_zeroed > 0)
    metrics_add (m_zeroed, (double) bytes_zeroed);
}

void
hub_metrics_storage_restarted (void)
{
  metrics_add (m_restarts, 1);
}
