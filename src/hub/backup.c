/* hub/backup.c - the life of a backup job.
 *
 * STATE AND ORDER
 *
 * A job is "running" from the moment its rows exist until it is completed,
 * failed or cancelled; a hub-driven job is "finishing" between its last
 * disk's record and the removal of the superseded bitmaps at its sources
 * (hub/worker.c), and can then only be finished.  Each transition touches
 * three things that cannot share one transaction: the catalog, the
 * repository files and the storage daemon's exports.  They are ordered so
 * that a crash at any point leaves something the next start can recover
 * (hub/recovery.c):
 *
 *   start     prepare (read, unlocked) -> plan (read) -> record intents
 *             -> create images -> export -> insert rows (intents go)
 *   complete  remove export (flush) -> fsync + read-only -> record completed
 *   finish    (bitmaps committed by the worker) -> record completed
 *   end       record failed/cancelled -> drop exports -> delete files
 *   delete    delete rows -> delete files
 *
 * The hub lock serialises these transitions inside one hub, so that a plan
 * stays true until its insert.  It is never held while a start waits on a
 * source (a remote NBD server, libvirtd): what a start reads of its sources
 * it reads before taking the lock, each wait bounded, so one source that
 * never answers holds up only its own start.  The catalog re-checks what matters (no
 * running job in the context, parents still the latest completed disks) in
 * the insert's own transaction, so two hubs sharing a catalog stay safe too;
 * each job records the hub that runs it, and only that hub drops or
 * completes its exports (hub/identity.c).
 * Whoever runs jobs hears of them through hub->hooks, called by end and
 * delete once hub->lock is released.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "hub/hub-int.h"
#include "storage/qsd.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/crash.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"
#include "virt/virt.h"

void
hub_drop_disks (struct hub *hub, const char *repo_path,
                const struct cat_disk *disks, size_t n)
{
  /* Every manifest first (storage/repo.h): a crash part-way leaves images
   * without one, which the next start deletes.  A disk whose manifest
   * cannot go keeps its image too, for the retry. */
  CLEANUP_FREE bool *left = calloc (n ? n : 1, sizeof *left);

  for (size_t i = 0; i < n; i++)
    if (disks[i].qcow2_path && repo_remove_manifest (repo_path, disks[i].qcow2_path) == -1) {
      hub_leftover_add (hub, repo_path, &disks[i]);
      if (left)
        left[i] = true;
    }
  for (size_t i = 0; i < n; i++) {
    if (disks[i].nbd_export && qsd_export_remove (hub->qsd, disks[i].nbd_export) == -1)
      log_error ("dropping export of %s disk %d: %s", disks[i].backup_job_id,
                 disks[i].disk_index, error_message ());
    if (disks[i].qcow2_path && !(left && left[i]) &&
        repo_remove_image (repo_path, disks[i].qcow2_path) == -1)
      hub_leftover_add (hub, repo_path, &disks[i]);
  }
}

/* --- Start: plan -> materialise -> record ------------------------------
 *
 * struct start carries a backup from one step to the next.  prepare reads
 * the disks and the sources' sizes without the hub's lock; plan reads the
 * catalog and fills the job to record; materialise
 * makes its images and exports and, when it fails, removes what it made;
 * record inserts the rows, after which the job exists.  A failure of record
 * is undone by start_undo, so a failed start leaves no rows and no files. */
struct start {
  const struct hub_backup_request *req;
  const char *repo_id;
  struct cat_repository repo;
  struct cat_vm vm;          /* the disks; inline ones are borrowed from req */
  bool hub_driven;
  struct cat_disk *parents;  /* each disk's latest completed backup in the context */
  size_t n;
  int64_t *sizes;            /* each hub-driven source's size, or -1 */
  /* The job to record.  It owns id, context_id and each disk's qcow2_path,
   * nbd_export and context_id; its other strings point into req, vm or
   * now. */
  struct cat_job job;
  char now[32];
  char lease_until[32];      /* job.lease_expires_at, when it has a lease */
  size_t made, exported;     /* images created, exports added so far */
};

static void
start_clear (struct start *st)
{
  for (size_t i = 0; st->job.disks && i < st->n; i++) {
    free (st->job.disks[i].qcow2_path);
    free (st->job.disks[i].nbd_export);
    free (st->job.disks[i].context_id);   /* set by catalog_backup_insert */
  }
  free (st->job.disks);
  free (st->job.id);
  free (st->job.context_id);
  free (st->sizes);
  cat_disk_free_array (st->parents, st->parents ? st->n : 0);
  if (st->req->disks) {
    st->vm.vm_name = NULL;
    st->vm.disks = NULL;
    st->vm.n_disks = 0;
  }
  cat_vm_clear (&st->vm);
  cat_repository_clear (&st->repo);
}

