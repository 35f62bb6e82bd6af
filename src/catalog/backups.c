/* catalog/backups.c - backup contexts and backups: planning and
 * recording a backup job and its disks, finishing, ending, listing,
 * protecting and deleting jobs (with the delete plan of a cascade), and
 * the change id of a VM disk's latest backup.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/core-int.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/state.h"

/* ------------------------------------------------------------------------
 * Contexts
 */

int
catalog_context_get (struct catalog *cat, const char *id, struct cat_context *out)
{
  if (id == NULL || out == NULL)
    return core_missing ("context id");
  return core_read_one (cat, &core_context_kind, out, "backup context",
                   CONTEXT_SELECT " WHERE context_id = ?", "s", id, NULL);
}

int
catalog_context_find (struct catalog *cat, const char *vm_name,
                      const char *repository_id, struct cat_context *out)
{
  if (vm_name == NULL || repository_id == NULL || out == NULL)
    return core_missing ("vm_name and repository_id");
  return core_read_one (cat, &core_context_kind, out, "VM",
                   CONTEXT_SELECT " WHERE vm_name = ? AND repository_id = ?",
                  "ss", vm_name, repository_id);
}

/* The contexts of one VM or of all, by VM name then repository. */
int
catalog_context_list (struct catalog *cat, const char *vm_name,
                      struct cat_context **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return core_missing ("output array");
  return core_read_all (cat, &core_context_kind, (void **) out, n,
                   CONTEXT_SELECT " WHERE ?1 IS NULL OR vm_name = ?1"
                   " ORDER BY vm_name, repository_id", "s", vm_name);
}

/* The active job of a context (job_status_active: running or
 * finishing): 1 and *id, 0 when there is none, -1 on error. */
static int
active_job (struct catalog *cat, const char *ctx, char **id)
{
  return db_text (cat, id, "SELECT id FROM backup_jobs WHERE vm_backup_context_id = ?"
                  " AND status IN (?, ?)", "sss", ctx, job_status_name (JOB_RUNNING),
                  job_status_name (JOB_FINISHING));
}

/* Delete a context after collecting its disk rows for the caller: the
 * disks newest first, then the context, whose cascade takes the jobs. */
static int
context_delete_tx (struct catalog *cat, const char *id, bool force,
                   struct cat_disk **disks, size_t *n)
{
  CLEANUP_FREE char *running = NULL, *removing = NULL;
  int f;

  if (core_must_exist (cat, "SELECT 1 FROM vm_backup_contexts WHERE context_id = ?", id,
                  "backup context") == -1)
    return -1;
  /* Even forced: a prune task owns those rows and files until it ends. */
  if ((f = db_text (cat, &removing, "SELECT id FROM backup_jobs"
                    " WHERE vm_backup_context_id = ? AND status = ? ORDER BY id LIMIT 1",
                    "ss", id, job_status_name (JOB_REMOVING))) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "backup %s of context %s is being removed by a prune task;"
                 " wait until the task ends", removing, id);
    return -1;
  }
  if (!force && (f = active_job (cat, id, &running)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "backup %s of context %s is running", running, id);
    return -1;
  }
  if (core_disks_query (cat, DISK_SELECT DISK_FROM " WHERE d.vm_backup_context_id = ?"
                   " ORDER BY d.id", id, disks, n) == -1)
    return -1;
  if (core_disks_delete (cat, *disks, *n) == -1 ||
      db_exec (cat, "DELETE FROM vm_backup_contexts WHERE context_id = ?", "s", id) == -1) {
    error_prefix ("deleting backup context %s", id);
    return -1;
  }
  return 0;
}

int
catalog_context_delete (struct catalog *cat, const char *id, bool force,
                        struct cat_disk **disks, size_t *n_disks)
{
  CLEANUP_CAT_DISK_LIST struct cat_disk_list l = { 0 };

  if (id == NULL)
    return core_missing ("context id");
  if (disks == NULL || n_disks == NULL)
    return core_missing ("output array");
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true, context_delete_tx (cat, id, force, &l.v, &l.n),
              cat_disk_list_clear (&l)) == -1)
    return -1;
  core_disks_hand_over (&l, disks, n_disks);
  return 0;
}

/* ------------------------------------------------------------------------
 * Backups
 */

/* The newest corrupt row of the chain that ends in disk row id (the row
 * itself, its parent, and theirs).  The anchor selects the column, not
 * the parameter, so that the CTE's column has the column's type. */
#define CORRUPT_IN_CHAIN \
  "WITH RECURSIVE chain (id) AS (" \
  "  SELECT id FROM backup_disks WHERE id = ?1" \
  "  UNION ALL" \
  "  SELECT d.parent_disk_id FROM backup_disks d JOIN chain ON d.id = chain.id" \
  "  WHERE d.parent_disk_id IS NOT NULL)" \
  " SELECT d.backup_job_id, d.disk_index, d.verify_error FROM backup_disks d" \
  " JOIN chain ON d.id = chain.id WHERE d.verify_state = ?2 ORDER BY d.id DESC LIMIT 1"

/* THE parent rule of verification (catalog.h, catalog_backup_plan): a
 * row whose chain holds a corrupt row is no parent.  1 and *reason (the
 * new full's full_reason, malloc'd) when the chain of disk row id holds
 * one, 0 when not, -1 on error. */
