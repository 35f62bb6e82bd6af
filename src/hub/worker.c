/* hub/worker.c - hub-driven backups: the hub copies each disk from its
 * inventory source into the job's own NBD targets with the copy engine.
 *
 * A pool of hub->cfg.workers threads takes jobs from a FIFO queue, one job
 * per thread.  A job's disks are copied in parallel, WORKER_DISKS_PARALLEL
 * at a time (the job's thread and helpers it starts for that job).  Each
 * disk goes through the same core calls an agent's requests would make:
 *
 *   engine_backup_disk ok -> hub_backup_complete (flush, sync, record)
 *   engine_backup_disk failed -> hub_backup_end "failed" with the reason,
 *                                which cancels the job's other copies
 *
 * Bitmaps are committed (the old one removed) only once the whole job is
 * completed; if it failed, the disks that were copied drop their new
 * bitmap instead, so the next incremental still finds the bitmap of the
 * last good backup on every disk.
 *
 * LOCKING
 *
 * w->lock guards the queue, the list of running tasks and each task's
 * cancelled flag and disk slots.  It is never held while calling into the
 * hub core, which takes hub->lock and may call hub_workers_cancel: the
 * order is always hub->lock, then w->lock.
 *
 * SHUTDOWN AND RESTART
 *
 * hub_workers_stop cancels every copy and waits for the threads; jobs stay
 * "running" in the catalog.  At the next start hub_open queues every
 * running hub-driven job again: its running disks are copied again from
 * the start (the engine re-creates the new bitmap of that backup id), its
 * completed disks are kept.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "hub/hub-int.h"
#include "storage/qsd.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/log.h"

#define WORKER_DISKS_PARALLEL 2

struct disk_task {
  int disk_index;
  char *source, *target_uri, *export_name, *previous_change_id;
  char *superseded_change_id;  /* latest completed change id before this job */
  bool incremental;          /* the target is an overlay */
  bool to_copy;              /* running at pick-up: copy it */
  bool started;              /* a thread took it */
  bool active;               /* its copy runs now */
  bool copied;               /* copied and completed by this task */
  char *completed_change_id; /* completed before pick-up: its change id */
  struct engine_progress progress;
  struct engine_disk_result result;
};

struct task {
  struct task *next;
  char *backup_id;
  bool cancelled;            /* the job was ended or deleted by someone */
  bool failed;               /* a disk failed: the others stop */
  size_t n;
  struct disk_task *disks;   /* NULL until the job is loaded */
};

struct hub_workers {
  struct hub *hub;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stopping;
  struct task *queue;        /* waiting, oldest first */
  struct task *running;
  int n_threads;
  pthread_t *threads;
};

static void
task_free (struct task *t)
{
  if (t == NULL)
    return;
  for (size_t i = 0; t->disks && i < t->n; i++) {
    struct disk_task *d = &t->disks[i];
    free (d->source);
    free (d->target_uri);
    free (d->export_name);
    free (d->previous_change_id);
    free (d->superseded_change_id);
    free (d->completed_change_id);
    engine_disk_result_clear (&d->result);
  }
  free (t->disks);
  free (t->backup_id);
  free (t);
}

static struct task *
find_task (struct task *list, const char *backup_id)
{
  for (struct task *t = list; t; t = t->next)
    if (strcmp (t->backup_id, backup_id) == 0)
      return t;
  return NULL;
}

static void
unlink_task (struct task **list, struct task *t)
{
  for (struct task **pp = list; *pp; pp = &(*pp)->next)
    if (*pp == t) {
      *pp = t->next;
      t->next = NULL;
      return;
    }
}

static void
engine_disk_of (const struct hub *hub, const struct task *t, const struct disk_task *dt,
                struct engine_backup_disk *d)
{
  memset (d, 0, sizeof *d);
  d->source = dt->source;
  d->target_uri = dt->target_uri;
  d->tls_psk_file = hub->cfg.nbd_tls_psk_file;
  d->backup_id = t->backup_id;
  d->previous_change_id = dt->previous_change_id;
  d->superseded_change_id = dt->superseded_change_id;
  d->target_has_backing = dt->incremental;
}

