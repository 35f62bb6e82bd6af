/* catalog/lifecycle.c - tasks and prunes: the task rows of long-running
 * work, the start of a prune (its jobs turned removing) and the commit of
 * each merge step.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/core-int.h"
#include "util/array.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/state.h"

/* ------------------------------------------------------------------------
 * Tasks and prunes
 *
 * A prune is journaled in the catalog itself: its task row (running) and
 * the jobs it turned from completed to removing.  Each merge step's
 * catalog part (catalog_merge_commit) is one transaction that runs after
 * the step's files are done and before the removed layers' files are
 * deleted, so that a crash leaves either the rows of files that still
 * exist, or files that no row owns.
 */

#define TASK_SELECT \
  "SELECT id, kind, context_id, status, steps_done, steps_total, message, error," \
  " result, created_at, updated_at, completed_at, owner_hub FROM tasks"

/* Copy a TASK_SELECT row into *o (owned by the caller). */
static int
task_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_task *o = rec;

  (void) cat;
  o->id = core_row_text (r, 0);
  ROW_WORD (r, 1, "tasks.kind", task_kind_parse, &o->kind);
  o->context_id = core_row_text (r, 2);
  ROW_WORD (r, 3, "tasks.status", task_status_parse, &o->status);
  o->steps_done = core_row_int (r, 4);
  o->steps_total = core_row_int (r, 5);
  o->message = core_row_text (r, 6);
  o->error = core_row_text (r, 7);
  o->result = core_row_text (r, 8);
  o->created_at = core_row_text (r, 9);
  o->updated_at = core_row_text (r, 10);
  o->completed_at = core_row_text (r, 11);
  o->owner_hub = core_row_text (r, 12);
  return core_row_done (r);
}

static void
task_clear (void *t)
{
  cat_task_clear (t);
}

static const struct kind task_kind = { sizeof (struct cat_task), task_read, task_clear };

/* What no catalog could accept of a new task. */
static int
task_check (const struct cat_task *t)
{
  if (t == NULL || t->id == NULL)
    return core_missing ("task id");
  if (t->steps_done < 0 || t->steps_total < 0)
    return catalog_fail (ERR_INVALID, "task %s: steps must not be negative", t->id);
  return 0;
}

/* Insert t as running; the taken id is checked first so that the
 * conflict says so. */
static int
task_insert_tx (struct catalog *cat, const struct cat_task *t, const char *now)
{
  const char *at = t->created_at ? t->created_at : now;
  int64_t one;
  int f;

  if ((f = db_int (cat, &one, "SELECT 1 FROM tasks WHERE id = ?", "s", t->id)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "task %s already exists", t->id);
    return -1;
  }
  if (db_exec (cat, "INSERT INTO tasks (id, kind, context_id, status, steps_done,"
               " steps_total, message, error, result, created_at, updated_at, completed_at,"
               " owner_hub)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, NULL, ?)", "ssssIIsssss",
               t->id, task_kind_name (t->kind), t->context_id,
               task_status_name (TASK_RUNNING), t->steps_done, t->steps_total,
               t->message, t->result, at, at, t->owner_hub) == -1) {
    error_prefix ("adding task %s", t->id);
    return -1;
  }
  return 0;
}

int
catalog_task_insert (struct catalog *cat, const struct cat_task *t)
{
  char now[32];

  if (task_check (t) == -1)
    return -1;
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, task_insert_tx (cat, t, now), (void) 0);
}

int
catalog_task_get (struct catalog *cat, const char *id, struct cat_task *out)
{
  if (id == NULL || out == NULL)
    return core_missing ("task id");
  return core_read_one (cat, &task_kind, out, "task", TASK_SELECT " WHERE id = ?", "s", id, NULL);
}

/* Every task or those of one status, newest first. */
int
catalog_task_list (struct catalog *cat, bool by_status, enum task_status status,
                   struct cat_task **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return core_missing ("output array");
  return core_read_all (cat, &task_kind, (void **) out, n,
                   TASK_SELECT " WHERE ?1 IS NULL OR status = ?1"
                   " ORDER BY created_at DESC, id DESC", "s",
                   by_status ? task_status_name (status) : NULL);
}