static int
chain_corrupt (struct catalog *cat, int64_t id, char **reason)
{
  CLEANUP_STMT struct db_stmt *st =
    db_prepare (cat, CORRUPT_IN_CHAIN, "Is", id, verify_state_name (VERIFY_CORRUPT));
  struct row row = { st, false, false };
  const char *job, *error;
  int disk_index, r;

  if (st == NULL)
    return -1;
  if ((r = db_step (st)) != 1)
    return r;
  job = core_row_peek (&row, 0);
  disk_index = (int) core_row_int (&row, 1);
  error = core_row_peek (&row, 2);
  if (core_row_done (&row) == -1)
    return -1;
  if (asprintf (reason, "the latest point's chain failed verification (backup %s disk %d%s%s)",
                job ? job : "?", disk_index, error ? ": " : "", error ? error : "") == -1) {
    catalog_oom ();
    return -1;
  }
  return 1;
}

/* Fill parents[] with the latest completed disk of each index, unless its
 * chain failed verification (then only the reason), and say whether a job
 * is active.  With no context yet there is nothing to find. */
static int
backup_plan_tx (struct catalog *cat, const char *vm_name, const char *repository_id,
                size_t n, const int *disk_indexes, struct cat_disk *parents,
                bool *running)
{
  CLEANUP_FREE char *ctx = NULL, *active = NULL;
  char *reason = NULL;
  int f;

  *running = false;
  f = db_text (cat, &ctx, "SELECT context_id FROM vm_backup_contexts"
               " WHERE vm_name = ? AND repository_id = ?", "ss", vm_name, repository_id);
  if (f != 1)
    return f;                   /* no context: no parents, nothing running */
  if ((f = active_job (cat, ctx, &active)) == -1)
    return -1;
  *running = f == 1;
  for (size_t i = 0; i < n; i++) {
    cat_disk_clear (&parents[i]);       /* what a failed attempt read */
    if ((f = core_latest_disk (cat, ctx, disk_indexes[i], &parents[i])) != 1) {
      if (f == -1)
        return -1;
      continue;
    }
    if ((f = chain_corrupt (cat, parents[i].id, &reason)) == -1)
      return -1;
    if (f == 1) {
      cat_disk_clear (&parents[i]);
      parents[i].full_reason = reason;
    }
  }
  return 0;
}

int
catalog_backup_plan (struct catalog *cat, const char *vm_name,
                     const char *repository_id, size_t n, const int *disk_indexes,
                     struct cat_disk *parents, bool *running)
{
  CLEANUP_CAT_DISK_LIST struct cat_disk_list tmp = { NULL, n };
  bool run = false;

  if (vm_name == NULL || repository_id == NULL)
    return core_missing ("vm_name and repository_id");
  if (n > 0 && (disk_indexes == NULL || parents == NULL))
    return core_missing ("disk index list");
  if (running == NULL)
    return core_missing ("running flag");
  /* A scratch array, so that parents[] is written only on success. */
  if ((tmp.v = calloc (n ? n : 1, sizeof *tmp.v)) == NULL) {
    catalog_oom ();
    return -1;
  }
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, false, backup_plan_tx (cat, vm_name, repository_id, n, disk_indexes,
                                          tmp.v, &run), (void) 0) == -1)
    return -1;
  memcpy (parents, tmp.v, n * sizeof *tmp.v);
  tmp.n = 0;                    /* its rows are parents' now */
  *running = run;
  return 0;
}

/* Check a new job's disks against the contract before touching the
 * database: ERR_INVALID for what no state of the catalog could accept. */
static int
backup_insert_check (const struct cat_job *job)
{
  if (job->n_disks == 0)
    return catalog_fail (ERR_INVALID, "backup %s has no disks", job->id);
  if (job->context_id && !id_valid (job->context_id))
    return catalog_fail (ERR_INVALID, "context id \"%s\" is not a valid id",
                         job->context_id);
  for (size_t i = 0; i < job->n_disks; i++) {
    const struct cat_disk *d = &job->disks[i];
    bool full = d->backup_type == BACKUP_FULL;

    if (full && d->parent_disk_id >= 0)
      return catalog_fail (ERR_INVALID, "disk %d: a full backup has no parent disk",
                           d->disk_index);
    if (!full && d->parent_disk_id < 0)
      return catalog_fail (ERR_INVALID, "disk %d: an incremental backup needs a parent disk",
                           d->disk_index);
  }
  return 0;
}

/* Find or create the context, refuse a second active job, check each
 * parent against the latest completed disk, then write the job, its disks
 * and the count: all inside the caller's write transaction, so that no
 * other writer, in this process or another, comes between the checks and
 * the writes.  On success disk_ids[i] is the new rows' ids, and ctx_ids
 * (n_disks + 1 slots) holds a copy of the context id for the job and for
 * each disk: made before COMMIT, so that a job that was committed is always
 * handed back complete. */