/* Fill t->disks from the catalog and the inventory.  Returns 0, or -1
 * with the error set: the job can't be run (the caller fails it), or 1
 * when there is nothing to do (the job is no longer a running hub job). */
static int
load_task (struct hub *hub, struct task *t)
{
  struct cat_job job = { 0 };
  struct cat_vm vm = { 0 };
  struct disk_task *disks = NULL;
  int ret = -1;

  if (catalog_backup_get (hub->cat, t->backup_id, &job) == -1)
    return error_category () == ERR_NOT_FOUND ? 1 : -1;
  if (strcmp (job.status, "running") != 0 || job.driver == NULL ||
      strcmp (job.driver, "hub") != 0) {
    ret = 1;
    goto out;
  }
  if (catalog_vm_get (hub->cat, job.vm_name, &vm) == -1) {
    error_prefix ("reading the sources of VM '%s'", job.vm_name);
    goto out;
  }
  disks = calloc (job.n_disks, sizeof *disks);
  if (disks == NULL && job.n_disks) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < job.n_disks; i++) {
    const struct cat_disk *cd = &job.disks[i];
    struct disk_task *dt = &disks[i];
    const char *source = NULL;

    dt->disk_index = cd->disk_index;
    for (size_t k = 0; k < vm.n_disks; k++)
      if (vm.disks[k].disk_index == cd->disk_index)
        source = vm.disks[k].source;
    if (source && (dt->source = strdup (source)) == NULL)
      goto oom;
    if (cd->previous_change_id &&
        (dt->previous_change_id = strdup (cd->previous_change_id)) == NULL)
      goto oom;
    /* A full replaces the chain before it: that chain's bitmap goes too
     * once this job has completed.  Only clean-up depends on it. */
    {
      struct cat_disk latest = { 0 };
      struct error_saved es;

      error_save (&es);
      if (catalog_changeid_get (hub->cat, job.vm_name, cd->disk_index, job.repository_id,
                                &latest) == 0 && latest.disk_change_id &&
          *latest.disk_change_id)
        dt->superseded_change_id = strdup (latest.disk_change_id);
      cat_disk_clear (&latest);
      error_restore (&es);
    }
    dt->incremental = strcmp (cd->backup_type, "incremental") == 0 && cd->parent_disk_id > 0;
    if (strcmp (cd->status, "completed") == 0) {
      if (cd->disk_change_id &&
          (dt->completed_change_id = strdup (cd->disk_change_id)) == NULL)
        goto oom;
      continue;
    }
    if (strcmp (cd->status, "running") != 0 && strcmp (cd->status, "pending") != 0)
      continue;
    if (source == NULL) {
      error_set (ERR_INVALID, "disk %d has no source in the inventory of VM '%s' any "
                 "more", cd->disk_index, job.vm_name);
      goto out;
    }
    /* Checked again: the inventory or --source-dirs may have changed since
     * the job started (a job run again after a restart). */
    if (hub_source_allowed (hub, source, true) == -1) {
      error_prefix ("disk %d", cd->disk_index);
      goto out;
    }
    if (cd->nbd_export == NULL) {
      error_set (ERR_INTERNAL, "disk %d has no NBD target", cd->disk_index);
      goto out;
    }
    if ((dt->target_uri = hub_nbd_uri (hub, cd->nbd_export)) == NULL ||
        (dt->export_name = strdup (cd->nbd_export)) == NULL)
      goto oom;
    dt->to_copy = true;
  }
  {
    SCOPED_LOCK (&hub->workers->lock);
    t->disks = disks;
    t->n = job.n_disks;
  }
  disks = NULL;
  ret = 0;
  goto out;
 oom:
  error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
 out:
  if (disks) {
    for (size_t i = 0; i < job.n_disks; i++) {
      free (disks[i].source);
      free (disks[i].target_uri);
      free (disks[i].export_name);
      free (disks[i].previous_change_id);
      free (disks[i].superseded_change_id);
      free (disks[i].completed_change_id);
    }
    free (disks);
  }
  cat_job_clear (&job);
  cat_vm_clear (&vm);
  return ret;
}

/* Fail the job with this disk's reason, unless it was ended, deleted or
 * the hub is stopping. */