/* Check that task id exists and is running. */
static int
task_running (struct catalog *cat, const char *id)
{
  CLEANUP_FREE char *word = NULL;
  enum task_status status;
  int f = db_text (cat, &word, "SELECT status FROM tasks WHERE id = ?", "s", id);

  if (f == 0)
    error_set (ERR_NOT_FOUND, "task %s not found", id);
  if (f != 1)
    return -1;
  if (task_status_parse (word, &status) == -1)
    return core_bad_word ("tasks.status", word);
  if (status != TASK_RUNNING)
    return catalog_fail (ERR_CONFLICT, "task %s is %s, no longer running", id, word);
  return 0;
}

/* Record a running task's progress, or end it (end: status, error). */
static int
task_change_tx (struct catalog *cat, const char *id, bool end, int64_t steps_done,
                int64_t steps_total, const char *message, enum task_status status,
                const char *error, const char *result, const char *now)
{
  if (task_running (cat, id) == -1)
    return -1;
  if (end)
    return db_exec (cat, "UPDATE tasks SET status = ?, error = ?,"
                    " result = COALESCE(?, result), completed_at = ?, updated_at = ?"
                    " WHERE id = ?", "ssssss", task_status_name (status), error, result,
                    now, now, id) == -1 ? -1 : 0;
  return db_exec (cat, "UPDATE tasks SET steps_done = ?, steps_total = ?, message = ?,"
                  " result = COALESCE(?, result), updated_at = ? WHERE id = ?",
                  "IIssss", steps_done, steps_total, message, result, now, id) == -1 ? -1 : 0;
}

int
catalog_task_update (struct catalog *cat, const char *id, int64_t steps_done,
                     int64_t steps_total, const char *message, const char *result)
{
  char now[32];

  if (id == NULL)
    return core_missing ("task id");
  if (steps_done < 0 || steps_total < 0)
    return catalog_fail (ERR_INVALID, "task %s: steps must not be negative", id);
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, task_change_tx (cat, id, false, steps_done, steps_total, message,
                                            TASK_RUNNING, NULL, result, now), (void) 0);
}

int
catalog_task_end (struct catalog *cat, const char *id, enum task_status status,
                  const char *error, const char *result)
{
  char now[32];

  if (id == NULL)
    return core_missing ("task id");
  if (status != TASK_COMPLETED && status != TASK_FAILED)
    return catalog_fail (ERR_INVALID, "a task can only end as completed or failed, not %s",
                         task_status_name (status));
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, task_change_tx (cat, id, true, 0, 0, NULL, status, error,
                                            result, now), (void) 0);
}

/* Check that job id may be chosen for removal by a prune of context ctx,
 * whose newest completed job is last (NULL when none): a completed,
 * unprotected job of the context, not its newest. */
static int
prune_check_job (struct catalog *cat, const char *id, const char *ctx, const char *last)
{
  CLEANUP_STMT struct db_stmt *st =
    db_prepare (cat, "SELECT status, protected FROM backup_jobs"
                " WHERE id = ? AND vm_backup_context_id = ?", "ss", id, ctx);
  struct row row = { st, false, false };
  enum job_status status;
  int64_t prot;
  int r;

  if (st == NULL || (r = db_step (st)) == -1)
    return -1;
  if (r == 0)
    return catalog_fail (ERR_CONFLICT, "backup %s is not a backup of context %s; plan again",
                         id, ctx);
  ROW_WORD (&row, 0, "backup_jobs.status", job_status_parse, &status);
  prot = core_row_int (&row, 1);
  if (core_row_done (&row) == -1)
    return -1;
  if (status != JOB_COMPLETED)
    return catalog_fail (ERR_CONFLICT, "backup %s is %s, not completed; plan again", id,
                         status == JOB_REMOVING ? "already being removed"
                         : job_status_name (status));
  if (prot == 1)
    return catalog_fail (ERR_CONFLICT, "backup %s is protected; plan again", id);
  if (last && strcmp (last, id) == 0)
    return catalog_fail (ERR_CONFLICT, "backup %s is the newest completed backup of context"
                         " %s, which is always kept; plan again", id, ctx);
  return 0;
}

/* Check every job to remove, then record the task and turn them into
 * removing jobs. */