static int
backup_insert_tx (struct catalog *cat, const struct cat_job *job, const struct cat_vm *vm,
                  const char *now, char **ctx_ids, int64_t *disk_ids)
{
  CLEANUP_FREE char *ctx = NULL, *running = NULL, *reason = NULL;
  int64_t latest;
  int f;

  if (core_must_exist (cat, "SELECT 1 FROM backup_repositories WHERE id = ?",
                  job->repository_id, "repository") == -1)
    return -1;
  f = db_text (cat, &ctx, "SELECT context_id FROM vm_backup_contexts"
               " WHERE vm_name = ? AND repository_id = ?", "ss",
               job->vm_name, job->repository_id);
  if (f == -1)
    return -1;
  /* The caller may have chosen the context's id already (its files' paths
   * hold it): a new context takes it; an existing one must be it. */
  if (f == 1 && job->context_id && strcmp (job->context_id, ctx) != 0)
    return catalog_fail (ERR_CONFLICT, "the backup context of VM %s in repository %s is %s,"
                         " not %s; plan again", job->vm_name, job->repository_id, ctx,
                         job->context_id);
  if (f == 0) {
    ctx = job->context_id ? strdup (job->context_id) : id_new ("ctx-backup", job->vm_name);
    if (ctx == NULL) {
      if (job->context_id)
        catalog_oom ();
      return -1;
    }
    if (db_exec (cat, "INSERT INTO vm_backup_contexts (context_id, vm_name, repository_id,"
                 " vmware_vm_id, vm_path, vcenter_host, datacenter, created_at, updated_at)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", "ssseeeess",
                 ctx, job->vm_name, job->repository_id,
                 vm ? vm->vmware_vm_id : NULL, vm ? vm->vm_path : NULL,
                 vm ? vm->vcenter_host : NULL, vm ? vm->datacenter : NULL,
                 now, now) == -1) {
      error_prefix ("creating the backup context of VM %s", job->vm_name);
      return -1;
    }
  }
  else if ((f = active_job (cat, ctx, &running)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "VM %s already has a running backup (%s) in repository %s",
                 job->vm_name, running, job->repository_id);
    return -1;
  }

  /* The plan was read in an earlier transaction: check that every parent
   * is still the latest completed disk of its index, and still a parent
   * by the verification rule. */
  for (size_t i = 0; i < job->n_disks; i++) {
    const struct cat_disk *d = &job->disks[i];

    if (d->parent_disk_id < 0)
      continue;
    f = db_int (cat, &latest, "SELECT d.id FROM backup_disks d" LATEST_WHERE,
                "si", ctx, d->disk_index);
    if (f == -1)
      return -1;
    if (f == 0 || latest != d->parent_disk_id) {
      if (f == 0)
        error_set (ERR_CONFLICT, "disk %d: parent disk %" PRId64 " is not the latest"
                   " completed backup of that disk (there is none); plan again",
                   d->disk_index, d->parent_disk_id);
      else
        error_set (ERR_CONFLICT, "disk %d: parent disk %" PRId64 " is not the latest"
                   " completed backup of that disk (%" PRId64 " is); plan again",
                   d->disk_index, d->parent_disk_id, latest);
      return -1;
    }
    /* A verify may have found its chain corrupt since the plan. */
    if ((f = chain_corrupt (cat, latest, &reason)) != 0) {
      if (f == 1)
        error_set (ERR_CONFLICT, "disk %d: parent disk %" PRId64 " is no parent any more:"
                   " %s; plan again", d->disk_index, latest, reason);
      return -1;
    }
  }

  if (db_exec (cat, "INSERT INTO backup_jobs (id, vm_backup_context_id, vm_name,"
               " repository_id, backup_type, status, error, created_at, completed_at, driver,"
               " lease_seconds, lease_expires_at, owner_hub)"
               " VALUES (?, ?, ?, ?, ?, ?, NULL, ?, NULL, ?, ?, ?, ?)", "ssssssssoss",
               job->id, ctx, job->vm_name, job->repository_id,
               backup_type_name (job->backup_type), job_status_name (JOB_RUNNING),
               job->created_at ? job->created_at : now,
               job_driver_name (job->driver),
               job->lease_seconds > 0 ? job->lease_seconds : (int64_t) -1,
               job->lease_seconds > 0 ? job->lease_expires_at : NULL,
               job->owner_hub) == -1) {
    error_prefix ("adding backup %s", job->id);
    return -1;
  }
  for (size_t i = 0; i < job->n_disks; i++) {
    const struct cat_disk *d = &job->disks[i];

    if (db_insert (cat, &disk_ids[i], "INSERT INTO backup_disks (vm_backup_context_id,"
                   " backup_job_id, disk_index, vmware_disk_key, size_bytes, unit_number,"
                   " backup_type, qcow2_path, parent_disk_id, nbd_export, bytes_transferred,"
                   " status, created_at, full_reason)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                   "ssioIossossss", ctx, job->id, d->disk_index, d->vmware_disk_key,
                   d->size_bytes, d->unit_number, backup_type_name (d->backup_type),
                   d->qcow2_path, d->parent_disk_id, d->nbd_export,
                   disk_status_name (d->status),
                   d->created_at ? d->created_at : now, d->full_reason) == -1) {
      error_prefix ("adding disk %d of backup %s", d->disk_index, job->id);
      return -1;
    }
    /* The row owns the file now: its intent goes with the same commit. */
    if (d->qcow2_path &&
        db_exec (cat, "DELETE FROM file_intents WHERE repository_id = ? AND path = ?", "ss",
                 job->repository_id, d->qcow2_path) == -1)
      return -1;
  }
  if (db_exec (cat, "UPDATE vm_backup_contexts SET total_backups_run = total_backups_run + 1,"
               " updated_at = ? WHERE context_id = ?", "ss", now, ctx) == -1)
    return -1;
  for (size_t i = 0; i <= job->n_disks; i++) {
    free (ctx_ids[i]);          /* what a failed attempt copied */
    if ((ctx_ids[i] = strdup (ctx)) == NULL) {
      catalog_oom ();
      return -1;
    }
  }
  return 0;
}

/* See backup_insert_tx.  The job's context_id, if set, is the id the
 * caller chose for a new context; after COMMIT the job and its disks
 * receive the context id and the disk ids. */