static void
fail_job (struct hub *hub, struct task *t, int disk_index, const char *reason)
{
  struct hub_workers *w = hub->workers;
  struct cat_job job = { 0 };
  bool cancelled, stopping;

  {
    SCOPED_LOCK (&w->lock);
    cancelled = t->cancelled;
    stopping = w->stopping;
    t->failed = true;
  }
  if (cancelled || stopping) {
    log_info ("backup %s disk %d: copy stopped (%s)", t->backup_id, disk_index,
              stopping ? "the hub is stopping; its next start copies it again"
                       : "the job was ended");
    return;
  }
  if (hub_backup_end_nowait (hub, t->backup_id, "failed", disk_index, reason, &job) == 0)
    cat_job_clear (&job);
  else if (error_category () != ERR_CONFLICT && error_category () != ERR_NOT_FOUND)
    log_error ("backup %s: recording the failure of disk %d: %s", t->backup_id,
               disk_index, error_message ());
}

/* After a failed copy: whether the storage daemon died under it (its pid
 * changed since before) and is back with the disk exported again under
 * the same name, waiting for that a bounded while.  Then the copy can
 * simply run once more. */
static bool
storage_came_back (struct hub *hub, struct task *t, const struct disk_task *dt,
                   pid_t before)
{
  struct hub_workers *w = hub->workers;

  if (before == 0 || qsd_pid (hub->qsd) == before)
    return false;
  for (int i = 0; i < 300; i++) {          /* 30 s */
    struct timespec ts = { 0, 100 * 1000 * 1000 };
    pid_t now = qsd_pid (hub->qsd);
    {
      SCOPED_LOCK (&w->lock);
      if (t->cancelled || t->failed || w->stopping)
        return false;
    }
    if (now != 0 && now != before && qsd_export_exists (hub->qsd, dt->export_name))
      return true;
    nanosleep (&ts, NULL);
  }
  return false;
}

/* Copy disks of the task until none is left. */
static void
copy_disks (struct hub *hub, struct task *t)
{
  struct hub_workers *w = hub->workers;

  for (;;) {
    struct disk_task *dt = NULL;
    struct engine_backup_disk d;
    struct cat_job job = { 0 };
    char reason[HUB_MAX_ERROR];
    pid_t qsd_before;
    int r;

    {
      SCOPED_LOCK (&w->lock);
      if (t->cancelled || t->failed || w->stopping)
        return;
      for (size_t i = 0; i < t->n && dt == NULL; i++)
        if (t->disks[i].to_copy && !t->disks[i].started)
          dt = &t->disks[i];
      if (dt == NULL)
        return;
      dt->started = dt->active = true;
    }
    engine_disk_of (hub, t, dt, &d);
    log_info ("backup %s disk %d: copying %s (%s)", t->backup_id, dt->disk_index,
              dt->source, dt->incremental ? "into an overlay" : "full");
    qsd_before = qsd_pid (hub->qsd);
    r = engine_backup_disk (&d, &dt->progress, &dt->result);
    if (r == -1 && storage_came_back (hub, t, dt, qsd_before)) {
      log_warn ("backup %s disk %d: the storage daemon was restarted during the copy; "
                "copying again", t->backup_id, dt->disk_index);
      /* The target holds part of the first attempt: zero what reads as zero. */
      d.target_has_backing = true;
      r = engine_backup_disk (&d, &dt->progress, &dt->result);
    }
    if (r == -1)
      snprintf (reason, sizeof reason, "copying from %s: %s", dt->source,
                error_message ());
    {
      SCOPED_LOCK (&w->lock);
      dt->active = false;
    }
    if (r == -1) {
      fail_job (hub, t, dt->disk_index, reason);
      continue;
    }
    if (hub_backup_complete (hub, t->backup_id, dt->disk_index, dt->result.change_id,
                             dt->result.bytes_written, dt->result.full_reason,
                             &job) == 0) {
      dt->copied = true;
      cat_job_clear (&job);
      continue;
    }
    snprintf (reason, sizeof reason, "completing the copy: %s", error_message ());
    engine_backup_disk_abort (&d, &dt->result);
    engine_disk_result_clear (&dt->result);
    fail_job (hub, t, dt->disk_index, reason);
  }
}