/* An inventory whose one disk is a libvirt://DOMAIN source stands for
 * the domain's disks as they are now: replace it with one disk per
 * writable disk of the domain, in target order, each with that source and
 * its size.  Other inventories are left alone. */
static int
expand_libvirt (struct hub *hub, struct cat_vm *vm)
{
  struct virt_domain *vd;
  struct virt_disk *disks;
  struct cat_vm_disk *mine;
  CLEANUP_FREE char *skipped = NULL;
  const char *domain;
  size_t n;

  for (size_t i = 0; i < vm->n_disks; i++)
    if (virt_source_parse (vm->disks[i].source, &domain) && vm->n_disks > 1) {
      error_set (ERR_INVALID, "VM '%s': a libvirt:// source stands for all the domain's "
                 "disks and must be the VM's only disk", vm->vm_name);
      return -1;
    }
  if (vm->n_disks != 1 || !virt_source_parse (vm->disks[0].source, &domain))
    return 0;
  vd = virt_open (hub->cfg.libvirt_uri, domain, &skipped);
  if (vd == NULL) {
    char why[1100];
    snprintf (why, sizeof why, "%s", error_message ());
    /* An unknown domain is the inventory's fault: a bad request. */
    error_set (error_category () == ERR_NOT_FOUND ? ERR_INVALID : error_category (),
               "VM '%s': %s", vm->vm_name, why);
    return -1;
  }
  if (skipped)
    log_info ("VM '%s': domain %s: skipped %s", vm->vm_name, domain, skipped);
  disks = virt_disks (vd, &n);
  if (n == 0) {
    error_set (ERR_INVALID, "VM '%s': domain %s has no disk strata can back up%s%s%s",
               vm->vm_name, domain, skipped ? " (skipped: " : "", skipped ? skipped : "",
               skipped ? ")" : "");
    virt_close (vd);
    return -1;
  }
  mine = calloc (n, sizeof *mine);
  for (size_t i = 0; mine && i < n; i++) {
    mine[i] = (struct cat_vm_disk) { .disk_index = (int) i, .size_bytes = disks[i].size,
                                     .vmware_disk_key = -1, .unit_number = -1,
                                     .source = strdup (vm->disks[0].source) };
    if (mine[i].source == NULL) {
      for (size_t k = 0; k < i; k++)
        free (mine[k].source);
      free (mine);
      mine = NULL;
    }
  }
  virt_close (vd);
  if (mine == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "disks");
    return -1;
  }
  free (vm->disks[0].source);
  free (vm->disks);
  vm->disks = mine;
  vm->n_disks = n;
  return 0;
}

/* The VM's disks: inline (they replace the inventory's once the job
 * exists, keeping the VM's descriptive fields) or the inventory's. */
static int
plan_disks (struct hub *hub, struct start *st)
{
  const struct hub_backup_request *req = st->req;

  if (req->disks) {
    struct cat_vm old = { 0 };
    st->vm.vm_name = (char *) req->vm_name;
    st->vm.n_disks = req->n_disks;
    st->vm.disks = (struct cat_vm_disk *) req->disks;
    if (catalog_vm_get (hub->cat, req->vm_name, &old) == 0) {
      st->vm.vmware_vm_id = old.vmware_vm_id;  old.vmware_vm_id = NULL;
      st->vm.vm_path = old.vm_path;            old.vm_path = NULL;
      st->vm.vcenter_host = old.vcenter_host;  old.vcenter_host = NULL;
      st->vm.datacenter = old.datacenter;      old.datacenter = NULL;
    }
    cat_vm_clear (&old);
  }
  else if (catalog_vm_get (hub->cat, req->vm_name, &st->vm) == -1) {
    if (error_category () == ERR_NOT_FOUND)
      error_set (ERR_INVALID, "no disks known for VM '%s': PUT /api/v1/vms/{vm_name} "
                 "or pass \"disks\"", req->vm_name);
    return -1;
  }
  if (expand_libvirt (hub, &st->vm) == -1)
    return -1;
  st->n = st->vm.n_disks;
  if (st->n == 0) {
    error_set (ERR_INVALID, "no disks known for VM '%s'", req->vm_name);
    return -1;
  }
  return 0;
}