int
catalog_backup_insert (struct catalog *cat, struct cat_job *job, const struct cat_vm *vm)
{
  CLEANUP_FREE int64_t *ids = NULL;
  CLEANUP_STRV char **ctx_ids = NULL;
  char now[32];

  if (job == NULL || job->id == NULL || job->vm_name == NULL || job->repository_id == NULL)
    return core_missing ("backup id, vm_name and repository_id");
  if (job->n_disks > 0 && job->disks == NULL)
    return core_missing ("disk list");
  if (backup_insert_check (job) == -1)
    return -1;
  ids = calloc (job->n_disks, sizeof *ids);
  ctx_ids = calloc (job->n_disks + 2, sizeof *ctx_ids);
  if (ids == NULL || ctx_ids == NULL) {
    catalog_oom ();
    return -1;
  }
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true, backup_insert_tx (cat, job, vm, now, ctx_ids, ids), (void) 0) == -1)
    return -1;
  free (job->context_id);
  job->context_id = ctx_ids[0];
  for (size_t i = 0; i < job->n_disks; i++) {
    job->disks[i].id = ids[i];
    free (job->disks[i].context_id);
    job->disks[i].context_id = ctx_ids[i + 1];
  }
  free (ctx_ids);               /* its strings are the job's now */
  ctx_ids = NULL;
  return 0;
}

int
catalog_backup_get (struct catalog *cat, const char *id, struct cat_job *out)
{
  if (id == NULL || out == NULL)
    return core_missing ("backup id");
  return core_read_one (cat, &core_job_kind, out, "backup", JOB_SELECT " WHERE j.id = ?",
                   "s", id, NULL);
}

/* The filter of catalog_backup_list, as ?1..?4 (NULL matches anything);
 * statuses and types bound by their words. */
#define JOB_FILTER \
  " WHERE (?1 IS NULL OR j.vm_name = ?1) AND (?2 IS NULL OR j.repository_id = ?2)" \
  " AND (?3 IS NULL OR j.status = ?3) AND (?4 IS NULL OR j.backup_type = ?4)"

/* Count the matches, then read one page of them, newest first, each with
 * its disks.  A limit of 0 or less means no limit. */
static int
backup_list_tx (struct catalog *cat, const struct cat_job_filter *f,
                struct cat_job **out, size_t *n, int64_t *total)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  int64_t limit = f->limit > 0 ? f->limit : INT64_MAX, offset = f->offset > 0 ? f->offset : 0;
  const char *status = f->by_status ? job_status_name (f->status) : NULL;
  const char *type = f->by_type ? backup_type_name (f->backup_type) : NULL;

  if (db_int (cat, total, "SELECT count(*) FROM backup_jobs j" JOB_FILTER, "ssss",
              f->vm_name, f->repository_id, status, type) == -1)
    return -1;
  st = db_prepare (cat, JOB_SELECT JOB_FILTER " ORDER BY j.created_at DESC, j.id DESC"
                   " LIMIT ?5 OFFSET ?6", "ssssII", f->vm_name, f->repository_id,
                   status, type, limit, offset);
  return core_collect_rows (cat, st, &core_job_kind, (void **) out, n);
}

/* One read transaction, so that the total and the page agree. */
int
catalog_backup_list (struct catalog *cat, const struct cat_job_filter *f,
                     struct cat_job **out, size_t *n, int64_t *total)
{
  static const struct cat_job_filter any = { 0 };
  CLEANUP_CAT_JOB_LIST struct cat_job_list l = { 0 };
  int64_t t = 0;

  if (out == NULL || n == NULL)
    return core_missing ("output array");
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, false, backup_list_tx (cat, f ? f : &any, &l.v, &l.n, &t),
              cat_job_list_clear (&l)) == -1)
    return -1;
  *out = l.v;
  *n = l.n;
  l = (struct cat_job_list) { 0 };
  if (total)
    *total = t;
  return 0;
}

/* Refuse an operation on job id because of its status, saying what that
 * status means where the word alone does not. */
static int
job_status_conflict (const char *id, enum job_status status)
{
  if (status == JOB_FINISHING)
    return catalog_fail (ERR_CONFLICT, "backup %s is finishing: its data is complete and "
                         "recorded, and only the removal of the bitmaps it supersedes at "
                         "its sources is left; it can only be completed now (wait until "
                         "it is)", id);
  if (status == JOB_REMOVING)
    return catalog_fail (ERR_CONFLICT, "backup %s is being removed by a prune task", id);
  return catalog_fail (ERR_CONFLICT, "backup %s is %s", id, job_status_name (status));
}

/* Check that job id exists and its status is want.  *ctx (malloc'd, the
 * caller frees, even on failure), *type and *driver receive its context
 * id, backup type and driver. */
static int
job_in (struct catalog *cat, const char *id, enum job_status want, char **ctx,
        enum backup_type *type, enum job_driver *driver)
{
  CLEANUP_STMT struct db_stmt *st =
    db_prepare (cat, "SELECT status, vm_backup_context_id, backup_type, driver"
                " FROM backup_jobs WHERE id = ?", "s", id);
  struct row row = { st, false, false };
  enum job_status status;
  int r;

