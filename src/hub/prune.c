/* hub/prune.c - retention and prune tasks: which points of a context stay,
 * and the merges that take the others out of their chains.
 *
 * A prune is a task (GET /api/v1/tasks/{id}).  Its first transaction,
 * catalog_prune_begin, records the task and turns every point it removes
 * from "completed" into "removing": from then on the catalog no longer
 * lists them as points, and the task's work is written down in the catalog
 * itself.  The task then takes one merge step at a time, each the oldest
 * run of consecutive removing rows of one disk chain (find_step):
 *
 *   head    the run starts at the chain's full and a kept point C follows:
 *           C's data is committed into the full's file, which is renamed
 *           over C's (storage/merge.h, merge_head); C becomes a full
 *   middle  kept A, removed run, kept C: C is made independent of the run
 *           and backed by A (merge_middle)
 *   tail    no kept point follows: only rows and files go
 *
 * and records it in one transaction (catalog_merge_commit), after which the
 * removed layers' files are deleted.  Every file step is safe to redo and
 * finds out from the files how far it got, so the journal needs nothing
 * but the catalog: a task of this hub's (tasks.owner_hub) still "running"
 * at start-up simply goes on
 * (hub_prune_recover first settles a head step whose rename happened, so
 * that the start-up file check never sees its full's file missing).
 *
 * A step never writes a file somebody reads: it waits while its context has
 * an active backup or an open restore export, or one of its files is open,
 * and says so in the task's message; backup starts and restore exports of a
 * context wait while one of its steps runs (hub_merge_wait).  Waiting tasks
 * leave the worker and are queued again when a backup or restore of their
 * context ends (hub_prune_wake).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "hub/hub-int.h"
#include "integrity/manifest.h"
#include "lifecycle/retention.h"
#include "storage/merge.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/crash.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

/* --- Merging contexts: the steps' exclusion (hub->lock) --------------- */

static bool
merging (struct hub *hub, const char *context_id)
{
  return hub_names_has (hub->merging, hub->n_merging, context_id);
}

void
hub_merge_wait (struct hub *hub, const char *context_id)
{
  bool told = false;

  while (context_id && merging (hub, context_id)) {
    if (!told)
      log_info ("context %s: waiting for the merge step of a prune to end", context_id);
    told = true;
    pthread_cond_wait (&hub->merge_cond, &hub->lock);
  }
}

static int
merging_add (struct hub *hub, const char *context_id)
{
  return hub_names_add (&hub->merging, &hub->n_merging, context_id);
}

static void
merging_remove (struct hub *hub, const char *context_id)
{
  SCOPED_LOCK (&hub->lock);
  hub_names_remove (hub->merging, &hub->n_merging, context_id);
  pthread_cond_broadcast (&hub->merge_cond);
}

/* --- Reading a context ------------------------------------------------- */

/* Every job of the context, whatever its status, with its disks. */
static int
context_jobs (struct hub *hub, const struct cat_context *ctx, struct cat_job_list *jobs)
{
  struct cat_job_filter f = { .vm_name = ctx->vm_name, .repository_id = ctx->repository_id };
  int64_t total;

  return catalog_backup_list (hub->cat, &f, &jobs->v, &jobs->n, &total);
}

/* A disk row of the context and the status of its job. */
struct row {
  const struct cat_disk *d;
  enum job_status job_status;
};

struct rows {
  struct row *v;
  size_t n;
};

static void
rows_clear (struct rows *r)
{
  free (r->v);
}
#define CLEANUP_ROWS __attribute__((cleanup (rows_clear)))

static int
rows_of (const struct cat_job_list *jobs, struct rows *out)
{
  size_t n = 0;

  for (size_t i = 0; i < jobs->n; i++)
    n += jobs->v[i].n_disks;
  out->v = calloc (n + 1, sizeof *out->v);
  if (out->v == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < jobs->n; i++)
    for (size_t k = 0; k < jobs->v[i].n_disks; k++)
      out->v[out->n++] = (struct row) { &jobs->v[i].disks[k], jobs->v[i].status };
  return 0;
}

