/* hub/worker.c - hub-driven backups: the hub copies each disk from its
 * inventory source into the job's own NBD targets with the copy engine.
 *
 * A pool of hub->cfg.workers threads takes jobs from a FIFO queue, one job
 * per thread.  Each job runs the backup session of engine/session.c (the
 * same one `strata backup` runs), WORKER_DISKS_PARALLEL disks at a time,
 * with callbacks that call the hub core directly where the agent's talk
 * HTTP:
 *
 *   copy ok      -> hub_backup_complete (flush, sync, record); the last
 *                   disk leaves the job "finishing"
 *   all recorded -> commit the bitmaps at the sources -> hub_backup_finish
 *                   (the job is "completed", counted in its context)
 *   copy failed  -> hub_backup_end "failed" with the reason -> the new
 *                   bitmaps go, so the next incremental still finds the
 *                   bitmap of the last good backup on every disk
 *
 * HASHES AND AUDIT
 *
 * Each disk's copy hashes what it reads into an mf_map whose hash file
 * lives in the disk's folder of the repository (a big disk's hashes need
 * room like its data, not in /tmp).  Before hub_backup_complete, which
 * makes the manifest, the map is written as "<image>.manifest.part".
 * With t->audit_percent the session then reads the source again and
 * hub_audit_record compares and records; a failed audit is a warning.
 *
 * A superseded bitmap that cannot be removed (the source image is gone or
 * held by a writer) does not keep the job finishing: the data is complete
 * and durable, so the job is completed and the bitmap named in a warning.
 * A job left finishing for ever would block its context instead.
 *
 * The core tells the pool about jobs through hub->hooks, which
 * hub_workers_start sets: runnable (a hub-driven job was recorded: queue
 * it) and ended (failed, cancelled or deleted by someone: stop its copies
 * and wait for them).  The pool calls the core; the core never calls the
 * pool by name.
 *
 * LOCKING
 *
 * w->lock guards the queue, the list of running tasks, each task's
 * cancelled and loaded flags and its disks' active flags.  It is never held
 * while calling into the hub core, which takes hub->lock and may call the
 * runnable hook: the order is always hub->lock, then w->lock.
 *
 * A VM whose inventory source is libvirt://DOMAIN (one per job disk, as
 * hub/backup.c expanded it) is one libvirt backup job: run_task opens the
 * domain and begins it (virt_session_begin) before the session runs, which
 * points every disk at its export; the session ends the job and commits or
 * aborts the checkpoints.  A job run again after a restart makes a new
 * checkpoint (virt/virt.c says why that is safe).
 *
 * SHUTDOWN AND RESTART
 *
 * hub_workers_stop stops every session and waits for the threads; jobs stay
 * "running" (or "finishing") in the catalog.  At the next start
 * hub_requeue_jobs queues them again: a running job's running disks are
 * copied again from the start (the engine re-creates the new bitmap of
 * that backup id), its completed disks are kept; a finishing job redoes
 * its bitmap commit, which is idempotent, and is finished.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "hub/hub-int.h"
#include "integrity/manifest.h"
#include "storage/qsd.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/crash.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/log.h"
#include "virt/virt.h"

#define WORKER_DISKS_PARALLEL 2

/* The hub's side of one disk: the strings its engine_backup_disk points
 * into, and its live progress. */
struct disk_task {
  char *source, *target_uri, *export_name, *previous_change_id;
  char *superseded_change_id;  /* latest completed change id before this job */
  char *image;               /* the disk's file (absolute), or NULL */
  struct mf_map *hashes;     /* its copy's block hashes, or NULL */
  pid_t qsd_before;          /* the storage daemon's pid when the copy began */
  bool active;               /* its copy runs now (w->lock) */
  struct engine_progress progress;
};