  if (st == NULL || (r = db_step (st)) == -1)
    return -1;
  if (r == 0)
    return catalog_fail (ERR_NOT_FOUND, "backup %s not found", id);
  ROW_WORD (&row, 0, "backup_jobs.status", job_status_parse, &status);
  ROW_WORD (&row, 2, "backup_jobs.backup_type", backup_type_parse, type);
  ROW_WORD (&row, 3, "backup_jobs.driver", job_driver_parse, driver);
  *ctx = core_row_text (&row, 1);
  if (core_row_done (&row) == -1)
    return -1;
  if (status != want)
    return job_status_conflict (id, status);
  return 0;
}

/* Mark job backup_id (of context ctx, backup type type) completed and
 * count it as the context's latest successful backup. */
static int
job_complete (struct catalog *cat, const char *backup_id, enum backup_type type,
              const char *ctx, const char *now)
{
  if (db_exec (cat, "UPDATE backup_jobs SET status = ?, completed_at = ?"
               " WHERE id = ?", "sss", job_status_name (JOB_COMPLETED), now,
               backup_id) == -1 ||
      db_exec (cat, "UPDATE vm_backup_contexts SET"
               " successful_backups = successful_backups + 1, last_backup_id = ?,"
               " last_backup_type = ?, last_backup_at = ?, updated_at = ?"
               " WHERE context_id = ?", "sssss", backup_id, backup_type_name (type),
               now, now, ctx) == -1)
    return -1;
  return 0;
}

/* Complete one disk of a running job; when it was the last unfinished
 * one, complete the job and count it in the context, or, for a hub-driven
 * job, which still owes its source the bitmaps, make it finishing.  *after
 * receives the job as it stands after the change (caller frees). */
static int
disk_complete_tx (struct catalog *cat, const char *backup_id, int disk_index,
                  const char *change_id, int64_t bytes, const char *full_reason,
                  const char *now, struct cat_job *after)
{
  CLEANUP_FREE char *ctx = NULL, *word = NULL;
  enum backup_type type;
  enum job_driver driver;
  enum disk_status status;
  int64_t disk_id, left;
  int f;

  if (job_in (cat, backup_id, JOB_RUNNING, &ctx, &type, &driver) == -1)
    return -1;
  f = db_int (cat, &disk_id, "SELECT id FROM backup_disks"
              " WHERE backup_job_id = ? AND disk_index = ?", "si", backup_id, disk_index);
  if (f == -1)
    return -1;
  if (f == 0)
    return catalog_fail (ERR_NOT_FOUND, "backup %s has no disk %d", backup_id, disk_index);
  if (db_text (cat, &word, "SELECT status FROM backup_disks WHERE id = ?",
               "I", disk_id) != 1)
    return -1;
  if (disk_status_parse (word, &status) == -1)
    return core_bad_word ("backup_disks.status", word);
  if (status != DISK_RUNNING && status != DISK_PENDING)
    return catalog_fail (ERR_CONFLICT, "disk %d of backup %s is %s", disk_index, backup_id,
                         word);
  if (db_exec (cat, "UPDATE backup_disks SET status = ?, disk_change_id = ?,"
               " bytes_transferred = ?, completed_at = ?, nbd_export = NULL,"
               " full_reason = COALESCE(?, full_reason) WHERE id = ?",
               "ssIssI", disk_status_name (DISK_COMPLETED), change_id, bytes, now,
               full_reason, disk_id) == -1)
    return -1;
  if (db_int (cat, &left, "SELECT count(*) FROM backup_disks"
              " WHERE backup_job_id = ? AND status <> 'completed'", "s", backup_id) == -1)
    return -1;
  if (left == 0) {
    if (driver == DRIVER_HUB) {
      if (db_exec (cat, "UPDATE backup_jobs SET status = ? WHERE id = ?",
                   "ss", job_status_name (JOB_FINISHING), backup_id) == -1)
        return -1;
    }
    else if (job_complete (cat, backup_id, type, ctx, now) == -1)
      return -1;
  }
  return core_job_load (cat, backup_id, after) == 1 ? 0 : -1;
}

/* Finish a finishing job: complete it and count it in its context. */
static int
backup_finish_tx (struct catalog *cat, const char *backup_id, const char *now,
                  struct cat_job *after)
{
  CLEANUP_FREE char *ctx = NULL;
  enum backup_type type;
  enum job_driver driver;

  if (job_in (cat, backup_id, JOB_FINISHING, &ctx, &type, &driver) == -1 ||
      job_complete (cat, backup_id, type, ctx, now) == -1)
    return -1;
  return core_job_load (cat, backup_id, after) == 1 ? 0 : -1;
}

/* Run a write operation that hands back the job as it stands after it:
 * complete (disk_index >= 0) or finish. */
static int
job_change (struct catalog *cat, const char *backup_id, int disk_index,
            const char *change_id, int64_t bytes, const char *full_reason,
            struct cat_job *job_after)
{
  CLEANUP_CAT_JOB struct cat_job after = { 0 };
  char now[32];
  SCOPED_LOCK (&cat->lock);

  id_now (now, sizeof now);
  if (RUN_TX (cat, true, disk_index >= 0
              ? disk_complete_tx (cat, backup_id, disk_index, change_id, bytes,
                                  full_reason, now, &after)
              : backup_finish_tx (cat, backup_id, now, &after),
              cat_job_clear (&after)) == -1)
    return -1;
  if (job_after) {
    *job_after = after;
    after = (struct cat_job) { 0 };
  }
  return 0;
}