static int
prune_begin_tx (struct catalog *cat, const struct cat_task *task, char *const *remove_ids,
                const char *now)
{
  CLEANUP_FREE char *last = NULL;
  int f;

  f = db_text (cat, &last, "SELECT last_backup_id FROM vm_backup_contexts"
               " WHERE context_id = ?", "s", task->context_id);
  if (f == 0)
    error_set (ERR_NOT_FOUND, "backup context %s not found", task->context_id);
  if (f != 1)
    return -1;
  for (char *const *id = remove_ids; *id; id++)
    if (prune_check_job (cat, *id, task->context_id, last) == -1)
      return -1;
  if (task_insert_tx (cat, task, now) == -1)
    return -1;
  for (char *const *id = remove_ids; *id; id++)
    if (db_exec (cat, "UPDATE backup_jobs SET status = ? WHERE id = ?", "ss",
                 job_status_name (JOB_REMOVING), *id) == -1)
      return -1;
  return 0;
}

int
catalog_prune_begin (struct catalog *cat, const struct cat_task *task,
                     char *const *remove_ids)
{
  char now[32];

  if (task_check (task) == -1)
    return -1;
  if (task->context_id == NULL || remove_ids == NULL)
    return core_missing ("the task's context and the list of backups to remove");
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, prune_begin_tx (cat, task, remove_ids, now), (void) 0);
}

/* A set of job ids, in insertion order. */
struct jobset {
  char **v;
  size_t n, cap;
};

static void
jobset_clear (struct jobset *s)
{
  for (size_t i = 0; i < s->n; i++)
    free (s->v[i]);
  free (s->v);
  *s = (struct jobset) { 0 };
}

/* Add a copy of id unless it is there: 1 when added, 0 when it was there,
 * -1 when memory ran out. */
static int
jobset_add (struct jobset *s, const char *id)
{
  char **slot;

  for (size_t i = 0; i < s->n; i++)
    if (strcmp (s->v[i], id) == 0)
      return 0;
  if ((slot = array_push ((void **) &s->v, s->n, &s->cap, sizeof *slot)) == NULL)
    return -1;
  if ((*slot = strdup (id)) == NULL) {
    catalog_oom ();
    return -1;
  }
  s->n++;
  return 1;
}

#define CLEANUP_JOBSET __attribute__((cleanup (jobset_clear)))

/* Where a disk row stands, for the checks of a merge step. */
struct place {
  int64_t id, parent;           /* parent: -1 for a full */
  int disk_index;
  char *job, *ctx;
  enum job_status job_status;
};

#define PLACE_SELECT \
  "SELECT d.id, d.parent_disk_id, d.disk_index, d.backup_job_id," \
  " d.vm_backup_context_id, j.status" \
  " FROM backup_disks d JOIN backup_jobs j ON j.id = d.backup_job_id"

static int
place_read (struct catalog *cat, struct row *r, void *rec)
{
  struct place *p = rec;

  (void) cat;
  p->id = core_row_int (r, 0);
  p->parent = core_row_int (r, 1);
  p->disk_index = (int) core_row_int (r, 2);
  p->job = core_row_text (r, 3);
  p->ctx = core_row_text (r, 4);
  ROW_WORD (r, 5, "backup_jobs.status", job_status_parse, &p->job_status);
  return core_row_done (r);
}

static void
place_clear (void *rec)
{
  struct place *p = rec;

  free (p->job);
  free (p->ctx);
  memset (p, 0, sizeof *p);
}

static const struct kind place_kind = { sizeof (struct place), place_read, place_clear };

#define CLEANUP_PLACE __attribute__((cleanup (place_clear)))

/* Read disk row id's place into *p and check that its job is want: 0, or
 * -1 with ERR_CONFLICT saying that row id is not "what" (a removed row,
 * the kept row, ...). */
static int
place_get (struct catalog *cat, int64_t id, enum job_status want, const char *what,
           struct place *p)
{
  CLEANUP_STMT struct db_stmt *st = db_prepare (cat, PLACE_SELECT " WHERE d.id = ?", "I", id);
  int r = core_first_row (cat, st, &place_kind, p);