struct task {
  struct task *next;
  struct hub *hub;
  char *backup_id;           /* or, for an op, its key */
  void (*op) (struct hub *hub, const char *key);   /* NULL: a backup */
  bool again;                /* an op asked for while it ran: run it once
                              * more (w->lock) */
  bool cancelled;            /* the job was ended or deleted by someone */
  bool loaded;               /* session is set up (w->lock) */
  int audit_percent;         /* audit each disk over this percent (0: none) */
  size_t n;
  struct disk_task *disks;
  struct engine_session_disk *sdisks;
  struct engine_session session;
  struct virt_domain *vd;    /* a libvirt source's domain, while it runs */
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

/* The task this worker thread runs, so that the job-ended hook, called
 * by the worker itself when it fails its job, does not wait for itself. */
static __thread const struct task *current_task;

static void
task_free (struct task *t)
{
  if (t == NULL)
    return;
  if (t->loaded)
    engine_session_clear (&t->session);
  for (size_t i = 0; t->disks && i < t->n; i++) {
    struct disk_task *d = &t->disks[i];
    free (d->source);
    free (d->target_uri);
    free (d->export_name);
    free (d->previous_change_id);
    free (d->superseded_change_id);
    free (d->image);
    mf_map_free (d->hashes);
  }
  for (size_t i = 0; t->sdisks && !t->loaded && i < t->n; i++)
    engine_disk_result_clear (&t->sdisks[i].result);
  free (t->sdisks);
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

static struct task *
task_of (struct engine_session *s)
{
  return s->opaque;
}

/* --- The session's callbacks: the hub core, called directly ----------- */

static void
on_disk_start (struct engine_session *s, struct engine_session_disk *sd)
{
  struct task *t = task_of (s);
  struct disk_task *dt = sd->opaque;

  log_info ("backup %s disk %d: copying %s (%s)", t->backup_id, sd->disk_index,
            dt->source, sd->d.target_has_backing ? "into an overlay" : "full");
  dt->qsd_before = qsd_pid (t->hub->qsd);
  SCOPED_LOCK (&t->hub->workers->lock);
  dt->active = true;
}

/* After a failed copy: whether the storage daemon died under it (the one
 * whose pid the copy began with, qsd_died) and is back with the disk
 * exported again under the same name, waiting for that a bounded while.
 * Then the copy simply runs once more, zeroing what reads as zero (the
 * target holds part of the first attempt). */
static bool
on_copy_again (struct engine_session *s, struct engine_session_disk *sd)
{
  struct task *t = task_of (s);
  struct hub *hub = t->hub;
  struct disk_task *dt = sd->opaque;

  /* The copy may fail on the daemon's death a moment before the
   * supervisor notices it: qsd_died asks the daemon itself. */
  if (dt->qsd_before == 0 || !qsd_died (hub->qsd, dt->qsd_before))
    return false;
  for (int i = 0; i < 300; i++) {          /* 30 s */
    struct timespec ts = { 0, 100 * 1000 * 1000 };
    pid_t now = qsd_pid (hub->qsd);
    if (atomic_load (&dt->progress.cancel))
      return false;
    if (now != 0 && now != dt->qsd_before && qsd_export_exists (hub->qsd, dt->export_name)) {
      log_warn ("backup %s disk %d: the storage daemon was restarted during the copy; "
                "copying again", t->backup_id, sd->disk_index);
      sd->d.target_has_backing = true;
      return true;
    }
    nanosleep (&ts, NULL);
  }
  return false;
}

/* Write the copy's hashes as "<image>.manifest.part", durably, for
 * hub_backup_complete to make the manifest of.  A part that could not be
 * written is removed: the manifest then has no hashes. */
static void
write_part (struct task *t, struct engine_session_disk *sd, struct disk_task *dt)
{
  CLEANUP_FREE char *part = NULL;
  int fd, r = -1;

  if (dt->hashes == NULL || dt->image == NULL)
    return;
  if (asprintf (&part, "%s%s.part", dt->image, MF_SUFFIX) == -1) {
    part = NULL;
    log_warn ("backup %s disk %d: no block hashes: out of memory", t->backup_id,
              sd->disk_index);
    return;
  }
  fd = open (part, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  if (fd == -1)
    error_set_errno (ERR_INTERNAL, errno, "%s", part);
  else if (mf_map_write_part (dt->hashes, fd) == -1)
    ;
  else if (fsync (fd) == -1)
    error_set_errno (ERR_INTERNAL, errno, "fsync of %s", part);
  else
    r = 0;
  if (fd >= 0 && close (fd) == -1 && r == 0) {
    error_set_errno (ERR_INTERNAL, errno, "%s", part);
    r = -1;
  }
  if (r == -1) {
    log_warn ("backup %s disk %d: its block hashes are not kept: %s", t->backup_id,
              sd->disk_index, error_message ());
    unlink (part);
  }
}

static int
on_complete (struct engine_session *s, struct engine_session_disk *sd)
{
  struct task *t = task_of (s);
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  struct disk_task *dt = sd->opaque;

  {
    SCOPED_LOCK (&t->hub->workers->lock);
    dt->active = false;
  }
  write_part (t, sd, dt);
  return hub_backup_complete (t->hub, DRIVER_HUB, t->backup_id, sd->disk_index,
                              sd->result.change_id,
                              sd->result.bytes_written, sd->result.bytes_zero,
                              sd->result.full_reason, &job);
}

/* The disk's audit read its source again: the hub compares and records. */
static int
on_audit (struct engine_session *s, struct engine_session_disk *sd)
{
  struct task *t = task_of (s);
  struct mf_compare cmp;

  if (hub_audit_record (t->hub, t->backup_id, sd->disk_index, sd->audit, &cmp) == -1)
    return -1;
  if (cmp.bad > 0)
    log_warn ("backup %s disk %d: change tracking missed %" PRIu64 " blocks (first at "
              "offset %" PRIi64 ")", t->backup_id, sd->disk_index, cmp.bad, cmp.first_bad);
  else
    log_info ("backup %s disk %d: audit checked %" PRIu64 " blocks, none differ",
              t->backup_id, sd->disk_index, cmp.checked);
  return 0;
}

static void
on_disk_done (struct engine_session *s, struct engine_session_disk *sd)
{
  struct disk_task *dt = sd->opaque;
  SCOPED_LOCK (&task_of (s)->hub->workers->lock);
  dt->active = false;
  mf_map_free (dt->hashes);
  dt->hashes = NULL;
  sd->d.hashes = NULL;
}

/* Every disk is recorded, so the job is "finishing": it owes only the
 * bitmap commit.  (A job found "completed" was finished by an earlier run
 * of this hub; committing again changes nothing.) */
static enum engine_verdict
on_all_completed (struct engine_session *s)
{
  struct task *t = task_of (s);
  CLEANUP_CAT_JOB struct cat_job job = { 0 };

  if (catalog_backup_get (t->hub->cat, t->backup_id, &job) == -1) {
    if (error_category () == ERR_NOT_FOUND)
      return ENGINE_ABORT;
    log_error ("backup %s: %s; its next start finishes it", t->backup_id, error_message ());
    return ENGINE_LEAVE;
  }
  switch (job.status) {
  case JOB_FINISHING:
  case JOB_COMPLETED:
  case JOB_REMOVING:   /* completed first, then chosen by a prune */
    crash_point ("finishing:recorded");
    return ENGINE_COMMIT;
  case JOB_RUNNING:
    return ENGINE_LEAVE;
  case JOB_FAILED:
  case JOB_CANCELLED:
    break;
  }
  return ENGINE_ABORT;
}

/* A disk failed, or the copies were stopped.  Stopping hub: the job stays
 * running for the next start, and so do its bitmaps.  Ended or deleted by
 * someone else: nothing to tell.  Otherwise the job is failed with the
 * disk's reason.  In the last two cases the new bitmaps go. */
static enum engine_verdict
on_fail (struct engine_session *s, int disk_index, const char *reason)
{
  struct task *t = task_of (s);
  struct hub_workers *w = t->hub->workers;
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  bool cancelled, stopping;

  {
    SCOPED_LOCK (&w->lock);
    cancelled = t->cancelled;
    stopping = w->stopping;
  }
  if (stopping || cancelled) {
    log_info ("backup %s: copies stopped (%s)", t->backup_id,
              stopping ? "the hub is stopping; its next start runs the job again"
                       : "the job was ended");
    return stopping ? ENGINE_LEAVE : ENGINE_ABORT;
  }
  if (hub_backup_end (t->hub, t->backup_id, JOB_FAILED, disk_index, reason, &job) == -1 &&
      error_category () != ERR_CONFLICT && error_category () != ERR_NOT_FOUND)
    log_error ("backup %s: recording the failure of disk %d: %s", t->backup_id,
               disk_index, error_message ());
  return ENGINE_ABORT;
}

static void
on_warn (struct engine_session *s, struct engine_session_disk *sd, const char *msg)
{
  if (strncmp (msg, "the audit ", 10) == 0) {
    log_warn ("backup %s disk %d: %s", task_of (s)->backup_id, sd->disk_index, msg);
    return;
  }
  log_warn ("backup %s disk %d: the superseded bitmap stays in %s (remove it with "
            "qemu-img bitmap --remove when convenient): %s", task_of (s)->backup_id,
            sd->disk_index, sd->d.source, msg);
}

/* The bitmaps are committed: the job is completed now. */
static void
on_finish (struct engine_session *s)
{
  struct task *t = task_of (s);
  CLEANUP_CAT_JOB struct cat_job job = { 0 };

  if (hub_backup_finish (t->hub, t->backup_id, &job) == 0)
    log_info ("backup %s completed by the hub", t->backup_id);
  else if (error_category () != ERR_CONFLICT)
    log_error ("backup %s: marking it completed: %s; its next start finishes it",
               t->backup_id, error_message ());
}

static const struct engine_session_ops worker_session_ops = {
  .disk_start = on_disk_start,
  .copy_again = on_copy_again,
  .complete_disk = on_complete,
  .audit_disk = on_audit,
  .disk_done = on_disk_done,
  .all_completed = on_all_completed,
  .fail = on_fail,
  .warn = on_warn,
  .finish = on_finish,
};

/* Fill t's disks from the catalog and the inventory and set up its
 * session.  Returns 0, or -1 with the error set: the job can't be run (the
 * caller fails it), or 1 when there is nothing to do (the job is no longer
 * a running or finishing hub job). */
static int
load_task (struct hub *hub, struct task *t)
{
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  CLEANUP_CAT_VM struct cat_vm vm = { 0 };
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  struct disk_task *disks = NULL;
  struct engine_session_disk *sdisks = NULL;
  int ret = -1;

  if (catalog_backup_get (hub->cat, t->backup_id, &job) == -1)
    return error_category () == ERR_NOT_FOUND ? 1 : -1;
  if (!job_status_active (job.status) || job.driver != DRIVER_HUB)
    return 1;
  if (catalog_vm_get (hub->cat, job.vm_name, &vm) == -1) {
    error_prefix ("reading the sources of VM '%s'", job.vm_name);
    return -1;
  }
  if (catalog_repo_get (hub->cat, job.repository_id, &repo) == -1)
    return -1;
  /* The VM's policy may ask for a change-tracking audit of each disk. */
  if (vm.policy) {
    CLEANUP_CAT_POLICY struct cat_policy pol = { 0 };
    if (catalog_policy_get (hub->cat, vm.policy, &pol) == 0 && pol.audit_percent > 0)
      t->audit_percent = (int) pol.audit_percent;
  }
  disks = calloc (job.n_disks, sizeof *disks);
  sdisks = calloc (job.n_disks, sizeof *sdisks);
  if ((disks == NULL || sdisks == NULL) && job.n_disks)
    goto oom;
  for (size_t i = 0; i < job.n_disks; i++) {
    const struct cat_disk *cd = &job.disks[i];
    struct disk_task *dt = &disks[i];
    struct engine_session_disk *sd = &sdisks[i];
    const char *source = NULL, *domain;

    for (size_t k = 0; k < vm.n_disks; k++)
      if (vm.disks[k].disk_index == cd->disk_index)
        source = vm.disks[k].source;
    /* One libvirt://DOMAIN source stands for all the domain's disks. */
    if (vm.n_disks == 1 && virt_source_parse (vm.disks[0].source, &domain))
      source = vm.disks[0].source;
    if (source && (dt->source = strdup (source)) == NULL)
      goto oom;
    if (cd->previous_change_id &&
        (dt->previous_change_id = strdup (cd->previous_change_id)) == NULL)
      goto oom;
    /* A full replaces the chain before it: that chain's bitmap goes too
     * once this job's disks are all recorded.  Only clean-up depends on
     * it.  (A finishing job is not yet the latest completed one.) */
    {
      CLEANUP_CAT_DISK struct cat_disk latest = { 0 };
      struct error_saved es;

      error_save (&es);
      if (catalog_changeid_get (hub->cat, job.vm_name, cd->disk_index, job.repository_id,
                                &latest) == 0 && latest.disk_change_id &&
          *latest.disk_change_id)
        dt->superseded_change_id = strdup (latest.disk_change_id);
      error_restore (&es);
    }
    sd->disk_index = cd->disk_index;
    sd->progress = &dt->progress;
    sd->opaque = dt;
    sd->d = (struct engine_backup_disk) {
      .source = dt->source, .tls_psk_file = hub_nbd_key_file (hub),
      .backup_id = t->backup_id, .previous_change_id = dt->previous_change_id,
      .superseded_change_id = dt->superseded_change_id,
      .target_has_backing = cd->backup_type == BACKUP_INCREMENTAL &&
                            cd->parent_disk_id > 0,
    };
    if (cd->status == DISK_COMPLETED) {
      sd->done_before = true;
      if (cd->disk_change_id &&
          (sd->result.change_id = strdup (cd->disk_change_id)) == NULL)
        goto oom;
      if (source == NULL)
        log_warn ("backup %s disk %d: no source in the inventory any more; its bitmaps "
                  "are left as they are", t->backup_id, cd->disk_index);
      continue;
    }
    if (cd->status != DISK_RUNNING && cd->status != DISK_PENDING) {
      error_set (ERR_INTERNAL, "disk %d is %s in a %s job", cd->disk_index,
                 disk_status_name (cd->status), job_status_name (job.status));
      goto out;
    }
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
    if ((dt->target_uri = hub_nbd_uri (hub, NULL, cd->nbd_export)) == NULL ||
        (dt->export_name = strdup (cd->nbd_export)) == NULL)
      goto oom;
    sd->d.target_uri = dt->target_uri;
    /* Hashes, their file next to the disk's image. */
    if (cd->qcow2_path && (dt->image = repo_abspath (repo.path, cd->qcow2_path)) != NULL) {
      CLEANUP_FREE char *folder = strdup (dt->image);
      dt->hashes = folder ? mf_map_new (cd->size_bytes, dirname (folder)) : NULL;
      if (dt->hashes == NULL)
        log_warn ("backup %s disk %d: no block hashes: %s", t->backup_id, cd->disk_index,
                  error_message ());
      sd->d.hashes = dt->hashes;
    }
    sd->audit_percent = t->audit_percent;
    sd->audit_seed = (uint64_t) clock_mono_ns () ^ (uint64_t) cd->disk_index;
  }
  {
    SCOPED_LOCK (&hub->workers->lock);
    t->disks = disks;
    t->sdisks = sdisks;
    t->n = job.n_disks;
    engine_session_init (&t->session, &worker_session_ops, t, sdisks, t->n,
                         WORKER_DISKS_PARALLEL);
    t->loaded = true;
    /* Ended or stopped while it was loading. */
    if (t->cancelled || hub->workers->stopping)
      engine_session_stop (&t->session, "the job was ended");
  }
  disks = NULL;
  sdisks = NULL;
  ret = 0;
  goto out;
 oom:
  error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
 out:
  for (size_t i = 0; disks && i < job.n_disks; i++) {
    free (disks[i].source);
    free (disks[i].target_uri);
    free (disks[i].export_name);
    free (disks[i].previous_change_id);
    free (disks[i].superseded_change_id);
    free (disks[i].image);
    mf_map_free (disks[i].hashes);
    if (sdisks)
      engine_disk_result_clear (&sdisks[i].result);
  }
  free (disks);
  free (sdisks);
  return ret;
}

/* A libvirt source: open the domain and begin its backup job, which
 * points the session's disks at the job's exports. */
static int
begin_libvirt (struct hub *hub, struct task *t, const char *domain)
{
  CLEANUP_FREE char *skipped = NULL, *note = NULL;

  t->vd = virt_open (hub->cfg.libvirt_uri, domain, &skipped);
  if (t->vd == NULL ||
      virt_session_begin (t->vd, &t->session, t->backup_id, false, &note) == -1)
    return -1;
  log_info ("backup %s: libvirt domain %s, backup job begun%s%s", t->backup_id, domain,
            skipped ? "; skipped " : "", skipped ? skipped : "");
  return 0;
}

/* Run one job to its end (or until the hub stops). */
static void
run_task (struct hub *hub, struct task *t)
{
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  const char *domain;
  int r = load_task (hub, t);

  if (r == 1)
    return;
  if (r == -1) {
    bool stopping;
    {
      SCOPED_LOCK (&hub->workers->lock);
      stopping = hub->workers->stopping || t->cancelled;
    }
    if (!stopping)
      hub_backup_end (hub, t->backup_id, JOB_FAILED, -1, error_message (), &job);
    return;
  }
  if (t->n > 0 && virt_source_parse (t->disks[0].source, &domain) &&
      begin_libvirt (hub, t, domain) == -1) {
    bool stopping;
    char why[1200];
    snprintf (why, sizeof why, "%s", error_message ());
    {
      SCOPED_LOCK (&hub->workers->lock);
      stopping = hub->workers->stopping || t->cancelled;
    }
    if (!stopping)
      hub_backup_end (hub, t->backup_id, JOB_FAILED, -1, why, &job);
    virt_close (t->vd);
    t->vd = NULL;
    return;
  }
  engine_session_run (&t->session);
  virt_close (t->vd);
  t->vd = NULL;
}

static void on_job_ended (struct hub *hub, const char *backup_id);
static void workers_queue_op (struct hub *hub, const char *key,
                              void (*fn) (struct hub *hub, const char *key));

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

    current_task = t;
    if (t->op) {
      bool again;
      do {
        t->op (hub, t->backup_id);
        pthread_mutex_lock (&w->lock);
        again = t->again && !w->stopping;
        t->again = false;
        pthread_mutex_unlock (&w->lock);
      } while (again);
    }
    else
      run_task (hub, t);
    current_task = NULL;

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
  hub->hooks.runnable = hub_workers_queue;
  hub->hooks.ended = on_job_ended;
  hub->hooks.run_op = workers_queue_op;
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
      if (t->loaded)
        engine_session_stop (&t->session, "the hub is stopping");
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

/* Append a task for key (a backup id, or an op's key) to the queue.
 * w->lock held. */
static void
enqueue (struct hub *hub, const char *key, void (*op) (struct hub *, const char *))
{
  struct hub_workers *w = hub->workers;
  struct task *t = calloc (1, sizeof *t), **tail;

  if (t != NULL)
    t->hub = hub;
  if (t == NULL || (t->backup_id = strdup (key)) == NULL) {
    free (t);
    log_error ("%s: out of memory queueing it; the next start runs it", key);
    return;
  }
  t->op = op;
  for (tail = &w->queue; *tail; tail = &(*tail)->next)
    ;
  *tail = t;
  pthread_cond_broadcast (&w->cond);
}

void
hub_workers_queue (struct hub *hub, const char *backup_id)
{
  struct hub_workers *w = hub->workers;

  if (w == NULL)
    return;
  SCOPED_LOCK (&w->lock);
  if (w->stopping || find_task (w->queue, backup_id) || find_task (w->running, backup_id))
    return;
  enqueue (hub, backup_id, NULL);
}

/* hub->hooks.run_op.  An op running now runs once more when it ends: it
 * may have been about to stop waiting for what just changed. */
static void
workers_queue_op (struct hub *hub, const char *key,
                  void (*fn) (struct hub *hub, const char *key))
{
  struct hub_workers *w = hub->workers;
  struct task *t;

  if (w == NULL)
    return;
  SCOPED_LOCK (&w->lock);
  if (w->stopping || find_task (w->queue, key))
    return;
  if ((t = find_task (w->running, key)) != NULL && t->op == fn) {
    t->again = true;
    return;
  }
  enqueue (hub, key, fn);
}

bool
hub_stopping (struct hub *hub)
{
  struct hub_workers *w = hub->workers;

  if (w == NULL)
    return false;
  SCOPED_LOCK (&w->lock);
  return w->stopping;
}

/* The job was ended or deleted by someone else: stop its copies. */
static void
workers_cancel (struct hub *hub, const char *backup_id)
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
    if (t->loaded)
      engine_session_stop (&t->session, "the job was ended");
  }
}

#define WORKER_WAIT_S 60

/* Wait (bounded) until no worker runs that job.  Never with hub->lock
 * held. */
static void
workers_wait (struct hub *hub, const char *backup_id)
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

/* hub->hooks.ended: stop the job's copies and wait for them, unless this
 * is the job's own worker ending it (its copies have stopped already). */
static void
on_job_ended (struct hub *hub, const char *backup_id)
{
  workers_cancel (hub, backup_id);
  if (current_task == NULL || strcmp (current_task->backup_id, backup_id) != 0)
    workers_wait (hub, backup_id);
}

bool
hub_backup_progress (struct hub *hub, const char *backup_id, int disk_index,
                     struct hub_progress *out)
{
  struct hub_workers *w = hub->workers;
  struct task *t;

  if (hub_agent_progress (hub, backup_id, disk_index, out))
    return true;
  if (w == NULL)
    return false;
  SCOPED_LOCK (&w->lock);
  t = find_task (w->running, backup_id);
  for (size_t i = 0; t && t->loaded && i < t->n; i++) {
    struct disk_task *dt = &t->disks[i];

    if (t->sdisks[i].disk_index != disk_index)
      continue;
    if (!dt->active)
      return false;
    out->bytes_done = atomic_load (&dt->progress.bytes_done);
    out->bytes_total = atomic_load (&dt->progress.bytes_total);
    out->rate_bytes_per_sec = engine_progress_rate (&dt->progress);
    return true;
  }
  return false;
}