int
catalog_disk_complete (struct catalog *cat, const char *backup_id, int disk_index,
                       const char *change_id, int64_t bytes_transferred,
                       const char *full_reason, struct cat_job *job_after)
{
  if (backup_id == NULL)
    return core_missing ("backup id");
  if (bytes_transferred < 0)
    return catalog_fail (ERR_INVALID, "bytes_transferred must not be negative");
  if (disk_index < 0)
    return catalog_fail (ERR_NOT_FOUND, "backup %s has no disk %d", backup_id, disk_index);
  return job_change (cat, backup_id, disk_index, change_id, bytes_transferred,
                     full_reason, job_after);
}

int
catalog_backup_finish (struct catalog *cat, const char *backup_id, struct cat_job *job_after)
{
  if (backup_id == NULL)
    return core_missing ("backup id");
  return job_change (cat, backup_id, -1, NULL, 0, NULL, job_after);
}

/* End a running job as failed or cancelled: collect its unfinished disks
 * as they are (with paths and exports) into *dropped, then fail them,
 * clearing paths and exports, and count the failure in the context. */
static int
backup_end_tx (struct catalog *cat, const char *backup_id, enum job_status status,
               int error_disk, const char *error, const char *now,
               struct cat_disk **dropped, size_t *n)
{
  CLEANUP_FREE char *ctx = NULL;
  enum backup_type type;
  enum job_driver driver;
  const char *other = status == JOB_FAILED ? "job failed" : "job cancelled";

  if (job_in (cat, backup_id, JOB_RUNNING, &ctx, &type, &driver) == -1)
    return -1;
  if (core_disks_query (cat, DISK_SELECT DISK_FROM " WHERE d.backup_job_id = ?"
                   " AND d.status <> 'completed' ORDER BY d.disk_index",
                   backup_id, dropped, n) == -1)
    return -1;
  for (size_t i = 0; i < *n; i++) {
    const struct cat_disk *d = &(*dropped)[i];
    const char *msg = other;

    if (d->disk_index == error_disk && error_disk >= 0 && error)
      msg = error;
    if (db_exec (cat, "UPDATE backup_disks SET status = ?, error = ?,"
                 " qcow2_path = NULL, nbd_export = NULL, completed_at = ?"
                 " WHERE id = ?", "sssI", disk_status_name (DISK_FAILED), msg, now,
                 d->id) == -1)
      return -1;
  }
  if (db_exec (cat, "UPDATE backup_jobs SET status = ?, error = ?, completed_at = ?"
               " WHERE id = ?", "ssss", job_status_name (status), error, now,
               backup_id) == -1 ||
      db_exec (cat, "UPDATE vm_backup_contexts SET failed_backups = failed_backups + 1,"
               " updated_at = ? WHERE context_id = ?", "ss", now, ctx) == -1)
    return -1;
  return 0;
}

int
catalog_backup_end (struct catalog *cat, const char *backup_id, enum job_status status,
                    int error_disk, const char *error,
                    struct cat_disk **dropped, size_t *n_dropped)
{
  CLEANUP_CAT_DISK_LIST struct cat_disk_list l = { 0 };
  char now[32];

  if (backup_id == NULL)
    return core_missing ("backup id");
  if ((dropped == NULL) != (n_dropped == NULL))
    return core_missing ("count of dropped disks");
  if (status != JOB_FAILED && status != JOB_CANCELLED)
    return catalog_fail (ERR_INVALID, "a backup can only end as failed or cancelled, not %s",
                         job_status_name (status));
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true, backup_end_tx (cat, backup_id, status, error_disk, error, now,
                                        &l.v, &l.n),
              cat_disk_list_clear (&l)) == -1)
    return -1;
  core_disks_hand_over (&l, dropped, n_dropped);
  return 0;
}

/* The job ?1 and, recursively, every job with a disk based on a disk of a
 * job already in the set: what deleting ?1 with cascade deletes.  The
 * anchor selects the column, not the parameter, so that the CTE's column
 * has the column's type. */
#define DOOMED_JOBS \
  "WITH RECURSIVE doomed (job_id) AS (" \
  "  SELECT id FROM backup_jobs WHERE id = ?1" \
  "  UNION" \
  "  SELECT c.backup_job_id FROM backup_disks c" \
  "  JOIN backup_disks p ON c.parent_disk_id = p.id" \
  "  JOIN doomed ON p.backup_job_id = doomed.job_id) "

#define WITH_FILES \
  " AND EXISTS (SELECT 1 FROM backup_disks x" \
  "             WHERE x.backup_job_id = doomed.job_id AND x.qcow2_path IS NOT NULL)"

/* What deleting backup_id (with cascade or not) deletes, after its checks:
 * backup_id exists and is not active; dependents that still have a file
 * (only those are backed by it: a failed attempt whose overlays are gone
 * goes with it) are deleted only with cascade, and only when none of them
 * is active.  *job_ids receives the doomed jobs' ids, backup_id first,
 * then the others by id (a NULL-terminated vector, the caller frees it). */