/* Who moves the data: the hub itself when every inventory disk has a
 * source it may read, an agent when none has.  Inline disks always mean an
 * agent, which sent them. */
static int
plan_driver (struct hub *hub, struct start *st)
{
  const struct hub_backup_request *req = st->req;
  enum job_driver driver = req->driver_given ? req->driver : DRIVER_AGENT;

  if (!req->driver_given && req->disks == NULL) {
    size_t with = 0;
    for (size_t i = 0; i < st->n; i++)
      with += st->vm.disks[i].source != NULL;
    if (with == st->n)
      driver = DRIVER_HUB;
    else if (with > 0) {
      error_set (ERR_INVALID, "VM '%s': %zu of its %zu disks have a source and the others "
                 "have none; give every disk a source for a backup the hub runs itself, "
                 "or none for an agent's backup", req->vm_name, with, st->n);
      return -1;
    }
  }
  st->hub_driven = driver == DRIVER_HUB;
  if (st->hub_driven && req->lease_seconds > 0) {
    error_set (ERR_INVALID, "VM '%s': lease_seconds is for a backup an agent copies "
               "(its progress reports renew it); the hub copies this one", req->vm_name);
    return -1;
  }
  for (size_t i = 0; st->hub_driven && i < st->n; i++) {
    const struct cat_vm_disk *vd = &st->vm.disks[i];
    if (vd->source == NULL || hub_source_check (vd->source) == -1 ||
        hub_source_allowed (hub, vd->source, true) == -1) {
      if (vd->source == NULL)
        error_set (ERR_INVALID, "disk %d has no source", vd->disk_index);
      error_prefix ("VM '%s' disk %d", req->vm_name, vd->disk_index);
      return -1;
    }
  }
  return 0;
}

/* What a start learns before it takes hub->lock, because it may wait on
 * the network or on a disk: the repository, the disks and who copies them
 * (a libvirt:// source asks libvirtd), and the size of each hub-driven
 * source (an nbd:// source that never answers costs HUB_SOURCE_TIMEOUT
 * seconds, and only to this start).  Reading only. */
static int
start_prepare (struct hub *hub, struct start *st)
{
  if (catalog_repo_get (hub->cat, st->repo_id, &st->repo) == -1 ||
      plan_disks (hub, st) == -1 || plan_driver (hub, st) == -1)
    return -1;
  st->sizes = malloc (st->n * sizeof *st->sizes);
  if (st->sizes == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < st->n; i++) {
    const struct cat_vm_disk *vd = &st->vm.disks[i];
    const char *domain;
    int64_t size;

    st->sizes[i] = -1;
    /* libvirt:// disks were sized by expand_libvirt.  An unreadable
     * source fails the job in the worker, with the reason on the record. */
    if (!st->hub_driven || virt_source_parse (vd->source, &domain))
      continue;
    if (engine_source_size (vd->source, HUB_SOURCE_TIMEOUT, &size) == 0 && size > 0 &&
        size <= HUB_MAX_DISK_SIZE)
      st->sizes[i] = size;
    else
      log_warn ("VM '%s' disk %d: source %s: %s", st->req->vm_name, vd->disk_index,
                vd->source, error_message ());
  }
  return 0;
}

/* Plan a start, reading only, with hub->lock held: each disk's parent (its
 * latest completed backup in the context, with no job running there), the
 * ids, and the rows to record.  Nothing to undo when it fails. */