  if (r == 0)
    return catalog_fail (ERR_CONFLICT, "backup disk %" PRId64 " (%s) does not exist;"
                         " plan again", id, what);
  if (r == 1 && p->job_status != want)
    return catalog_fail (ERR_CONFLICT, "backup disk %" PRId64 " (%s) belongs to backup %s,"
                         " which is %s, not %s; plan again", id, what, p->job,
                         job_status_name (p->job_status), job_status_name (want));
  return r == 1 ? 0 : -1;
}

/* The jobs a merge step deletes besides the removed rows: every failed or
 * cancelled job with a disk row based on a row in rows, directly or
 * through its own rows, whose ids join rows (from the end, so that the
 * walk reaches their dependents too) and whose job ids join jobs.  Any
 * other row based on one of them, but the kept one, is a conflict: a
 * point would lose its base. */
static int
merge_hanging (struct catalog *cat, int64_t kept, struct idset *rows, struct jobset *jobs)
{
  for (size_t i = 0; i < rows->n; i++) {
    struct { struct place *v; size_t n; } kids = { 0 };
    CLEANUP_STMT struct db_stmt *st =
      db_prepare (cat, PLACE_SELECT " WHERE d.parent_disk_id = ? ORDER BY d.id", "I",
                  rows->v[i]);
    int r = 0;

    if (core_collect_rows (cat, st, &place_kind, (void **) &kids.v, &kids.n) == -1)
      return -1;
    for (size_t k = 0; r == 0 && k < kids.n; k++) {
      const struct place *c = &kids.v[k];
      CLEANUP_STMT struct db_stmt *own = NULL;

      if (c->id == kept || core_idset_has (rows, c->id))
        continue;
      if (c->job_status != JOB_FAILED && c->job_status != JOB_CANCELLED) {
        r = catalog_fail (ERR_CONFLICT, "backup disk %" PRId64 " of backup %s (%s) is based"
                          " on backup disk %" PRId64 ", which this step removes; plan again",
                          c->id, c->job, job_status_name (c->job_status), rows->v[i]);
        break;
      }
      if ((r = jobset_add (jobs, c->job)) <= 0)
        continue;               /* known already (r = 0), or r = -1 ends the loop */
      own = db_prepare (cat, "SELECT id FROM backup_disks WHERE backup_job_id = ?"
                        " ORDER BY id", "s", c->job);
      r = core_collect_ids (own, rows);
    }
    core_kind_free (&place_kind, kids.v, kids.n);
    if (r == -1)
      return -1;
  }
  return 0;
}

/* Compare disk rows by id, for qsort. */
static int
disk_by_id (const void *a, const void *b)
{
  const struct cat_disk *x = a, *y = b;

  return (x->id > y->id) - (x->id < y->id);
}

/* Check the step's rows (see catalog.h), find the failed and cancelled
 * jobs hanging on the removed rows, read every row to delete into *out
 * (sorted by id), then write: the kept row's new parent first (so that no
 * row to delete is its parent any more), the rows newest first, the
 * hanging jobs, and the removing jobs left without rows. */
static int
merge_commit_tx (struct catalog *cat, int64_t kept, int64_t new_parent,
                 const int64_t *removed, size_t n_removed, const char *now,
                 struct cat_disk_list *out)
{
  CLEANUP_PLACE struct place first = { 0 }, k = { 0 }, np = { 0 };
  CLEANUP_IDSET struct idset rows = { 0 };
  CLEANUP_JOBSET struct jobset hanging = { 0 }, removing = { 0 };
  size_t cap = 0;

