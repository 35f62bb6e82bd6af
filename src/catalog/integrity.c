/* catalog/integrity.c - what verification needs of the catalog: recording
 * a verify's or an audit's findings, the points due for a verify by their
 * policy, and rebuild-catalog's insert of a completed job read from its
 * manifests.  (The parent rule, that a corrupt chain is no parent, is
 * catalog_backup_plan's, in backups.c.)
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "catalog/core-int.h"
#include "util/array.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/state.h"

/* ------------------------------------------------------------------------
 * Verify records
 */

/* Write each listed disk's state, then the job's, from all its disks. */
static int
verify_record_tx (struct catalog *cat, const char *backup_id, size_t n,
                  const int *disk_indexes, const enum verify_state *states,
                  const char *const *errors, const char *verified_at)
{
  enum job_status status;
  enum verify_state job_state;
  int64_t corrupt, not_ok;

  if (core_job_status (cat, backup_id, &status) == -1)
    return -1;
  if (status != JOB_COMPLETED && status != JOB_FINISHING)
    return catalog_fail (ERR_CONFLICT, "backup %s is %s: only a completed backup is"
                         " verified", backup_id, job_status_name (status));
  for (size_t i = 0; i < n; i++) {
    /* An audit's finding (the change tracking missed blocks) stays: reading
     * the files back finds them as the copy wrote them, which says nothing
     * of what the copy left out.  (verify_error is assigned first: MariaDB
     * evaluates an UPDATE's assignments in order, SQLite on the old row;
     * both end the same.) */
    const char *state = verify_state_name (states[i]);
    int64_t changed = db_exec (cat, "UPDATE backup_disks SET"
                               " verify_error = CASE WHEN verify_state = 'corrupt'"
                               " AND verify_error LIKE ? AND ? = 'ok'"
                               " THEN verify_error ELSE ? END,"
                               " verify_state = CASE WHEN verify_state = 'corrupt'"
                               " AND verify_error LIKE ? AND ? = 'ok'"
                               " THEN verify_state ELSE ? END,"
                               " verified_at = ?"
                               " WHERE backup_job_id = ? AND disk_index = ?", "ssssssssi",
                               CATALOG_AUDIT_MISSED "%", state,
                               errors ? errors[i] : NULL,
                               CATALOG_AUDIT_MISSED "%", state, state,
                               verified_at, backup_id, disk_indexes[i]);
    if (changed == -1)
      return -1;
    if (changed == 0)
      return catalog_fail (ERR_NOT_FOUND, "backup %s has no disk %d", backup_id,
                           disk_indexes[i]);
  }
  if (db_int (cat, &corrupt, "SELECT count(*) FROM backup_disks"
              " WHERE backup_job_id = ? AND verify_state = ?", "ss", backup_id,
              verify_state_name (VERIFY_CORRUPT)) == -1 ||
      db_int (cat, &not_ok, "SELECT count(*) FROM backup_disks"
              " WHERE backup_job_id = ? AND verify_state <> ?", "ss", backup_id,
              verify_state_name (VERIFY_OK)) == -1)
    return -1;
  job_state = corrupt > 0 ? VERIFY_CORRUPT : not_ok == 0 ? VERIFY_OK : VERIFY_NONE;
  return db_exec (cat, "UPDATE backup_jobs SET verify_state = ?, verified_at = ?"
                  " WHERE id = ?", "sss", verify_state_name (job_state), verified_at,
                  backup_id) == -1 ? -1 : 0;
}

int
catalog_verify_record (struct catalog *cat, const char *backup_id, size_t n,
                       const int *disk_indexes, const enum verify_state *states,
                       const char *const *errors, const char *verified_at)
{
  if (backup_id == NULL || verified_at == NULL)
    return core_missing ("backup id and verified_at");
  if (n == 0 || disk_indexes == NULL || states == NULL)
    return core_missing ("disk list");
  for (size_t i = 0; i < n; i++)
    if (states[i] != VERIFY_NONE && states[i] != VERIFY_OK && states[i] != VERIFY_CORRUPT)
      return catalog_fail (ERR_INVALID, "disk %d: bad verify state %d", disk_indexes[i],
                           (int) states[i]);
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, verify_record_tx (cat, backup_id, n, disk_indexes, states,
                                              errors, verified_at), (void) 0);
}