static int
start_plan (struct hub *hub, struct start *st)
{
  const struct hub_backup_request *req = st->req;
  bool full = req->backup_type == BACKUP_FULL, running;
  struct cat_context ctx = { 0 };
  CLEANUP_FREE int *indexes = NULL;
  struct cat_job *job = &st->job;

  indexes = malloc (st->n * sizeof *indexes);
  st->parents = calloc (st->n, sizeof *st->parents);
  job->disks = calloc (st->n, sizeof *job->disks);
  if (!indexes || !st->parents || !job->disks) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < st->n; i++)
    indexes[i] = st->vm.disks[i].disk_index;
  if (catalog_backup_plan (hub->cat, req->vm_name, st->repo_id, st->n, indexes,
                           st->parents, &running) == -1)
    return -1;
  if (running) {
    error_set (ERR_CONFLICT, "a backup of VM '%s' to repository '%s' is already running",
               req->vm_name, st->repo_id);
    return -1;
  }
  if (catalog_context_find (hub->cat, req->vm_name, st->repo_id, &ctx) == 0) {
    job->context_id = ctx.context_id;
    ctx.context_id = NULL;
  }
  else if (error_category () == ERR_NOT_FOUND)
    job->context_id = id_new ("ctx-backup", req->vm_name);
  cat_context_clear (&ctx);
  if (job->context_id == NULL || (job->id = id_new ("backup", req->vm_name)) == NULL)
    return -1;

  id_now (st->now, sizeof st->now);
  job->vm_name = (char *) req->vm_name;
  job->repository_id = (char *) st->repo_id;
  job->backup_type = req->backup_type;
  job->status = JOB_RUNNING;
  job->driver = st->hub_driven ? DRIVER_HUB : DRIVER_AGENT;
  job->created_at = st->now;
  job->owner_hub = hub->hub_id;
  job->lease_seconds = req->lease_seconds;
  if (req->lease_seconds > 0) {
    hub_lease_until (req->lease_seconds, st->lease_until, sizeof st->lease_until);
    job->lease_expires_at = st->lease_until;
  }
  job->n_disks = st->n;
  for (size_t i = 0; i < st->n; i++) {
    struct cat_disk *d = &job->disks[i];
    const struct cat_vm_disk *vd = &st->vm.disks[i];
    bool incremental = !full && st->parents[i].id > 0;

    d->disk_index = vd->disk_index;
    /* The image takes the source's size, when it could be read. */
    d->size_bytes = st->sizes[i] >= 0 ? st->sizes[i] : vd->size_bytes;
    d->vmware_disk_key = vd->vmware_disk_key;
    d->unit_number = vd->unit_number;
    d->backup_type = incremental ? BACKUP_INCREMENTAL : BACKUP_FULL;
    d->parent_disk_id = incremental ? st->parents[i].id : -1;
    /* The catalog's reason when it refused the chain (it failed
     * verification), else there is nothing to build on. */
    d->full_reason = (char *) (full || incremental ? NULL
                               : st->parents[i].full_reason ? st->parents[i].full_reason
                               : "no completed backup of this disk in the context to build on");
    d->status = DISK_RUNNING;
    d->created_at = st->now;
    d->qcow2_path = repo_disk_relpath (job->context_id, d->disk_index, job->id);
    if (d->qcow2_path == NULL)
      return -1;
  }
  return 0;
}

/* Remove the exports and images materialise made (st->exported,
 * st->made), keeping the error. */
static void
start_undo (struct hub *hub, struct start *st)
{
  struct error_saved saved;

  error_save (&saved);
  for (size_t i = 0; i < st->exported; i++)
    qsd_export_remove (hub->qsd, st->job.disks[i].nbd_export);
  for (size_t i = 0; i < st->made; i++)
    hub_file_undo (hub, &st->repo, st->job.disks[i].qcow2_path);
  st->exported = st->made = 0;
  error_restore (&saved);
}

/* Make the planned images (an incremental's backed by its parent's file),
 * each under this hub's intent (hub_file_intend), then export each as a
 * writable NBD target.  Images come first: a crash from here on leaves
 * only files no row owns, under this hub's intents, which its next start
 * deletes (and no other hub's does).  On failure everything made here is
 * removed again. */
static int
start_materialise (struct hub *hub, struct start *st)
{
  for (st->made = 0; st->made < st->n; st->made++) {
    struct cat_disk *d = &st->job.disks[st->made];
    const char *backing = d->parent_disk_id > 0 ? st->parents[st->made].qcow2_path : NULL;
    if (hub_file_intend (hub, &st->repo, d->qcow2_path, st->job.id) == -1)
      goto undo;
    if (repo_create_image (st->repo.path, d->qcow2_path, d->size_bytes, backing) == -1) {
      error_prefix ("creating the image of disk %d", d->disk_index);
      hub_file_undo (hub, &st->repo, d->qcow2_path);
      goto undo;
    }
  }
  crash_point ("start:images");
  for (st->exported = 0; st->exported < st->n; st->exported++) {
    struct cat_disk *d = &st->job.disks[st->exported];
    CLEANUP_FREE char *path = repo_abspath (st->repo.path, d->qcow2_path);
    d->nbd_export = id_export_name ();
    if (path == NULL || d->nbd_export == NULL ||
        qsd_export_add (hub->qsd, d->nbd_export, path, true) == -1) {
      error_prefix ("exporting disk %d", d->disk_index);
      goto undo;
    }
  }
  crash_point ("start:exports");
  return 0;
 undo:
  start_undo (hub, st);
  return -1;
}

