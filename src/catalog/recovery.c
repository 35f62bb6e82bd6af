/* catalog/recovery.c - what a hub's start-up and its file checks ask of
 * the catalog: every disk file, the running disks to export again, and the
 * cascade that fails a lost disk and every disk built on it.
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
 * Recovery
 */

/* Every disk row with a file, then their repositories' paths: the same
 * rows in the same order, in one snapshot, so the arrays are parallel. */
#define FILES_WHERE \
  " JOIN vm_backup_contexts c ON c.context_id = d.vm_backup_context_id" \
  " JOIN backup_repositories r ON r.id = c.repository_id" \
  " WHERE d.qcow2_path IS NOT NULL ORDER BY d.id"

static int
disk_files_tx (struct catalog *cat, struct cat_disk **out, char ***repo_paths, size_t *n)
{
  CLEANUP_STMT struct db_stmt *st = NULL;

  if (core_query_all (cat, &core_disk_kind, (void **) out, n, DISK_SELECT DISK_FROM FILES_WHERE,
                 "", NULL) == -1)
    return -1;
  st = db_prepare (cat, "SELECT r.path FROM backup_disks d" FILES_WHERE, "");
  return core_collect_strings (st, repo_paths);
}

int
catalog_disk_files (struct catalog *cat, struct cat_disk **out,
                    char ***repo_paths, size_t *n)
{
  CLEANUP_CAT_DISK_LIST struct cat_disk_list l = { 0 };
  CLEANUP_STRV char **p = NULL;

  if (out == NULL || repo_paths == NULL || n == NULL)
    return core_missing ("output arrays");
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, false, disk_files_tx (cat, &l.v, &p, &l.n),
              (cat_disk_list_clear (&l), core_strv_free (p), p = NULL)) == -1)
    return -1;
  core_disks_hand_over (&l, out, n);
  *repo_paths = p;
  p = NULL;
  return 0;
}

/* The disks to export: running disks of running jobs (of one hub). */
int
catalog_running_disks (struct catalog *cat, const char *owner_hub, struct cat_disk **out,
                       size_t *n)
{
  if (out == NULL || n == NULL)
    return core_missing ("output array");
  return core_read_all (cat, &core_disk_kind, (void **) out, n, DISK_SELECT DISK_FROM
                   " JOIN backup_jobs j ON j.id = d.backup_job_id"
                   " WHERE d.status = 'running' AND j.status = 'running'"
                   " AND (?1 IS NULL OR j.owner_hub = ?1) ORDER BY d.id",
                   "s", owner_hub);
}

/* ------------------------------------------------------------------------
 * Several hubs on one catalog: owners and file intents
 */

static int
hub_claim_tx (struct catalog *cat, const char *hub_id, int64_t *claimed)
{
  int64_t jobs, tasks;

  jobs = db_exec (cat, "UPDATE backup_jobs SET owner_hub = ?"
                  " WHERE owner_hub IS NULL AND status IN (?, ?)", "sss", hub_id,
                  job_status_name (JOB_RUNNING), job_status_name (JOB_FINISHING));
  if (jobs == -1)
    return -1;
  tasks = db_exec (cat, "UPDATE tasks SET owner_hub = ? WHERE owner_hub IS NULL"
                   " AND status = ?", "ss", hub_id, task_status_name (TASK_RUNNING));
  if (tasks == -1)
    return -1;
  *claimed = jobs + tasks;
  return 0;
}

int
catalog_hub_claim (struct catalog *cat, const char *hub_id, int64_t *claimed)
{
  int64_t n = 0;

  if (hub_id == NULL)
    return core_missing ("hub id");
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true, hub_claim_tx (cat, hub_id, &n), n = 0) == -1)
    return -1;
  if (claimed)
    *claimed = n;
  return 0;
}

/* The hub and job of the intent of (?1, ?2), if there is one. */
#define INTENT_OF \
  "SELECT hub_id, job_id FROM file_intents WHERE repository_id = ?1 AND path = ?2"

/* Read the intent of (repo, path) into *hub and *job: 1, 0 when none, -1. */
static int
intent_get (struct catalog *cat, const char *repo, const char *path, char **hub, char **job)
{
  CLEANUP_STMT struct db_stmt *st = db_prepare (cat, INTENT_OF, "ss", repo, path);
  struct row r = { st, false, false };
  int f;

  if (st == NULL || (f = db_step (st)) != 1)
    return st == NULL ? -1 : f;
  *hub = core_row_text (&r, 0);
  *job = core_row_text (&r, 1);
  if (core_row_done (&r) == -1) {
    free (*hub);
    free (*job);
    *hub = *job = NULL;
    return -1;
  }
  return 1;
}