static int
backup_delete_plan_tx (struct catalog *cat, const char *backup_id, bool cascade,
                       char ***job_ids)
{
  CLEANUP_FREE char *dependent = NULL, *active = NULL, *active_word = NULL;
  CLEANUP_STMT struct db_stmt *st = NULL;
  enum job_status status;
  int64_t dependents;
  int f;

  if (core_job_status (cat, backup_id, &status) == -1)
    return -1;
  if (status == JOB_RUNNING)
    return catalog_fail (ERR_CONFLICT, "backup %s is running: cancel it first", backup_id);
  if (job_status_active (status) || status == JOB_REMOVING)
    return job_status_conflict (backup_id, status);
  if (db_int (cat, &dependents, DOOMED_JOBS
              "SELECT count(*) FROM doomed WHERE job_id <> ?1" WITH_FILES,
              "s", backup_id) == -1)
    return -1;
  if (dependents > 0) {
    if (db_text (cat, &dependent, DOOMED_JOBS
                 "SELECT job_id FROM doomed WHERE job_id <> ?1" WITH_FILES
                 " ORDER BY job_id LIMIT 1", "s", backup_id) != 1)
      return -1;
    if (!cascade)
      return catalog_fail (ERR_CONFLICT, "%" PRId64 " later backup%s (%s%s) %s based on"
                           " backup %s; delete with cascade to delete them too",
                           dependents, dependents == 1 ? "" : "s", dependent,
                           dependents == 1 ? "" : ", ...", dependents == 1 ? "is" : "are",
                           backup_id);
    f = db_text (cat, &active, DOOMED_JOBS
                 "SELECT j.id FROM backup_jobs j JOIN doomed ON j.id = doomed.job_id"
                 " WHERE j.status IN (?2, ?3, ?4) ORDER BY j.id LIMIT 1", "ssss", backup_id,
                 job_status_name (JOB_RUNNING), job_status_name (JOB_FINISHING),
                 job_status_name (JOB_REMOVING));
    if (f == 1 && db_text (cat, &active_word, "SELECT status FROM backup_jobs WHERE id = ?",
                           "s", active) == 1)
      error_set (ERR_CONFLICT, "backup %s, which is based on backup %s, %s", active,
                 backup_id, strcmp (active_word, job_status_name (JOB_REMOVING)) == 0
                 ? "is being removed by a prune task" : "is running");
    if (f != 0)
      return -1;
  }
  st = db_prepare (cat, DOOMED_JOBS "SELECT job_id FROM doomed"
                   " ORDER BY job_id <> ?1, job_id", "s", backup_id);
  return core_collect_strings (st, job_ids);
}

int
catalog_backup_delete_plan (struct catalog *cat, const char *backup_id, bool cascade,
                            char ***job_ids)
{
  char **v = NULL;

  if (backup_id == NULL || job_ids == NULL)
    return core_missing ("backup id and output vector");
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, false, backup_delete_plan_tx (cat, backup_id, cascade, &v),
              (core_strv_free (v), v = NULL)) == -1) {
    core_strv_free (v);
    return -1;
  }
  *job_ids = v;
  return 0;
}

/* Delete a finished job, and with cascade every job built on it: the
 * plan's jobs.  Their disk rows are collected into *deleted, then deleted
 * newest first, then the jobs.  last_backup_* moves back if it named a
 * deleted job. */
static int
backup_delete_tx (struct catalog *cat, const char *backup_id, bool cascade,
                  const char *now, struct cat_disk **deleted, size_t *n)
{
  CLEANUP_STRV char **jobs = NULL;
  CLEANUP_FREE char *ctx = NULL;

  if (backup_delete_plan_tx (cat, backup_id, cascade, &jobs) == -1 ||
      db_text (cat, &ctx, "SELECT vm_backup_context_id FROM backup_jobs WHERE id = ?",
               "s", backup_id) != 1 ||
      core_disks_query (cat, DOOMED_JOBS DISK_SELECT DISK_FROM
                   " WHERE d.backup_job_id IN (SELECT job_id FROM doomed)"
                   " ORDER BY d.id", backup_id, deleted, n) == -1)
    return -1;
  if (core_disks_delete (cat, *deleted, *n) == -1)
    goto fail;
  for (char **j = jobs; *j; j++)
    if (db_exec (cat, "DELETE FROM backup_jobs WHERE id = ?", "s", *j) == -1)
      goto fail;
  return core_context_refresh_last (cat, ctx, now);

 fail:
  error_prefix ("deleting backup %s", backup_id);
  return -1;
}

int
catalog_backup_delete (struct catalog *cat, const char *backup_id, bool cascade,
                       struct cat_disk **deleted, size_t *n_deleted)
{
  CLEANUP_CAT_DISK_LIST struct cat_disk_list l = { 0 };
  char now[32];

  if (backup_id == NULL)
    return core_missing ("backup id");
  if ((deleted == NULL) != (n_deleted == NULL))
    return core_missing ("count of deleted disks");
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true, backup_delete_tx (cat, backup_id, cascade, now, &l.v, &l.n),
              cat_disk_list_clear (&l)) == -1)
    return -1;
  core_disks_hand_over (&l, deleted, n_deleted);
  return 0;
}

/* Mark a completed job protected or not. */
static int
backup_protect_tx (struct catalog *cat, const char *backup_id, bool on)
{
  CLEANUP_FREE char *ctx = NULL;
  enum backup_type type;
  enum job_driver driver;

  if (job_in (cat, backup_id, JOB_COMPLETED, &ctx, &type, &driver) == -1)
    return -1;
  return db_exec (cat, "UPDATE backup_jobs SET protected = ? WHERE id = ?", "is",
                  (int) on, backup_id) == -1 ? -1 : 0;
}

int
catalog_backup_protect (struct catalog *cat, const char *backup_id, bool on)
{
  if (backup_id == NULL)
    return core_missing ("backup id");
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, backup_protect_tx (cat, backup_id, on), (void) 0);
}

/* Find the context (the named repository's, or the VM's only one), then
 * its latest completed disk of that index. */