/* Insert the job's rows; the catalog checks again, in the insert's own
 * transaction, that no job is running in the context and that the parents
 * are still the latest completed disks.  Then inline disks become the VM's
 * inventory (a failure there is only logged: the job exists). */
static int
start_record (struct hub *hub, struct start *st)
{
  if (catalog_backup_insert (hub->cat, &st->job, &st->vm) == -1)
    return -1;
  crash_point ("start:recorded");
  if (st->req->disks) {
    bool created;
    if (catalog_vm_put (hub->cat, &st->vm, &created) == -1)
      log_warn ("backup %s: updating the inventory of VM '%s': %s", st->job.id,
                st->req->vm_name, error_message ());
  }
  return 0;
}

/* The start's transition, with hub->lock held: plan, materialise,
 * record.  Files an earlier end or delete could not remove are tried
 * again first (hub/leftover.c). */
static int
start_locked (struct hub *hub, struct start *st, struct cat_job *out)
{
  const struct hub_backup_request *req = st->req;

  hub_leftover_retry (hub);
  {
    CLEANUP_CAT_CONTEXT struct cat_context ctx = { 0 };
    struct error_saved es;
    error_save (&es);
    if (catalog_context_find (hub->cat, req->vm_name, st->repo_id, &ctx) == 0)
      hub_merge_wait (hub, ctx.context_id);
    error_restore (&es);
  }
  if (start_plan (hub, st) == -1 || start_materialise (hub, st) == -1)
    return -1;
  if (start_record (hub, st) == -1) {
    start_undo (hub, st);
    return -1;
  }
  /* Its NBD key opens its targets from now on. */
  hub_nbd_keys_update (hub);
  log_info ("backup %s of VM '%s' started (%s, %zu disk(s)%s)", st->job.id, req->vm_name,
            backup_type_name (req->backup_type), st->n,
            st->hub_driven ? ", copied by the hub" : "");
  /* Read the job before the workers can move it on. */
  int ret = catalog_backup_get (hub->cat, st->job.id, out);
  if (st->hub_driven && hub->hooks.runnable)
    hub->hooks.runnable (hub, st->job.id);
  if (req->lease_seconds > 0)
    hub_lease_poke (hub);
  return ret;
}

int
hub_backup_start (struct hub *hub, const struct hub_backup_request *req,
                  struct cat_job *out)
{
  struct start st = {
    .req = req,
    .repo_id = req->repository_id ? req->repository_id : "default",
  };
  int ret = -1;

  if (start_prepare (hub, &st) == 0) {
    SCOPED_LOCK (&hub->lock);
    ret = start_locked (hub, &st, out);
  }
  start_clear (&st);
  return ret;
}

const struct cat_disk *
hub_job_disk (const struct cat_job *job, int disk_index)
{
  for (size_t i = 0; i < job->n_disks; i++)
    if (job->disks[i].disk_index == disk_index)
      return &job->disks[i];
  return NULL;
}

static bool
same_change_id (const char *a, const char *b)
{
  if (a == NULL || b == NULL)
    return a == b;
  return strcmp (a, b) == 0;
}