/* ------------------------------------------------------------------------
 * Points due for a verify
 */

/* Free the n strings of v, then v. */
static void
strings_free (char **v, size_t n)
{
  for (size_t i = 0; i < n; i++)
    free (v[i]);
  free (v);
}

/* Move the strings of add (NULL-terminated, freed) to the end of *v, of
 * *n strings and *cap slots. */
static int
strings_append (char ***v, size_t *n, size_t *cap, char **add)
{
  size_t k = 0;

  for (; add[k]; k++) {
    char **slot = array_push ((void **) v, *n, cap, sizeof **v);
    if (slot == NULL) {
      core_strv_free (add + k);
      free (add);
      return -1;
    }
    *slot = add[k];
    (*n)++;
  }
  free (add);
  return 0;
}

/* For each policy with verify_every_days (by name), the completed jobs of
 * its VMs never verified or verified before now minus those days, oldest
 * first.  Timestamps are id_now's text, which sorts as time does, so the
 * cutoff is computed here and compared as text: no date arithmetic in
 * SQL, which the dialects write differently. */
static int
verify_due_tx (struct catalog *cat, time_t now, char ***out)
{
  CLEANUP_STMT struct db_stmt *pol = NULL;
  char **v = NULL, **end;
  size_t n = 0, cap = 0;
  int r;

  pol = db_prepare (cat, "SELECT name, verify_every_days FROM policies"
                    " WHERE verify_every_days IS NOT NULL ORDER BY name", "");
  if (pol == NULL)
    return -1;
  while ((r = db_step (pol)) == 1) {
    struct row row = { pol, false, false };
    CLEANUP_STMT struct db_stmt *st = NULL;
    const char *name = core_row_peek (&row, 0);
    int64_t days = core_row_int (&row, 1);
    char cutoff[32], **ids = NULL;

    if (core_row_done (&row) == -1) {
      r = -1;
      break;
    }
    id_time_format (now - (time_t) (days > 36500 ? 36500 : days) * 86400, cutoff,
                    sizeof cutoff);
    st = db_prepare (cat, "SELECT j.id FROM backup_jobs j JOIN vms v ON v.vm_name = j.vm_name"
                     " WHERE v.policy = ? AND j.status = ?"
                     " AND (j.verified_at IS NULL OR j.verified_at < ?)"
                     " ORDER BY j.created_at, j.id", "sss", name,
                     job_status_name (JOB_COMPLETED), cutoff);
    if (core_collect_strings (st, &ids) == -1 || strings_append (&v, &n, &cap, ids) == -1) {
      r = -1;
      break;
    }
  }
  if (r == -1 || (end = array_push ((void **) &v, n, &cap, sizeof *v)) == NULL) {
    strings_free (v, n);
    return -1;
  }
  *end = NULL;
  *out = v;
  return 0;
}

int
catalog_verify_due (struct catalog *cat, const char *now, char ***backup_ids)
{
  char **v = NULL;
  time_t t;

  if (now == NULL || backup_ids == NULL)
    return core_missing ("time and output vector");
  if (id_time_parse (now, &t) == -1)
    return catalog_fail (ERR_INVALID, "\"%s\" is not a timestamp", now);
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, false, verify_due_tx (cat, t, &v), (core_strv_free (v), v = NULL)) == -1)
    return -1;
  *backup_ids = v;
  return 0;
}

/* ------------------------------------------------------------------------
 * Rebuild
 */