static int
changeid_get_tx (struct catalog *cat, const char *vm_name, int disk_index,
                 const char *repository_id, struct cat_disk *out)
{
  CLEANUP_FREE char *ctx = NULL;
  int64_t contexts;
  int f;

  if (repository_id) {
    f = db_text (cat, &ctx, "SELECT context_id FROM vm_backup_contexts"
                 " WHERE vm_name = ? AND repository_id = ?", "ss", vm_name, repository_id);
    if (f == 0)
      error_set (ERR_NOT_FOUND, "VM %s has no backups in repository %s",
                 vm_name, repository_id);
    if (f != 1)
      return -1;
  }
  else {
    if (db_int (cat, &contexts, "SELECT count(*) FROM vm_backup_contexts WHERE vm_name = ?",
                "s", vm_name) == -1)
      return -1;
    if (contexts == 0)
      return catalog_fail (ERR_NOT_FOUND, "VM %s has no backups", vm_name);
    if (contexts > 1)
      return catalog_fail (ERR_CONFLICT, "VM %s has backups in %" PRId64 " repositories;"
                           " name the repository", vm_name, contexts);
    if (db_text (cat, &ctx, "SELECT context_id FROM vm_backup_contexts WHERE vm_name = ?",
                 "s", vm_name) != 1)
      return -1;
  }
  f = core_latest_disk (cat, ctx, disk_index, out);
  if (f == 0)
    error_set (ERR_NOT_FOUND, "VM %s has no completed backup of disk %d",
               vm_name, disk_index);
  return f == 1 ? 0 : -1;
}

int
catalog_changeid_get (struct catalog *cat, const char *vm_name, int disk_index,
                      const char *repository_id, struct cat_disk *out)
{
  CLEANUP_CAT_DISK struct cat_disk d = { 0 };

  if (vm_name == NULL || out == NULL)
    return core_missing ("vm_name");
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, false, changeid_get_tx (cat, vm_name, disk_index, repository_id, &d),
              cat_disk_clear (&d)) == -1)
    return -1;
  *out = d;
  d = (struct cat_disk) { 0 };
  return 0;
}

/* ------------------------------------------------------------------------
 * Leases (catalog.h; the hub's side is hub/lease.c)
 */

int
catalog_backup_lease_renew (struct catalog *cat, const char *backup_id,
                            const char *expires_at)
{
  if (backup_id == NULL || expires_at == NULL)
    return core_missing ("backup id and lease expiry");
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true,
                 db_exec (cat, "UPDATE backup_jobs SET lease_expires_at = ?"
                          " WHERE id = ? AND status = ? AND lease_seconds IS NOT NULL",
                          "sss", expires_at, backup_id,
                          job_status_name (JOB_RUNNING)) == -1 ? -1 : 0, (void) 0);
}

/* The running leased jobs of hub ?3 (any hub's when NULL). */
#define LEASED_WHERE \
  " WHERE status = ?1 AND lease_expires_at IS NOT NULL AND (?3 IS NULL OR owner_hub = ?3)"

static int
lease_lapsed_tx (struct catalog *cat, const char *owner, const char *now, char ***ids,
                 char **next)
{
  CLEANUP_STMT struct db_stmt *st =
    db_prepare (cat, "SELECT id FROM backup_jobs" LEASED_WHERE " AND lease_expires_at < ?2"
                " ORDER BY lease_expires_at, id", "sss", job_status_name (JOB_RUNNING), now,
                owner);

  if (core_collect_strings (st, ids) == -1)
    return -1;
  if (next &&
      db_text (cat, next, "SELECT min(lease_expires_at) FROM backup_jobs" LEASED_WHERE
               " AND lease_expires_at >= ?2", "sss", job_status_name (JOB_RUNNING), now,
               owner) == -1) {
    core_strv_free (*ids);
    *ids = NULL;
    return -1;
  }
  return 0;
}

int
catalog_backup_lease_lapsed (struct catalog *cat, const char *owner_hub, const char *now,
                             char ***backup_ids, char **next)
{
  if (now == NULL || backup_ids == NULL)
    return core_missing ("time and output vector");
  *backup_ids = NULL;
  if (next)
    *next = NULL;
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, false, lease_lapsed_tx (cat, owner_hub, now, backup_ids, next),
                 (core_strv_free (*backup_ids), *backup_ids = NULL,
                  next ? (free (*next), *next = NULL) : NULL));
}

static int
change_ids_live_tx (struct catalog *cat, size_t n, const char *const *names, bool *live)
{
  const char *dead[] = { job_status_name (JOB_FAILED), job_status_name (JOB_CANCELLED) };

  for (size_t i = 0; i < n; i++) {
    int64_t one;
    int f = db_int (cat, &one, "SELECT 1 FROM backup_jobs j WHERE j.status NOT IN (?, ?)"
                    " AND (j.id = ? OR EXISTS (SELECT 1 FROM backup_disks d"
                    " WHERE d.backup_job_id = j.id AND d.disk_change_id = ?)) LIMIT 1",
                    "ssss", dead[0], dead[1], names[i], names[i]);
    if (f == -1)
      return -1;
    live[i] = f == 1;
  }
  return 0;
}

int
catalog_change_ids_live (struct catalog *cat, size_t n, const char *const *names,
                         bool *live)
{
  if ((n > 0 && (names == NULL || live == NULL)))
    return core_missing ("names");
  for (size_t i = 0; i < n; i++)
    if (names[i] == NULL)
      return core_missing ("name");
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, false, change_ids_live_tx (cat, n, names, live), (void) 0);
}