int
hub_backup_complete (struct hub *hub, enum job_driver by, const char *backup_id,
                     int disk_index, const char *change_id, int64_t bytes_transferred,
                     int64_t bytes_zeroed, const char *full_reason, struct cat_job *out)
{
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  const struct cat_disk *d;
  char now[32];

  SCOPED_LOCK (&hub->lock);

  if (catalog_backup_get (hub->cat, backup_id, &job) == -1)
    return -1;
  d = hub_job_disk (&job, disk_index);
  if (d == NULL) {
    error_set (ERR_NOT_FOUND, "backup %s has no disk %d", backup_id, disk_index);
    return -1;
  }
  if (job.driver != by) {
    error_set (ERR_CONFLICT, "backup %s is %s: %s", backup_id,
               job.driver == DRIVER_HUB ? "the hub's own" : "an agent's",
               job.driver == DRIVER_HUB ? "the hub's workers complete its disks"
                                        : "its agent completes its disks");
    return -1;
  }
  if (d->status == DISK_COMPLETED) {
    /* A repeat of an accepted call is answered the same way again. */
    if (same_change_id (d->disk_change_id, change_id)) {
      *out = job;
      job = (struct cat_job) { 0 };
      return 0;
    }
    error_set (ERR_CONFLICT, "disk %d of backup %s was already completed with "
               "change id '%s'", disk_index, backup_id,
               d->disk_change_id ? d->disk_change_id : "");
    return -1;
  }
  if (job.status != JOB_RUNNING) {
    error_set (ERR_CONFLICT, "backup %s is %s, not running", backup_id,
               job_status_name (job.status));
    return -1;
  }
  if (hub_job_mine (hub, &job) == -1)
    return -1;
  if (d->status != DISK_RUNNING && d->status != DISK_PENDING) {
    error_set (ERR_CONFLICT, "disk %d of backup %s is %s", disk_index, backup_id,
               disk_status_name (d->status));
    return -1;
  }
  if (catalog_repo_get (hub->cat, job.repository_id, &repo) == -1)
    return -1;

  /* Durability before acknowledgement: closing the export flushes qemu's
   * cache into the file, fsync makes it stable, and only then is the disk
   * recorded completed.  The file is made read-only after that, so that a
   * crash in between leaves a running disk whose file can still be
   * exported for writing (start-up seals completed files that missed it). */
  if (d->nbd_export && qsd_export_remove (hub->qsd, d->nbd_export) == -1) {
    error_prefix ("flushing disk %d", disk_index);
    return -1;
  }
  if (repo_sync_image (repo.path, d->qcow2_path) == -1)
    return -1;
  id_now (now, sizeof now);
  if (hub_manifest_complete (repo.path, &job, d, change_id, bytes_transferred,
                             full_reason, now) == -1)
    return -1;
  crash_point ("complete:synced");
  if (catalog_disk_complete (hub->cat, backup_id, disk_index, change_id,
                             bytes_transferred, full_reason, out) == -1)
    return -1;
  crash_point ("complete:recorded");
  if (out->status != JOB_RUNNING)
    hub_nbd_keys_update (hub);
  hub_progress_forget (hub, backup_id, disk_index);
  hub_metrics_disk_copied (bytes_transferred, bytes_zeroed);
  if (repo_seal_image (repo.path, d->qcow2_path) == -1)
    log_warn ("backup %s disk %d: %s", backup_id, disk_index, error_message ());
  log_info ("backup %s disk %d completed (%s)%s", backup_id, disk_index,
            change_id ? change_id : "no change id",
            out->status == JOB_COMPLETED ? "; job completed"
            : out->status == JOB_FINISHING ? "; job finishing" : "");
  if (out->status == JOB_COMPLETED) {
    hub_metrics_job_ended (out);
    hub_usage_changed (hub);
    hub_verify_after_backup (hub, out);
    hub_prune_after_backup (hub, out->context_id);
  }
  return 0;
}

/* Tell the worker pool that these jobs ended or are gone, without
 * hub->lock: it stops their copies and returns once they have stopped, so
 * that the sources are free again when the caller hears of it. */
static void
jobs_ended (struct hub *hub, char *const *ids)
{
  for (size_t i = 0; ids && ids[i]; i++) {
    hub_progress_forget (hub, ids[i], -1);
    if (hub->hooks.ended)
      hub->hooks.ended (hub, ids[i]);
  }
}

/* hub_backup_end with hub->lock held. */
static int
backup_end_locked (struct hub *hub, const char *backup_id, enum job_status status,
                   int disk_index, const char *error, struct cat_job *out)
{
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  CLEANUP_CAT_DISK_LIST struct cat_disk_list dropped = { 0 };

  if (catalog_backup_get (hub->cat, backup_id, &job) == -1)
    return -1;
  if (disk_index >= 0 && hub_job_disk (&job, disk_index) == NULL) {
    error_set (ERR_NOT_FOUND, "backup %s has no disk %d", backup_id, disk_index);
    return -1;
  }
  /* The catalog refuses a job that is not running, saying why; the
   * exports of a running one are its hub's to drop. */
  if (job.status == JOB_RUNNING && hub_job_mine (hub, &job) == -1)
    return -1;
  if (catalog_repo_get (hub->cat, job.repository_id, &repo) == -1 ||
      catalog_backup_end (hub->cat, backup_id, status, disk_index, error,
                          &dropped.v, &dropped.n) == -1)
    return -1;
  crash_point ("end:recorded");
  hub_nbd_keys_update (hub);
  hub_drop_disks (hub, repo.path, dropped.v, dropped.n);
  hub_usage_changed (hub);
  hub_prune_wake (hub, job.context_id);
  log_info ("backup %s %s%s%s", backup_id, job_status_name (status), error ? ": " : "",
            error ? error : "");
  if (catalog_backup_get (hub->cat, backup_id, out) == -1)
    return -1;
  hub_metrics_job_ended (out);
  return 0;
}