/* What no catalog could accept of a rebuilt job. */
static int
rebuild_check (const struct cat_repository *repo, const struct cat_context *ctx,
               const struct cat_job *job)
{
  if (repo == NULL || repo->id == NULL || repo->name == NULL || repo->type == NULL ||
      repo->path == NULL)
    return core_missing ("repository id, name, type and path");
  if (ctx == NULL || ctx->context_id == NULL || ctx->vm_name == NULL)
    return core_missing ("context id and vm_name");
  if (job == NULL || job->id == NULL || job->created_at == NULL || job->completed_at == NULL)
    return core_missing ("backup id, created_at and completed_at");
  if (strcmp (job->vm_name ? job->vm_name : ctx->vm_name, ctx->vm_name) != 0 ||
      strcmp (job->repository_id ? job->repository_id : repo->id, repo->id) != 0 ||
      (ctx->repository_id && strcmp (ctx->repository_id, repo->id) != 0))
    return catalog_fail (ERR_INVALID, "backup %s: its VM and repository are not its"
                         " context's", job->id);
  if (job->n_disks == 0 || job->disks == NULL)
    return catalog_fail (ERR_INVALID, "backup %s has no disks", job->id);
  for (size_t i = 0; i < job->n_disks; i++) {
    const struct cat_disk *d = &job->disks[i];
    if ((d->backup_type == BACKUP_FULL) != (d->parent_disk_id < 0))
      return catalog_fail (ERR_INVALID, "backup %s disk %d: a full has no parent disk, an"
                           " incremental has one", job->id, d->disk_index);
  }
  return 0;
}

/* The repository and the context unless there, the context's stats as
 * given, then the job and its disks, completed. */