static int
intent_add_tx (struct catalog *cat, const char *repo, const char *path, const char *hub_id,
               const char *job_id, const char *now)
{
  CLEANUP_FREE char *hub = NULL, *job = NULL;
  int f;

  if ((f = intent_get (cat, repo, path, &hub, &job)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "repository %s: %s is being created or deleted by hub %s%s%s",
                 repo, path, hub ? hub : "?", job ? " for " : "", job ? job : "");
    return -1;
  }
  return db_exec (cat, "INSERT INTO file_intents (repository_id, path, hub_id, job_id,"
                  " created_at) VALUES (?, ?, ?, ?, ?)", "sssss", repo, path, hub_id,
                  job_id, now) == -1 ? -1 : 0;
}

int
catalog_intent_add (struct catalog *cat, const char *repository_id, const char *path,
                    const char *hub_id, const char *job_id)
{
  char now[32];

  if (repository_id == NULL || path == NULL || hub_id == NULL)
    return core_missing ("repository id, path and hub id");
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, intent_add_tx (cat, repository_id, path, hub_id, job_id, now),
                 (void) 0);
}

int
catalog_intent_remove (struct catalog *cat, const char *repository_id, const char *path)
{
  if (repository_id == NULL || path == NULL)
    return core_missing ("repository id and path");
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true,
                 db_exec (cat, "DELETE FROM file_intents WHERE repository_id = ? AND path = ?",
                          "ss", repository_id, path) == -1 ? -1 : 0, (void) 0);
}

/* See catalog_intent_orphan: the disk rows and the intent are read in the
 * write transaction that takes the intent, so no creator comes between. */
static int
intent_orphan_tx (struct catalog *cat, const char *repo, const char *path, const char *hub_id,
                  const char *now, char **other_hub, char **other_job)
{
  int64_t one;
  int f;

  f = db_int (cat, &one, "SELECT 1 FROM backup_disks d"
              " JOIN vm_backup_contexts c ON c.context_id = d.vm_backup_context_id"
              " WHERE c.repository_id = ? AND d.qcow2_path = ?", "ss", repo, path);
  if (f != 0)
    return f == 1 ? CAT_FILE_OWNED : -1;
  if ((f = intent_get (cat, repo, path, other_hub, other_job)) == -1)
    return -1;
  if (f == 1) {
    if (*other_hub && strcmp (*other_hub, hub_id) != 0)
      return CAT_FILE_INTENDED;
    free (*other_hub);
    free (*other_job);
    *other_hub = *other_job = NULL;
    return CAT_FILE_ORPHAN;
  }
  return db_exec (cat, "INSERT INTO file_intents (repository_id, path, hub_id, job_id,"
                  " created_at) VALUES (?, ?, ?, NULL, ?)", "ssss", repo, path, hub_id,
                  now) == -1 ? -1 : CAT_FILE_ORPHAN;
}

int
catalog_intent_orphan (struct catalog *cat, const char *repository_id, const char *path,
                       const char *hub_id, char **other_hub, char **other_job)
{
  char now[32];
  int r = -1;

  if (repository_id == NULL || path == NULL || hub_id == NULL || other_hub == NULL ||
      other_job == NULL)
    return core_missing ("repository id, path, hub id and outputs");
  *other_hub = *other_job = NULL;
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true,
              (r = intent_orphan_tx (cat, repository_id, path, hub_id, now, other_hub,
                                     other_job)) == -1 ? -1 : 0,
              (free (*other_hub), free (*other_job), *other_hub = *other_job = NULL)) == -1)
    return -1;
  return r;
}

int
catalog_intent_clear_hub (struct catalog *cat, const char *hub_id, int64_t *n)
{
  int64_t k = 0;

  if (hub_id == NULL)
    return core_missing ("hub id");
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true,
              (k = db_exec (cat, "DELETE FROM file_intents WHERE hub_id = ?", "s",
                            hub_id)) == -1 ? -1 : 0, k = 0) == -1)
    return -1;
  if (n)
    *n = k;
  return 0;
}

/* The disk ?1 and every disk based on it, recursively.  The anchor selects
 * the column, not the parameter, so that the CTE's column has the column's
 * type. */
#define LOST_DISKS \
  "WITH RECURSIVE lost (id) AS (" \
  "  SELECT id FROM backup_disks WHERE id = ?1" \
  "  UNION" \
  "  SELECT c.id FROM backup_disks c JOIN lost ON c.parent_disk_id = lost.id) "

/* A job that owns the lost disk or one built on it. */
struct lost_job {
  char *id, *ctx;
  enum job_status status;
};

static int
lost_job_read (struct catalog *cat, struct row *r, void *rec)
{
  struct lost_job *j = rec;

  j->id = core_row_text (r, 0);
  ROW_WORD (r, 1, "backup_jobs.status", job_status_parse, &j->status);
  j->ctx = core_row_text (r, 2);
  return core_row_done (r);
}

static void
lost_job_clear (void *rec)
{
  struct lost_job *j = rec;

  free (j->id);
  free (j->ctx);
}

static const struct kind lost_job_kind = {
  sizeof (struct lost_job), lost_job_read, lost_job_clear
};

struct lost_jobs {
  struct lost_job *v;
  size_t n;
};

static void
lost_jobs_clear (struct lost_jobs *l)
{
  core_kind_free (&lost_job_kind, l->v, l->n);
}