int
hub_backup_end (struct hub *hub, const char *backup_id, enum job_status status,
                int disk_index, const char *error, struct cat_job *out)
{
  int ret;

  {
    SCOPED_LOCK (&hub->lock);
    ret = backup_end_locked (hub, backup_id, status, disk_index, error, out);
  }
  if (ret == 0) {
    char *ids[] = { (char *) backup_id, NULL };
    jobs_ended (hub, ids);
  }
  return ret;
}

int
hub_backup_end_lapsed (struct hub *hub, const char *backup_id, const char *now,
                       bool *ended)
{
  CLEANUP_CAT_JOB struct cat_job job = { 0 }, out = { 0 };
  char why[128], renewed[32];
  time_t until;
  int ret;

  *ended = false;
  {
    SCOPED_LOCK (&hub->lock);
    if (catalog_backup_get (hub->cat, backup_id, &job) == -1)
      return error_category () == ERR_NOT_FOUND ? 0 : -1;
    if (job.status != JOB_RUNNING || job.lease_expires_at == NULL ||
        strcmp (job.lease_expires_at, now) >= 0)
      return 0;
    /* The last renewal was one term before the lapse. */
    if (id_time_parse (job.lease_expires_at, &until) == 0)
      id_time_format (until - (time_t) job.lease_seconds, renewed, sizeof renewed);
    else
      snprintf (renewed, sizeof renewed, "?");
    snprintf (why, sizeof why, "the agent stopped renewing its lease at %s (a lease of "
              "%lld s)", renewed, (long long) job.lease_seconds);
    ret = backup_end_locked (hub, backup_id, JOB_FAILED, -1, why, &out);
  }
  if (ret == 0) {
    char *ids[] = { (char *) backup_id, NULL };
    jobs_ended (hub, ids);
    *ended = true;
  }
  return ret;
}

int
hub_change_ids_live (struct hub *hub, size_t n, const char *const *names, bool *live)
{
  return catalog_change_ids_live (hub->cat, n, names, live);
}

int
hub_backup_finish (struct hub *hub, const char *backup_id, struct cat_job *out)
{
  SCOPED_LOCK (&hub->lock);

  if (catalog_backup_finish (hub->cat, backup_id, out) == -1)
    return -1;
  crash_point ("finish:recorded");
  hub_metrics_job_ended (out);
  hub_usage_changed (hub);
  hub_verify_after_backup (hub, out);
  hub_prune_after_backup (hub, out->context_id);
  return 0;
}

int
hub_backup_protect (struct hub *hub, const char *backup_id, bool on, struct cat_job *out)
{
  SCOPED_LOCK (&hub->lock);

  if (catalog_backup_protect (hub->cat, backup_id, on) == -1)
    return -1;
  log_info ("backup %s %s", backup_id, on ? "protected" : "no longer protected");
  return catalog_backup_get (hub->cat, backup_id, out);
}

/* The distinct job ids of a set of deleted disk rows, as a NULL-terminated
 * vector (caller frees). */
static char **
job_ids_of (const struct cat_disk *disks, size_t n)
{
  char **v = calloc (n + 1, sizeof *v);
  size_t k = 0;

  if (v == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    bool seen = false;
    for (size_t j = 0; j < k && !seen; j++)
      seen = strcmp (v[j], disks[i].backup_job_id) == 0;
    if (!seen && (v[k++] = strdup (disks[i].backup_job_id)) == NULL) {
      error_set_errno (ERR_INTERNAL, errno, "out of memory");
      for (size_t j = 0; j < k - 1; j++)
        free (v[j]);
      free (v);
      return NULL;
    }
  }
  return v;
}