static const struct row *
row_by_id (const struct rows *rows, int64_t id)
{
  for (size_t i = 0; id > 0 && i < rows->n; i++)
    if (rows->v[i].d->id == id)
      return &rows->v[i];
  return NULL;
}

/* --- One merge step --------------------------------------------------- */

enum step_kind { STEP_HEAD, STEP_MIDDLE, STEP_TAIL };

struct step {
  enum step_kind kind;
  int disk_index;
  const struct cat_disk *base;          /* A, for a middle step */
  const struct cat_disk **removed;      /* oldest first (owned array) */
  size_t n_removed;
  const struct cat_disk *kept;          /* C, or NULL for a tail */
  const char *active_child;             /* the job of a running disk built
                                         * on the run, which must end first */
};

static void
step_clear (struct step *st)
{
  free (st->removed);
  st->removed = NULL;
}
#define CLEANUP_STEP __attribute__((cleanup (step_clear)))

static const char *
step_kind_name (enum step_kind k)
{
  return k == STEP_HEAD ? "head" : k == STEP_MIDDLE ? "middle" : "tail";
}

/* The run of removing rows that starts at start, and what follows it. */
static int
build_step (const struct rows *rows, const struct row *start, struct step *st)
{
  const struct row *cur = start, *parent = row_by_id (rows, start->d->parent_disk_id);

  st->disk_index = start->d->disk_index;
  if (start->d->parent_disk_id > 0) {
    if (parent == NULL || parent->job_status != JOB_COMPLETED) {
      error_set (ERR_CONFLICT, "disk %d of backup %s is based on a disk that is %s; "
                 "it cannot be merged", start->d->disk_index, start->d->backup_job_id,
                 parent ? job_status_name (parent->job_status) : "gone");
      return -1;
    }
    st->base = parent->d;
  }
  st->removed = calloc (rows->n + 1, sizeof *st->removed);
  if (st->removed == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  while (cur) {
    const struct row *next = NULL;

    st->removed[st->n_removed++] = cur->d;
    for (size_t i = 0; i < rows->n; i++) {
      const struct row *c = &rows->v[i];
      if (c->d->parent_disk_id != cur->d->id)
        continue;
      if (c->job_status == JOB_REMOVING)
        next = c;
      else if (c->job_status == JOB_COMPLETED)
        st->kept = c->d;
      else if (job_status_active (c->job_status))
        st->active_child = c->d->backup_job_id;
    }
    cur = next;
  }
  st->kind = st->kept == NULL ? STEP_TAIL : st->base == NULL ? STEP_HEAD : STEP_MIDDLE;
  return 0;
}

/* The next step of the context: the run whose first row is the oldest.
 * Returns 1 with *st set, 0 when nothing is left to merge, -1 on error. */
static int
find_step (const struct rows *rows, struct step *st)
{
  const struct row *start = NULL;

  for (size_t i = 0; i < rows->n; i++) {
    const struct row *r = &rows->v[i], *parent;
    if (r->job_status != JOB_REMOVING)
      continue;
    parent = row_by_id (rows, r->d->parent_disk_id);
    if (parent && parent->job_status == JOB_REMOVING)
      continue;
    if (start == NULL || r->d->id < start->d->id)
      start = r;
  }
  if (start == NULL)
    return 0;
  return build_step (rows, start, st) == -1 ? -1 : 1;
}

static int64_t
file_bytes (const char *repo_path, const char *rel)
{
  CLEANUP_FREE char *path = rel ? repo_abspath (repo_path, rel) : NULL;
  struct stat sb;

  if (path == NULL || stat (path, &sb) == -1)
    return 0;
  return (int64_t) sb.st_blocks * 512;
}

/* Why the step can't run now, into why (empty when it can).  hub->lock. */
static void
step_blocked (struct hub *hub, const struct cat_context *ctx,
              const struct cat_job_list *jobs, const struct cat_repository *repo,
              const struct step *st, char *why, size_t len)
{
  why[0] = '\0';
  if (merging (hub, ctx->context_id)) {
    snprintf (why, len, "waiting for another merge step of the context");
    return;
  }
  if (hub_verifying (hub, ctx->context_id)) {
    snprintf (why, len, "waiting for a verify task reading the context");
    return;
  }
  for (size_t i = 0; i < jobs->n; i++)
    if (job_status_active (jobs->v[i].status)) {
      snprintf (why, len, "waiting for backup %s (%s) to end", jobs->v[i].id,
                job_status_name (jobs->v[i].status));
      return;
    }
  if (hub_restores_check_context (hub, ctx->context_id) == -1) {
    snprintf (why, len, "waiting: %s", error_message ());
    return;
  }
  for (size_t i = 0; i <= st->n_removed; i++) {
    const struct cat_disk *d = i < st->n_removed ? st->removed[i] : st->kept;
    if (d && d->qcow2_path && repo_image_in_use (repo->path, d->qcow2_path)) {
      snprintf (why, len, "waiting: %s is open in another program", d->qcow2_path);
      return;
    }
  }
}

/* The files of a step, oldest first: [A,] removed..., C.  Pointers into
 * the rows. */
static size_t
step_files (const struct step *st, const char **rels)
{
  size_t n = 0;

  if (st->kind == STEP_MIDDLE)
    rels[n++] = st->base->qcow2_path;
  for (size_t i = 0; i < st->n_removed; i++)
    rels[n++] = st->removed[i]->qcow2_path;
  if (st->kept)
    rels[n++] = st->kept->qcow2_path;
  return n;
}

/* The kept file's manifest after its merge step (integrity/manifest.h):
 * the union of its own records and the removed layers' (its own win),
 * with its facts as the step leaves them.  Written before the step is
 * recorded, and the same again when the step is redone: the removed
 * layers' manifests stay until their rows are gone.  A layer without a
 * manifest (a backup older than manifests) leaves one of facts only. */
static int
step_manifest (struct hub *hub, const struct cat_repository *repo, const struct step *st)
{
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  CLEANUP_FREE char *kept_file = repo_abspath (repo->path, st->kept->qcow2_path);
  CLEANUP_FREE char *final = kept_file ? mf_path_for (kept_file) : NULL;
  CLEANUP_JSON json_t *facts = NULL;
  char **inputs = NULL;
  struct cat_disk d;
  bool full = true;
  int ret = -1;

  if (final == NULL || catalog_backup_get (hub->cat, st->kept->backup_job_id, &job) == -1)
    return -1;
  d = *st->kept;
  if (st->kind == STEP_HEAD) {
    d.backup_type = BACKUP_FULL;
    d.parent_backup_id = NULL;
    d.parent_disk_id = -1;
  }
  else
    d.parent_backup_id = st->base->backup_job_id;
  /* The job turns full when none of its disks stays incremental (the
   * catalog's rule in catalog_merge_commit). */
  for (size_t i = 0; i < job.n_disks; i++)
    if (job.disks[i].disk_index != d.disk_index &&
        job.disks[i].backup_type == BACKUP_INCREMENTAL)
      full = false;
  if (st->kind == STEP_HEAD && full)
    job.backup_type = BACKUP_FULL;
  facts = hub_manifest_facts (&job, &d, "merge");
  inputs = calloc (st->n_removed + 2, sizeof *inputs);
  if (facts == NULL || inputs == NULL)
    goto out;
  inputs[0] = strdup (final);
  for (size_t i = 0; i < st->n_removed; i++) {
    CLEANUP_FREE char *f = repo_abspath (repo->path, st->removed[st->n_removed - 1 - i]->qcow2_path);
    inputs[i + 1] = f ? mf_path_for (f) : NULL;
  }
  for (size_t i = 0; i <= st->n_removed; i++)
    if (inputs[i] == NULL) {
      error_set (ERR_INTERNAL, "out of memory");
      goto out;
    }
  ret = mf_union ((const char *const *) inputs, st->n_removed + 1, facts, final);
  if (ret == -1 && error_category () == ERR_NOT_FOUND) {
    log_warn ("prune: backup %s disk %d: %s; its manifest keeps facts only",
              st->kept->backup_job_id, st->disk_index, error_message ());
    ret = mf_finish (NULL, facts, final);
  }

 out:
  for (size_t i = 0; inputs && i <= st->n_removed; i++)
    free (inputs[i]);
  free (inputs);
  if (ret == -1)
    error_prefix ("the manifest of backup %s disk %d", st->kept->backup_job_id,
                  st->disk_index);
  return ret;
}

/* Do the files of a step, then record it and delete what it removed.
 * *freed grows by the bytes the step gave back. */
static int
step_run (struct hub *hub, const struct cat_repository *repo, const struct step *st,
          int64_t *freed)
{
  CLEANUP_FREE const char **rels = calloc (st->n_removed + 2, sizeof *rels);
  CLEANUP_FREE int64_t *removed_ids = calloc (st->n_removed + 1, sizeof *removed_ids);
  int64_t before = 0, after;
  size_t n;
  CLEANUP_CAT_DISK_LIST struct cat_disk_list deleted = { 0 };

  if (rels == NULL || removed_ids == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  n = step_files (st, rels);

  for (size_t i = 0; i < n; i++)
    if (rels[i] == NULL) {
      error_set (ERR_CONFLICT, "a disk of the chain to merge has no file");
      return -1;
    }
  for (size_t i = st->kind == STEP_MIDDLE ? 1 : 0; i < n; i++)
    before += file_bytes (repo->path, rels[i]);
  log_info ("prune: %s merge of disk %d: %zu layer(s) out%s%s", step_kind_name (st->kind),
            st->disk_index, st->n_removed, st->kept ? ", into backup " : "",
            st->kept ? st->kept->backup_job_id : "");
  if (st->kind == STEP_HEAD && merge_head (repo->path, rels, n) == -1)
    return -1;
  if (st->kind == STEP_MIDDLE && merge_middle (repo->path, rels, n) == -1)
    return -1;
  if (st->kept && step_manifest (hub, repo, st) == -1)
    return -1;
  for (size_t i = 0; i < st->n_removed; i++)
    removed_ids[i] = st->removed[i]->id;
  if (catalog_merge_commit (hub->cat, st->kept ? st->kept->id : -1,
                            st->kind == STEP_MIDDLE ? st->base->id : -1, removed_ids,
                            st->n_removed, &deleted.v, &deleted.n) == -1)
    return -1;
  crash_point ("merge:recorded");
  /* Every manifest first (storage/repo.h), then the images. */
  for (size_t i = 0; i < deleted.n; i++)
    if (deleted.v[i].qcow2_path &&
        repo_remove_manifest (repo->path, deleted.v[i].qcow2_path) == -1)
      log_warn ("prune: %s (the next start deletes it)", error_message ());
  for (size_t i = 0; i < deleted.n; i++) {
    bool in_step = false;
    for (size_t k = 0; k < st->n_removed; k++)
      in_step |= deleted.v[i].id == st->removed[k]->id;
    if (!in_step)      /* a failed job's file that hung on the run */
      before += file_bytes (repo->path, deleted.v[i].qcow2_path);
    if (deleted.v[i].qcow2_path &&
        repo_remove_image (repo->path, deleted.v[i].qcow2_path) == -1)
      log_warn ("prune: %s (the next start deletes it)", error_message ());
  }
  after = st->kept ? file_bytes (repo->path, st->kept->qcow2_path) : 0;
  if (before > after)
    *freed += before - after;
  return 0;
}

/* --- Task records ---------------------------------------------------- */

static json_t *
json_ids (char *const *ids)
{
  json_t *a = json_array ();
  for (size_t i = 0; a && ids && ids[i]; i++)
    json_array_append_new (a, json_string (ids[i]));
  return a;
}

/* The task's result object, read back from its text (an empty object when
 * it has none or it does not parse). */
static json_t *
result_of (const struct cat_task *t)
{
  json_t *j = t->result ? json_loads (t->result, 0, NULL) : NULL;
  if (j == NULL || !json_is_object (j)) {
    json_decref (j);
    j = json_object ();
  }
  return j;
}

static char *
result_text (json_t *j)
{
  return j ? json_dumps (j, JSON_COMPACT) : NULL;
}

static void
task_note (struct hub *hub, const char *task_id, int64_t done, int64_t total,
           const char *message, json_t *result)
{
  CLEANUP_FREE char *text = result_text (result);
  if (catalog_task_update (hub->cat, task_id, done, total, message, text) == -1)
    log_warn ("prune task %s: recording progress: %s", task_id, error_message ());
}

static void
task_finish (struct hub *hub, const char *task_id, bool ok, const char *error,
             json_t *result)
{
  CLEANUP_FREE char *text = result_text (result);

  /* Before the end is recorded: whoever sees it sees the new usage. */
  hub_usage_changed (hub);
  if (catalog_task_end (hub->cat, task_id, ok ? TASK_COMPLETED : TASK_FAILED, error,
                        text) == -1)
    log_error ("prune task %s: recording its end: %s", task_id, error_message ());
  else if (ok)
    log_info ("prune task %s completed", task_id);
  else
    log_error ("prune task %s failed: %s", task_id, error);
}

/* Count the steps left (for progress): the runs of removing rows. */
static int64_t
steps_left (const struct rows *rows)
{
  int64_t n = 0;

  for (size_t i = 0; i < rows->n; i++) {
    const struct row *parent;
    if (rows->v[i].job_status != JOB_REMOVING)
      continue;
    parent = row_by_id (rows, rows->v[i].d->parent_disk_id);
    n += parent == NULL || parent->job_status != JOB_REMOVING;
  }
  return n;
}

/* --- Running a task --------------------------------------------------- */

/* Run the task's steps until it is done, must wait, or fails.  With
 * settle_only (at start-up, before the file check), only finish a head
 * step whose rename already happened. */
static void
task_run (struct hub *hub, const char *task_id, bool settle_only)
{
  CLEANUP_CAT_CONTEXT struct cat_context ctx = { 0 };
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  struct cat_task task = { 0 };
  CLEANUP_JSON json_t *result = NULL;
  int64_t freed;

  if (catalog_task_get (hub->cat, task_id, &task) == -1) {
    log_error ("prune task %s: %s", task_id, error_message ());
    return;
  }
  if (task.status != TASK_RUNNING || task.kind != TASK_PRUNE)
    goto out;
  result = result_of (&task);
  freed = json_integer_value (json_object_get (result, "bytes_freed"));
  if (task.context_id == NULL ||
      catalog_context_get (hub->cat, task.context_id, &ctx) == -1 ||
      catalog_repo_get (hub->cat, ctx.repository_id, &repo) == -1) {
    if (!settle_only)
      task_finish (hub, task_id, false, error_message (), result);
    goto out;
  }

  for (;;) {
    CLEANUP_CAT_JOB_LIST struct cat_job_list jobs = { 0 };
    CLEANUP_ROWS struct rows rows = { 0 };
    CLEANUP_STEP struct step st = { 0 };
    char why[512];
    int r;

    if (hub_stopping (hub))
      break;
    if (context_jobs (hub, &ctx, &jobs) == -1 || rows_of (&jobs, &rows) == -1 ||
        (r = find_step (&rows, &st)) == -1) {
      if (!settle_only)
        task_finish (hub, task_id, false, error_message (), result);
      break;
    }
    if (r == 0) {
      if (!settle_only) {
        json_object_set_new (result, "bytes_freed", json_integer (freed));
        task_note (hub, task_id, task.steps_done, task.steps_done, NULL, result);
        task_finish (hub, task_id, true, NULL, result);
      }
      break;
    }
    if (settle_only) {
      /* Only a head step past its rename must be recorded before the
       * start-up check: its full's file is gone. */
      if (st.kind == STEP_HEAD && st.kept && merge_head_done (repo.path, st.kept->qcow2_path) &&
          step_run (hub, &repo, &st, &freed) == 0) {
        log_info ("prune task %s: recorded a merge that was cut off by the last stop",
                  task_id);
        continue;
      }
      break;
    }
    if (st.active_child)
      snprintf (why, sizeof why, "waiting for backup %s to end", st.active_child);
    else {
      SCOPED_LOCK (&hub->lock);
      step_blocked (hub, &ctx, &jobs, &repo, &st, why, sizeof why);
      if (why[0] == '\0' && merging_add (hub, ctx.context_id) == -1)
        snprintf (why, sizeof why, "%s", error_message ());
    }
    if (why[0]) {
      if (task.message == NULL || strcmp (task.message, why) != 0)
        log_info ("prune task %s: %s", task_id, why);
      task_note (hub, task_id, task.steps_done, task.steps_done + steps_left (&rows), why,
                 NULL);
      break;     /* hub_prune_wake queues it again */
    }
    task_note (hub, task_id, task.steps_done, task.steps_done + steps_left (&rows), NULL,
               NULL);
    r = step_run (hub, &repo, &st, &freed);
    merging_remove (hub, ctx.context_id);
    if (r == -1) {
      error_prefix ("%s merge of disk %d", step_kind_name (st.kind), st.disk_index);
      task_finish (hub, task_id, false, error_message (), result);
      break;
    }
    task.steps_done++;
    json_object_set_new (result, "bytes_freed", json_integer (freed));
    task_note (hub, task_id, task.steps_done, task.steps_done + steps_left (&rows) - 1,
               NULL, result);
    free (task.message);
    task.message = NULL;
  }
 out:
  cat_task_clear (&task);
}

static void
task_op (struct hub *hub, const char *task_id)
{
  task_run (hub, task_id, false);
}

static void
queue_task (struct hub *hub, const char *task_id)
{
  if (hub->hooks.run_op)
    hub->hooks.run_op (hub, task_id, task_op);
}

/* Queue every running prune task of this hub (of one context, or all). */
static void
wake (struct hub *hub, const char *context_id)
{
  CLEANUP_CAT_TASK_LIST struct cat_task_list tasks = { 0 };

  if (catalog_task_list (hub->cat, true, TASK_RUNNING, &tasks.v, &tasks.n) == -1) {
    log_warn ("listing running tasks: %s", error_message ());
    return;
  }
  for (size_t i = 0; i < tasks.n; i++)
    if (tasks.v[i].kind == TASK_PRUNE && hub_owns (hub, tasks.v[i].owner_hub) &&
        (context_id == NULL ||
         (tasks.v[i].context_id && strcmp (tasks.v[i].context_id, context_id) == 0)))
      queue_task (hub, tasks.v[i].id);
}

void
hub_prune_wake (struct hub *hub, const char *context_id)
{
  wake (hub, context_id);
}

void
hub_prune_recover (struct hub *hub)
{
  CLEANUP_CAT_TASK_LIST struct cat_task_list tasks = { 0 };

  if (catalog_task_list (hub->cat, true, TASK_RUNNING, &tasks.v, &tasks.n) == -1) {
    log_error ("listing running tasks: %s", error_message ());
    return;
  }
  for (size_t i = 0; i < tasks.n; i++)
    if (tasks.v[i].kind == TASK_PRUNE && hub_owns (hub, tasks.v[i].owner_hub)) {
      log_info ("prune task %s was running when the hub stopped; it goes on",
                tasks.v[i].id);
      task_run (hub, tasks.v[i].id, true);
    }
}

/* --- Planning --------------------------------------------------------- */

void
hub_prune_plan_clear (struct hub_prune_plan *p)
{
  free (p->task_id);
  for (size_t i = 0; p->keep && p->keep[i]; i++)
    free (p->keep[i]);
  for (size_t i = 0; p->remove && p->remove[i]; i++)
    free (p->remove[i]);
  free (p->keep);
  free (p->remove);
  memset (p, 0, sizeof *p);
}

/* The rules: the request's, else the policy of the context's VM. */
static int
rules_for (struct hub *hub, const struct cat_context *ctx, const struct hub_prune_request *req,
           struct retention_rules *rules)
{
  CLEANUP_CAT_VM struct cat_vm vm = { 0 };
  CLEANUP_CAT_POLICY struct cat_policy pol = { 0 };

  if (req->rules_given) {
    *rules = req->rules;
    return 0;
  }
  if (catalog_vm_get (hub->cat, ctx->vm_name, &vm) == 0 && vm.policy &&
      catalog_policy_get (hub->cat, vm.policy, &pol) == 0 && pol.has_retention) {
    *rules = (struct retention_rules) {
      pol.retention.keep_last, pol.retention.keep_hourly, pol.retention.keep_daily,
      pol.retention.keep_weekly, pol.retention.keep_monthly, pol.retention.keep_yearly,
    };
    return 0;
  }
  error_set (ERR_INVALID, "no retention rules given, and VM '%s' has no policy with "
             "retention: give keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly "
             "or keep_yearly", ctx->vm_name);
  return -1;
}

/* Split the context's completed points by the rules. */
static int
select_points (const struct cat_job_list *jobs, const struct retention_rules *rules,
               struct hub_prune_plan *plan, bool *removing_left)
{
  CLEANUP_FREE struct retention_point *pts = calloc (jobs->n + 1, sizeof *pts);
  CLEANUP_FREE const struct cat_job **of = calloc (jobs->n + 1, sizeof *of);
  size_t n = 0, nk = 0, nr = 0;

  plan->keep = calloc (jobs->n + 1, sizeof *plan->keep);
  plan->remove = calloc (jobs->n + 1, sizeof *plan->remove);
  if (!pts || !of || !plan->keep || !plan->remove)
    goto oom;
  *removing_left = false;
  /* The listing is newest first, as retention wants. */
  for (size_t i = 0; i < jobs->n; i++) {
    const struct cat_job *j = &jobs->v[i];
    time_t when;
    *removing_left |= j->status == JOB_REMOVING;
    if (j->status != JOB_COMPLETED)
      continue;
    if (id_time_parse (j->created_at, &when) == -1) {
      error_set (ERR_INTERNAL, "backup %s: unreadable created_at '%s'", j->id,
                 j->created_at);
      return -1;
    }
    pts[n] = (struct retention_point) { .when = when, .is_protected = j->is_protected };
    of[n++] = j;
  }
  retention_select (rules, pts, n);
  for (size_t i = 0; i < n; i++) {
    char *id = strdup (of[i]->id);
    if (id == NULL)
      goto oom;
    if (pts[i].keep)
      plan->keep[nk++] = id;
    else
      plan->remove[nr++] = id;
  }
  return 0;
 oom:
  error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
  return -1;
}

static size_t
n_ids (char *const *ids)
{
  size_t n = 0;
  while (ids && ids[n])
    n++;
  return n;
}

static int
running_prune (struct hub *hub, const char *context_id, char **task_id)
{
  CLEANUP_CAT_TASK_LIST struct cat_task_list tasks = { 0 };

  *task_id = NULL;
  if (catalog_task_list (hub->cat, true, TASK_RUNNING, &tasks.v, &tasks.n) == -1)
    return -1;
  for (size_t i = 0; i < tasks.n; i++)
    if (tasks.v[i].kind == TASK_PRUNE && tasks.v[i].context_id &&
        strcmp (tasks.v[i].context_id, context_id) == 0) {
      *task_id = strdup (tasks.v[i].id);
      return 0;
    }
  return 0;
}

int
hub_prune_start (struct hub *hub, const struct hub_prune_request *req,
                 struct hub_prune_plan *out)
{
  CLEANUP_CAT_CONTEXT struct cat_context ctx = { 0 };
  CLEANUP_CAT_JOB_LIST struct cat_job_list jobs = { 0 };
  struct hub_prune_plan plan = { 0 };
  struct retention_rules rules;
  CLEANUP_JSON json_t *result = NULL;
  CLEANUP_FREE char *text = NULL, *other = NULL;
  struct cat_task task = { 0 };
  char now[32];
  bool removing_left;

  if (catalog_context_get (hub->cat, req->context_id, &ctx) == -1 ||
      rules_for (hub, &ctx, req, &rules) == -1)
    return -1;
  {
    SCOPED_LOCK (&hub->lock);
    if (context_jobs (hub, &ctx, &jobs) == -1 ||
        select_points (&jobs, &rules, &plan, &removing_left) == -1)
      goto fail;
    if (req->dry_run) {
      *out = plan;
      return 0;
    }
    if (running_prune (hub, ctx.context_id, &other) == -1)
      goto fail;
    if (other) {
      error_set (ERR_CONFLICT, "task %s is already pruning context %s; wait for it "
                 "(GET /api/v1/tasks/%s)", other, ctx.context_id, other);
      goto fail;
    }
    if (plan.remove[0] == NULL && !removing_left) {
      /* Nothing to remove: no task. */
      *out = plan;
      return 0;
    }
    result = json_pack ("{s:s, s:o, s:o, s:I}", "context_id", ctx.context_id,
                        "keep", json_ids (plan.keep), "remove", json_ids (plan.remove),
                        "bytes_freed", (json_int_t) 0);
    text = result_text (result);
    plan.task_id = id_new ("task-prune", ctx.vm_name);
    if (text == NULL || plan.task_id == NULL) {
      error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
      goto fail;
    }
    id_now (now, sizeof now);
    task = (struct cat_task) {
      .id = plan.task_id, .kind = TASK_PRUNE, .context_id = ctx.context_id,
      .status = TASK_RUNNING, .result = text, .created_at = now, .updated_at = now,
      .owner_hub = hub->hub_id,
    };
    if (catalog_prune_begin (hub->cat, &task, plan.remove) == -1)
      goto fail;
    crash_point ("prune:begun");
    log_info ("prune task %s of context %s: keeping %zu point(s), removing %zu",
              plan.task_id, ctx.context_id, n_ids (plan.keep), n_ids (plan.remove));
    queue_task (hub, plan.task_id);
  }
  *out = plan;
  return 0;
 fail:
  hub_prune_plan_clear (&plan);
  return -1;
}

/* After a completed backup: prune its context by the VM's policy, if it
 * has retention.  Runs in a worker (hub->hooks.run_op). */
static void
auto_prune_op (struct hub *hub, const char *context_id)
{
  struct hub_prune_request req = { .context_id = context_id };
  struct hub_prune_plan plan = { 0 };
  CLEANUP_CAT_CONTEXT struct cat_context ctx = { 0 };
  CLEANUP_CAT_VM struct cat_vm vm = { 0 };
  CLEANUP_CAT_POLICY struct cat_policy pol = { 0 };

  /* Tasks waiting for this backup go on first. */
  wake (hub, context_id);
  if (catalog_context_get (hub->cat, context_id, &ctx) == -1 ||
      catalog_vm_get (hub->cat, ctx.vm_name, &vm) == -1 || vm.policy == NULL ||
      catalog_policy_get (hub->cat, vm.policy, &pol) == -1 || !pol.has_retention)
    return;
  if (hub_prune_start (hub, &req, &plan) == -1) {
    if (error_category () == ERR_CONFLICT)
      log_info ("context %s: %s; the points this backup lets go are pruned after the "
                "next one", context_id, error_message ());
    else
      log_error ("pruning context %s by policy '%s': %s", context_id, pol.name,
                 error_message ());
    return;
  }
  hub_prune_plan_clear (&plan);
}

void
hub_prune_after_backup (struct hub *hub, const char *context_id)
{
  char key[300];

  /* The op's key is not a task id: it only says "prune this context". */
  snprintf (key, sizeof key, "%s", context_id);
  if (hub->hooks.run_op)
    hub->hooks.run_op (hub, key, auto_prune_op);
}