static void *
helper_main (void *arg)
{
  void **a = arg;
  copy_disks (a[0], a[1]);
  return NULL;
}

/* Run one job to its end (or until the hub stops). */
static void
run_task (struct hub *hub, struct task *t)
{
  pthread_t helpers[WORKER_DISKS_PARALLEL];
  void *arg[2] = { hub, t };
  struct cat_job job = { 0 };
  size_t to_copy = 0, n_helpers = 0;
  bool completed;
  int r = load_task (hub, t);

  if (r == 1)
    return;
  if (r == -1) {
    char reason[HUB_MAX_ERROR];
    snprintf (reason, sizeof reason, "%s", error_message ());
    fail_job (hub, t, -1, reason);
    return;
  }
  for (size_t i = 0; i < t->n; i++)
    to_copy += t->disks[i].to_copy;
  for (size_t i = 1; i < to_copy && i < WORKER_DISKS_PARALLEL; i++) {
    if (pthread_create (&helpers[n_helpers], NULL, helper_main, arg) != 0) {
      log_warn ("backup %s: starting a copy thread failed; copying one disk at a time",
                t->backup_id);
      break;
    }
    n_helpers++;
  }
  copy_disks (hub, t);
  for (size_t i = 0; i < n_helpers; i++)
    pthread_join (helpers[i], NULL);

  /* Bitmaps: keep the new ones and drop the old ones only when the whole
   * job completed; otherwise drop the new ones of the disks copied here. */
  if (catalog_backup_get (hub->cat, t->backup_id, &job) == -1) {
    if (error_category () != ERR_NOT_FOUND) {
      log_error ("backup %s: %s", t->backup_id, error_message ());
      return;
    }
    completed = false;
  }
  else {
    completed = strcmp (job.status, "completed") == 0;
    if (strcmp (job.status, "running") == 0) {
      /* Stopping: the next start finishes it, and decides then. */
      cat_job_clear (&job);
      return;
    }
    cat_job_clear (&job);
  }
  for (size_t i = 0; i < t->n; i++) {
    struct disk_task *dt = &t->disks[i];
    struct engine_backup_disk d;

    engine_disk_of (hub, t, dt, &d);
    if (completed && (dt->copied || dt->completed_change_id)) {
      struct engine_disk_result before = { .change_id = dt->completed_change_id };
      if (engine_backup_disk_commit (&d, dt->copied ? &dt->result : &before) == -1)
        log_warn ("backup %s disk %d: removing the previous bitmap: %s", t->backup_id,
                  dt->disk_index, error_message ());
    }
    else if (!completed && dt->copied)
      engine_backup_disk_abort (&d, &dt->result);
  }
  if (completed)
    log_info ("backup %s completed by the hub", t->backup_id);
}

static void *
worker_main (void *arg)
{
  struct hub *hub = arg;
  struct hub_workers *w = hub->workers;

  pthread_mutex_lock (&w->lock);
  while (!w->stopping) {
    struct task *t = w->queue;
    if (t == NULL) {
      pthread_cond_wait (&w->cond, &w->lock);
      continue;
    }
    w->queue = t->next;
    t->next = w->running;
    w->running = t;
    pthread_mutex_unlock (&w->lock);

    run_task (hub, t);

    pthread_mutex_lock (&w->lock);
    unlink_task (&w->running, t);
    task_free (t);
    pthread_cond_broadcast (&w->cond);
  }
  pthread_mutex_unlock (&w->lock);
  return NULL;
}