int
hub_backup_delete (struct hub *hub, const char *backup_id, bool cascade,
                   char ***deleted_ids)
{
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  CLEANUP_CAT_DISK_LIST struct cat_disk_list deleted = { 0 };

  SCOPED_LOCK (&hub->lock);

  if (catalog_backup_get (hub->cat, backup_id, &job) == -1 ||
      catalog_repo_get (hub->cat, job.repository_id, &repo) == -1)
    return -1;
  hub_merge_wait (hub, job.context_id);
  /* The catalog's plan and delete refuse a running or finishing job,
   * saying why.  An open restore export must not lose an image of its
   * chain: check the exact set of jobs the catalog's delete would remove. */
  if (hub->restores) {
    CLEANUP_STRV char **doomed = NULL;
    if (catalog_backup_delete_plan (hub->cat, backup_id, cascade, &doomed) == -1 ||
        hub_restores_check_jobs (hub, doomed) == -1)
      return -1;
  }
  if (catalog_backup_delete (hub->cat, backup_id, cascade, &deleted.v, &deleted.n) == -1)
    return -1;
  crash_point ("delete:recorded");
  hub_prune_wake (hub, job.context_id);
  *deleted_ids = job_ids_of (deleted.v, deleted.n);
  hub_drop_disks (hub, repo.path, deleted.v, deleted.n);
  hub_usage_changed (hub);
  if (*deleted_ids == NULL)
    return -1;
  log_info ("deleted backup %s%s", backup_id,
            deleted.n && cascade ? " and its dependents" : "");
  return 0;
}

/* A forced delete drops the exports of the context's active job: refuse it
 * when another hub runs that job (ERR_CONFLICT naming the hub). */
static int
context_jobs_mine (struct hub *hub, const struct cat_context *ctx)
{
  static const enum job_status states[] = { JOB_RUNNING, JOB_FINISHING };

  for (size_t s = 0; s < sizeof states / sizeof states[0]; s++) {
    struct cat_job_filter f = { .vm_name = ctx->vm_name, .repository_id = ctx->repository_id,
                                .by_status = true, .status = states[s] };
    CLEANUP_CAT_JOB_LIST struct cat_job_list jobs = { 0 };
    int64_t total;

    if (catalog_backup_list (hub->cat, &f, &jobs.v, &jobs.n, &total) == -1)
      return -1;
    for (size_t i = 0; i < jobs.n; i++)
      if (hub_job_mine (hub, &jobs.v[i]) == -1)
        return -1;
  }
  return 0;
}

/* hub_context_delete with hub->lock held. */
static int
context_delete_locked (struct hub *hub, const char *context_id, bool force,
                       char ***deleted_ids)
{
  CLEANUP_CAT_CONTEXT struct cat_context ctx = { 0 };
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  CLEANUP_CAT_DISK_LIST struct cat_disk_list deleted = { 0 };

  if (catalog_context_get (hub->cat, context_id, &ctx) == -1)
    return -1;
  hub_merge_wait (hub, context_id);
  if (catalog_repo_get (hub->cat, ctx.repository_id, &repo) == -1 ||
      hub_restores_check_context (hub, context_id) == -1)
    return -1;
  if (hub_verifying (hub, context_id)) {
    error_set (ERR_CONFLICT, "a verify task reads context %s; delete it once the task "
               "has ended", context_id);
    return -1;
  }
  if (force && context_jobs_mine (hub, &ctx) == -1)
    return -1;
  /* The folder is retired before the rows go (storage/repo.h), and comes
   * back if the catalog refuses. */
  if (repo_retire_context (repo.path, context_id) == -1)
    return -1;
  crash_point ("context-delete:retired");
  if (catalog_context_delete (hub->cat, context_id, force, &deleted.v, &deleted.n) == -1) {
    struct error_saved es;
    error_save (&es);
    if (repo_unretire_context (repo.path, context_id) == -1)
      log_error ("context %s: %s (the next start renames it back)", context_id,
                 error_message ());
    error_restore (&es);
    return -1;
  }
  crash_point ("context-delete:recorded");
  if (force)
    hub_nbd_keys_update (hub);
  *deleted_ids = job_ids_of (deleted.v, deleted.n);
  hub_drop_disks (hub, repo.path, deleted.v, deleted.n);
  if (repo_remove_context (repo.path, context_id) == -1)
    log_error ("%s", error_message ());
  hub_usage_changed (hub);
  if (*deleted_ids == NULL)
    return -1;
  log_info ("deleted context %s (VM '%s', repository %s)", context_id, ctx.vm_name,
            ctx.repository_id);
  return 0;
}

int
hub_context_delete (struct hub *hub, const char *context_id, bool force,
                    char ***deleted_ids)
{
  int ret;

  {
    SCOPED_LOCK (&hub->lock);
    ret = context_delete_locked (hub, context_id, force, deleted_ids);
  }
  /* force: a hub-driven running job's copies stop. */
  if (ret == 0)
    jobs_ended (hub, *deleted_ids);
  return ret;
}