  for (size_t i = 0; i < n_removed; i++) {
    CLEANUP_PLACE struct place p = { 0 };

    if (place_get (cat, removed[i], JOB_REMOVING, "a removed row", &p) == -1)
      return -1;
    if (i > 0 && strcmp (p.ctx, first.ctx) != 0)
      return catalog_fail (ERR_CONFLICT, "backup disks %" PRId64 " and %" PRId64 " are in"
                           " different contexts; a merge step works in one", removed[0],
                           removed[i]);
    if (core_idset_add (&rows, p.id) == -1 || jobset_add (&removing, p.job) == -1)
      return -1;
    if (i == 0) {
      first = p;
      p = (struct place) { 0 };
    }
  }
  if (kept >= 0) {
    if (place_get (cat, kept, JOB_COMPLETED, "the kept row", &k) == -1)
      return -1;
    if (!core_idset_has (&rows, k.parent))
      return catalog_fail (ERR_CONFLICT, "backup disk %" PRId64 " (the kept row) is not based"
                           " on a removed row; plan again", kept);
  }
  if (new_parent >= 0) {
    if (place_get (cat, new_parent, JOB_COMPLETED, "the new parent", &np) == -1)
      return -1;
    if (strcmp (np.ctx, k.ctx) != 0 || np.disk_index != k.disk_index)
      return catalog_fail (ERR_CONFLICT, "backup disk %" PRId64 " (the new parent) is not"
                           " of the context and disk of backup disk %" PRId64 "; plan again",
                           new_parent, kept);
  }
  if (merge_hanging (cat, kept, &rows, &hanging) == -1)
    return -1;

  for (size_t i = 0; i < rows.n; i++) {
    struct cat_disk *d = array_push ((void **) &out->v, out->n, &cap, sizeof *d);
    CLEANUP_STMT struct db_stmt *st =
      db_prepare (cat, DISK_SELECT DISK_FROM " WHERE d.id = ?", "I", rows.v[i]);
    int f;

    if (d == NULL || (f = core_first_row (cat, st, &core_disk_kind, d)) == -1)
      return -1;
    if (f == 0)
      return catalog_fail (ERR_INTERNAL, "backup disk %" PRId64 " vanished", rows.v[i]);
    out->n++;
  }
  qsort (out->v, out->n, sizeof *out->v, disk_by_id);

  if (kept >= 0 &&
      (new_parent >= 0
       ? db_exec (cat, "UPDATE backup_disks SET parent_disk_id = ? WHERE id = ?", "II",
                  new_parent, kept)
       : db_exec (cat, "UPDATE backup_disks SET parent_disk_id = NULL, backup_type = ?"
                  " WHERE id = ?", "sI", backup_type_name (BACKUP_FULL), kept)) == -1)
    return -1;
  /* A point whose disks are all fulls now is a full: listings, the
   * context's last_backup_type and a chain's first job say so. */
  if (kept >= 0 && new_parent < 0 &&
      db_exec (cat, "UPDATE backup_jobs SET backup_type = ?1 WHERE id = ?2 AND NOT EXISTS"
               " (SELECT 1 FROM backup_disks WHERE backup_job_id = ?2 AND backup_type <> ?1)",
               "ss", backup_type_name (BACKUP_FULL), k.job) == -1)
    return -1;
  if (core_disks_delete (cat, out->v, out->n) == -1)
    return -1;
  for (size_t i = 0; i < hanging.n; i++)
    if (db_exec (cat, "DELETE FROM backup_jobs WHERE id = ?", "s", hanging.v[i]) == -1)
      return -1;
  for (size_t i = 0; i < removing.n; i++)
    if (db_exec (cat, "DELETE FROM backup_jobs WHERE id = ?1 AND NOT EXISTS"
                 " (SELECT 1 FROM backup_disks WHERE backup_job_id = ?1)", "s",
                 removing.v[i]) == -1)
      return -1;
  return core_context_refresh_last (cat, first.ctx, now);
}

int
catalog_merge_commit (struct catalog *cat, int64_t kept_disk_id, int64_t new_parent_disk_id,
                      const int64_t *removed_ids, size_t n_removed,
                      struct cat_disk **deleted, size_t *n_deleted)
{
  CLEANUP_CAT_DISK_LIST struct cat_disk_list l = { 0 };
  char now[32];

  if (n_removed == 0 || removed_ids == NULL)
    return catalog_fail (ERR_INVALID, "a merge step removes at least one disk row");
  if (kept_disk_id < 0 && new_parent_disk_id >= 0)
    return catalog_fail (ERR_INVALID, "a merge step without a kept row has no new parent");
  if ((deleted == NULL) != (n_deleted == NULL))
    return core_missing ("count of deleted disks");
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true, merge_commit_tx (cat, kept_disk_id, new_parent_disk_id, removed_ids,
                                          n_removed, now, &l),
              cat_disk_list_clear (&l)) == -1)
    return -1;
  core_disks_hand_over (&l, deleted, n_deleted);
  return 0;
}