int
hub_workers_start (struct hub *hub)
{
  struct hub_workers *w = calloc (1, sizeof *w);
  int n = hub->cfg.workers > 0 ? hub->cfg.workers : 2;

  if (w == NULL || (w->threads = calloc (n, sizeof *w->threads)) == NULL) {
    free (w);
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  w->hub = hub;
  pthread_mutex_init (&w->lock, NULL);
  pthread_cond_init (&w->cond, NULL);
  hub->workers = w;
  for (w->n_threads = 0; w->n_threads < n; w->n_threads++) {
    int err = pthread_create (&w->threads[w->n_threads], NULL, worker_main, hub);
    if (err != 0) {
      error_set_errno (ERR_INTERNAL, err, "starting the backup workers");
      hub_workers_stop (hub);
      return -1;
    }
  }
  return 0;
}

void
hub_workers_stop (struct hub *hub)
{
  struct hub_workers *w = hub->workers;

  if (w == NULL)
    return;
  {
    SCOPED_LOCK (&w->lock);
    w->stopping = true;
    while (w->queue) {
      struct task *t = w->queue;
      w->queue = t->next;
      task_free (t);
    }
    for (struct task *t = w->running; t; t = t->next)
      for (size_t i = 0; t->disks && i < t->n; i++)
        atomic_store (&t->disks[i].progress.cancel, true);
    pthread_cond_broadcast (&w->cond);
  }
  for (int i = 0; i < w->n_threads; i++)
    pthread_join (w->threads[i], NULL);
  pthread_cond_destroy (&w->cond);
  pthread_mutex_destroy (&w->lock);
  free (w->threads);
  free (w);
  hub->workers = NULL;
}

void
hub_workers_queue (struct hub *hub, const char *backup_id)
{
  struct hub_workers *w = hub->workers;
  struct task *t, **tail;

  if (w == NULL)
    return;
  SCOPED_LOCK (&w->lock);
  if (w->stopping || find_task (w->queue, backup_id) || find_task (w->running, backup_id))
    return;
  t = calloc (1, sizeof *t);
  if (t == NULL || (t->backup_id = strdup (backup_id)) == NULL) {
    free (t);
    log_error ("backup %s: out of memory queueing it; the next start runs it",
               backup_id);
    return;
  }
  for (tail = &w->queue; *tail; tail = &(*tail)->next)
    ;
  *tail = t;
  pthread_cond_broadcast (&w->cond);
}

void
hub_workers_cancel (struct hub *hub, const char *backup_id)
{
  struct hub_workers *w = hub->workers;
  struct task *t;

  if (w == NULL)
    return;
  SCOPED_LOCK (&w->lock);
  if ((t = find_task (w->queue, backup_id)) != NULL) {
    unlink_task (&w->queue, t);
    task_free (t);
  }
  if ((t = find_task (w->running, backup_id)) != NULL) {
    t->cancelled = true;
    for (size_t i = 0; t->disks && i < t->n; i++)
      atomic_store (&t->disks[i].progress.cancel, true);
  }
}

#define WORKER_WAIT_S 60

void
hub_workers_wait (struct hub *hub, const char *backup_id)
{
  struct hub_workers *w = hub->workers;
  struct timespec deadline;

  if (w == NULL)
    return;
  clock_gettime (CLOCK_REALTIME, &deadline);
  deadline.tv_sec += WORKER_WAIT_S;
  SCOPED_LOCK (&w->lock);
  while (find_task (w->running, backup_id))
    if (pthread_cond_timedwait (&w->cond, &w->lock, &deadline) == ETIMEDOUT) {
      log_warn ("backup %s: its copies did not stop within %d s", backup_id,
                WORKER_WAIT_S);
      return;
    }
}

bool
hub_backup_progress (struct hub *hub, const char *backup_id, int disk_index,
                     struct hub_progress *out)
{
  struct hub_workers *w = hub->workers;
  struct task *t;

  if (w == NULL)
    return false;
  SCOPED_LOCK (&w->lock);
  t = find_task (w->running, backup_id);
  for (size_t i = 0; t && t->disks && i < t->n; i++) {
    struct disk_task *dt = &t->disks[i];
    struct timespec now;
    int64_t started, elapsed_ns;

    if (dt->disk_index != disk_index)
      continue;
    if (!dt->to_copy || dt->copied || (dt->started && !dt->active))
      return false;
    out->bytes_done = atomic_load (&dt->progress.bytes_done);
    out->bytes_total = atomic_load (&dt->progress.bytes_total);
    out->rate_bytes_per_sec = 0;
    started = atomic_load (&dt->progress.started_ns);
    clock_gettime (CLOCK_MONOTONIC, &now);
    elapsed_ns = (int64_t) now.tv_sec * 1000000000 + now.tv_nsec - started;
    if (started > 0 && elapsed_ns > 0)
      out->rate_bytes_per_sec = (int64_t) ((double) out->bytes_done * 1e9 / elapsed_ns);
    return true;
  }
  return false;
}