/* Fail the disk id with msg, clearing its path and export. */
static int
disk_fail (struct catalog *cat, int64_t id, const char *msg, const char *now)
{
  return db_exec (cat, "UPDATE backup_disks SET status = ?, error = ?,"
                  " qcow2_path = NULL, nbd_export = NULL,"
                  " completed_at = coalesce (completed_at, ?) WHERE id = ?",
                  "sssI", disk_status_name (DISK_FAILED), msg, now, id) == -1 ? -1 : 0;
}

/* Fail a disk whose file is gone and every disk built on it, clearing
 * their paths and exports.  Their jobs, if running, finishing or
 * completed, fail too; an active one also stops its other disks (their
 * files stay referenced until the job is deleted) and counts as a failed
 * backup.  A completed one keeps its place in successful_backups: that is
 * history.  The rows of removing jobs stay as they are: a prune task owns
 * them and their files (a head merge renames the file of the full it
 * removes over its kept child's before the catalog step: such a file is
 * gone on purpose). */
static int
disk_lost_tx (struct catalog *cat, int64_t disk_id, const char *reason, const char *now)
{
  __attribute__((cleanup (lost_jobs_clear))) struct lost_jobs jobs = { 0 };
  CLEANUP_FREE char *child_msg = NULL, *job_msg = NULL, *word = NULL;
  CLEANUP_IDSET struct idset ids = { 0 };
  int f;

  if ((f = db_text (cat, &word, "SELECT j.status FROM backup_disks d"
                    " JOIN backup_jobs j ON j.id = d.backup_job_id WHERE d.id = ?",
                    "I", disk_id)) != 1) {
    if (f == 0)
      error_set (ERR_NOT_FOUND, "backup disk %" PRId64 " not found", disk_id);
    return -1;
  }
  if (strcmp (word, job_status_name (JOB_REMOVING)) == 0)
    return 0;
  if (asprintf (&child_msg, "based on lost backup disk %" PRId64 ": %s",
                disk_id, reason) == -1 ||
      asprintf (&job_msg, "backup disk %" PRId64 " lost: %s", disk_id, reason) == -1) {
    catalog_oom ();
    return -1;
  }
  {
    CLEANUP_STMT struct db_stmt *st =
      db_prepare (cat, LOST_DISKS "SELECT l.id FROM lost l"
                  " JOIN backup_disks d ON d.id = l.id"
                  " JOIN backup_jobs j ON j.id = d.backup_job_id"
                  " WHERE l.id <> ?1 AND j.status <> ?2 ORDER BY l.id",
                  "Is", disk_id, job_status_name (JOB_REMOVING));
    if (core_collect_ids (st, &ids) == -1)
      return -1;
  }
  {
    CLEANUP_STMT struct db_stmt *st =
      db_prepare (cat, LOST_DISKS "SELECT DISTINCT j.id, j.status, j.vm_backup_context_id"
                  " FROM backup_jobs j JOIN backup_disks d ON d.backup_job_id = j.id"
                  " WHERE d.id IN (SELECT id FROM lost) ORDER BY j.id", "I", disk_id);
    if (core_collect_rows (cat, st, &lost_job_kind, (void **) &jobs.v, &jobs.n) == -1)
      return -1;
  }

  if (disk_fail (cat, disk_id, reason, now) == -1)
    return -1;
  for (size_t i = 0; i < ids.n; i++)
    if (disk_fail (cat, ids.v[i], child_msg, now) == -1)
      return -1;

  for (size_t i = 0; i < jobs.n; i++) {
    const struct lost_job *j = &jobs.v[i];
    bool active = job_status_active (j->status);

    if (!active && j->status != JOB_COMPLETED)
      continue;
    if (db_exec (cat, "UPDATE backup_jobs SET status = ?, error = ?,"
                 " completed_at = coalesce (completed_at, ?) WHERE id = ?",
                 "ssss", job_status_name (JOB_FAILED), job_msg, now, j->id) == -1)
      return -1;
    if (active) {
      /* A failed job has no running disks: the others stop too.  Their
       * files stay referenced, to go when the job is deleted. */
      if (db_exec (cat, "UPDATE backup_disks SET status = ?, error = 'job failed',"
                   " nbd_export = NULL, completed_at = ?"
                   " WHERE backup_job_id = ? AND status IN (?, ?)", "sssss",
                   disk_status_name (DISK_FAILED), now, j->id,
                   disk_status_name (DISK_PENDING), disk_status_name (DISK_RUNNING)) == -1 ||
          db_exec (cat, "UPDATE vm_backup_contexts SET failed_backups = failed_backups + 1,"
                   " updated_at = ? WHERE context_id = ?", "ss", now, j->ctx) == -1)
        return -1;
    }
    if (core_context_refresh_last (cat, j->ctx, now) == -1)
      return -1;
  }
  return 0;
}

int
catalog_disk_lost (struct catalog *cat, int64_t disk_id, const char *reason)
{
  char now[32];

  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, disk_lost_tx (cat, disk_id, reason ? reason : "file lost", now),
                 (void) 0);
}