static int
rebuild_insert_tx (struct catalog *cat, const struct cat_repository *repo,
                   const struct cat_context *ctx, const struct cat_job *job,
                   const char *now, int64_t *ids)
{
  const char *c = ctx->context_id;
  CLEANUP_FREE char *vm = NULL, *rid = NULL;
  CLEANUP_STMT struct db_stmt *st = NULL;
  const char *last_type = ctx->last_backup_id ? backup_type_name (ctx->last_backup_type) : NULL;
  int64_t one;
  int f;

  if ((f = db_int (cat, &one, "SELECT 1 FROM backup_repositories WHERE id = ?", "s",
                   repo->id)) == -1)
    return -1;
  if (f == 0 && db_exec (cat, "INSERT INTO backup_repositories (id, name, type, path,"
                         " created_at) VALUES (?, ?, ?, ?, ?)", "sssss", repo->id, repo->name,
                         repo->type, repo->path,
                         repo->created_at ? repo->created_at : now) == -1) {
    error_prefix ("adding repository %s", repo->id);
    return -1;
  }
  st = db_prepare (cat, "SELECT vm_name, repository_id FROM vm_backup_contexts"
                   " WHERE context_id = ?", "s", c);
  if (st == NULL || (f = db_step (st)) == -1)
    return -1;
  if (f == 1) {
    struct row row = { st, false, false };
    vm = core_row_text (&row, 0);
    rid = core_row_text (&row, 1);
    if (core_row_done (&row) == -1)
      return -1;
    if (strcmp (vm, ctx->vm_name) != 0 || strcmp (rid, repo->id) != 0)
      return catalog_fail (ERR_CONFLICT, "context %s is VM %s's in repository %s, not VM %s's"
                           " in repository %s", c, vm, rid, ctx->vm_name, repo->id);
    if (db_exec (cat, "UPDATE vm_backup_contexts SET total_backups_run = ?,"
                 " successful_backups = ?, failed_backups = ?, last_backup_id = ?,"
                 " last_backup_type = ?, last_backup_at = ?, updated_at = ?"
                 " WHERE context_id = ?", "IIIsssss", ctx->total_backups_run,
                 ctx->successful_backups, ctx->failed_backups, ctx->last_backup_id,
                 last_type, ctx->last_backup_at, ctx->updated_at ? ctx->updated_at : now,
                 c) == -1)
      return -1;
  }
  else if (db_exec (cat, "INSERT INTO vm_backup_contexts (context_id, vm_name, repository_id,"
                    " vmware_vm_id, vm_path, vcenter_host, datacenter, total_backups_run,"
                    " successful_backups, failed_backups, last_backup_id, last_backup_type,"
                    " last_backup_at, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    "ssseeeeIIIsssss", c, ctx->vm_name, repo->id, ctx->vmware_vm_id,
                    ctx->vm_path, ctx->vcenter_host, ctx->datacenter, ctx->total_backups_run,
                    ctx->successful_backups, ctx->failed_backups, ctx->last_backup_id,
                    last_type, ctx->last_backup_at, ctx->created_at ? ctx->created_at : now,
                    ctx->updated_at ? ctx->updated_at : now) == -1) {
    error_prefix ("adding context %s", c);
    return -1;
  }

  if ((f = db_int (cat, &one, "SELECT 1 FROM backup_jobs WHERE id = ?", "s", job->id)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "backup %s already exists", job->id);
    return -1;
  }
  if (db_exec (cat, "INSERT INTO backup_jobs (id, vm_backup_context_id, vm_name,"
               " repository_id, backup_type, status, error, created_at, completed_at, driver)"
               " VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)", "sssssssss",
               job->id, c, ctx->vm_name, repo->id, backup_type_name (job->backup_type),
               job_status_name (JOB_COMPLETED), job->created_at, job->completed_at,
               job_driver_name (job->driver)) == -1) {
    error_prefix ("adding backup %s", job->id);
    return -1;
  }
  for (size_t i = 0; i < job->n_disks; i++) {
    const struct cat_disk *d = &job->disks[i];

    /* The parent: a completed row of a completed job, this context's,
     * of the same disk index. */
    if (d->parent_disk_id >= 0 &&
        (f = db_int (cat, &one, "SELECT 1 FROM backup_disks p"
                     " JOIN backup_jobs pj ON pj.id = p.backup_job_id"
                     " WHERE p.id = ? AND p.vm_backup_context_id = ? AND p.disk_index = ?"
                     " AND p.status = ? AND pj.status = ?", "Isiss", d->parent_disk_id, c,
                     d->disk_index, disk_status_name (DISK_COMPLETED),
                     job_status_name (JOB_COMPLETED))) != 1) {
      if (f == 0)
        error_set (ERR_INVALID, "backup %s disk %d: parent disk %" PRId64 " is not a"
                   " completed backup of that disk in context %s", job->id, d->disk_index,
                   d->parent_disk_id, c);
      return -1;
    }
    if (db_insert (cat, &ids[i], "INSERT INTO backup_disks (vm_backup_context_id,"
                   " backup_job_id, disk_index, vmware_disk_key, size_bytes, unit_number,"
                   " backup_type, disk_change_id, qcow2_path, parent_disk_id,"
                   " bytes_transferred, status, created_at, completed_at, full_reason)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   "ssioIosssoIssss", c, job->id, d->disk_index, d->vmware_disk_key,
                   d->size_bytes, d->unit_number, backup_type_name (d->backup_type),
                   d->disk_change_id, d->qcow2_path, d->parent_disk_id, d->bytes_transferred,
                   disk_status_name (DISK_COMPLETED),
                   d->created_at ? d->created_at : job->created_at,
                   d->completed_at ? d->completed_at : job->completed_at,
                   d->full_reason) == -1) {
      error_prefix ("adding disk %d of backup %s", d->disk_index, job->id);
      return -1;
    }
  }
  return 0;
}

int
catalog_rebuild_insert (struct catalog *cat, const struct cat_repository *repo,
                        const struct cat_context *ctx, struct cat_job *job)
{
  CLEANUP_FREE int64_t *ids = NULL;
  char now[32];

  if (rebuild_check (repo, ctx, job) == -1)
    return -1;
  if ((ids = calloc (job->n_disks, sizeof *ids)) == NULL) {
    catalog_oom ();
    return -1;
  }
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true, rebuild_insert_tx (cat, repo, ctx, job, now, ids), (void) 0) == -1)
    return -1;
  for (size_t i = 0; i < job->n_disks; i++)
    job->disks[i].id = ids[i];
  return 0;
}
