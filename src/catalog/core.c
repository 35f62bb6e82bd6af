/* catalog/core.c - the catalog's SQL core: the machinery that every
 * domain operation of catalog.h shares (statements, rows and records,
 * transactions, the common checks), over the driver interface of
 * catalog-int.h, and the design notes that hold for the whole core.
 *
 * THE FILES
 *
 * Each operation is written once, in the file of its subject:
 * inventory.c (repositories, policies, VMs), backups.c (contexts, backups,
 * the delete plan, change ids, the parent rule of verification),
 * recovery.c (disk files, running disks, the lost-disk cascade),
 * lifecycle.c (tasks, prunes, merge steps), integrity.c (verify records,
 * points due for a verify, rebuild-catalog's insert) and migrate.c (migrations, raw access for maintenance tools).  What they
 * share from this file is declared in core-int.h.  Each public function
 * checks what its contract requires of the caller (the contracts are in
 * catalog.h), then runs its X_tx.
 *
 * TRANSACTIONS
 *
 * Each public operation takes cat->lock, then runs its X_tx body as one
 * transaction (RUN_TX): the driver's begin, the body, commit or rollback.
 * An operation that writes begins with the catalog-wide write lock (SQLite's
 * BEGIN IMMEDIATE; on MariaDB the one row of catalog_lock, SELECT ... FOR
 * UPDATE), taken before its first read, so that what it checks (is a job
 * active? is this parent still the latest? does anything depend on this
 * job?) still holds when it writes, against every thread and every process
 * sharing the database.  The schema's constraints (one active job per
 * context, the foreign keys) are the backstop.  A read runs in one
 * snapshot.  When the driver says a failed attempt applied nothing and may
 * run again (SQLite busy; MariaDB lost connection or deadlock before
 * COMMIT), the body runs once more from its start; a connection lost during
 * COMMIT is never retried (nobody knows whether it applied).  The X_tx
 * bodies fill the caller's out-parameters only through locals that the
 * public function hands over after COMMIT succeeded.
 *
 * PORTABLE SQL
 *
 * Every statement here is accepted by SQLite and MariaDB alike: "?N"
 * parameters (the MariaDB driver rewrites them), WITH RECURSIVE, no row
 * values, no UPDATE or DELETE with a WITH clause.  Two consequences of
 * InnoDB checking foreign keys row by row rather than at the end of a
 * statement are written once for both: a chain of disk rows is deleted one
 * row at a time, newest first (children before their parents), and the
 * rows built on a lost disk are updated one by one.
 *
 * THE LATEST COMPLETED DISK
 *
 * The parent of a new incremental disk, and the answer to "what is the
 * change id of this disk", is the backup_disks row with the highest id among
 * the completed disks, of completed jobs, of that context and disk index.  A
 * context runs one job at a time, so the highest id is the latest
 * completion; timestamps are never used to order backups.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/core-int.h"
#include "util/array.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/state.h"

/* ------------------------------------------------------------------------
 * Statements
 */

/* For CLEANUP_STMT: finalize a statement (NULL is harmless). */
void
core_stmt_cleanup (struct db_stmt **st)
{
  if (*st)
    (*st)->drv->finalize (*st);
}
/* Parse ap by types (see struct db_arg) and prepare sql with it. */
struct db_stmt *
core_stmt_vprepare (struct catalog *cat, const char *sql, const char *types, va_list ap)
{
  struct db_arg args[DB_MAX_ARGS];
  size_t n = strlen (types);

  if (n > DB_MAX_ARGS) {
    error_set (ERR_INTERNAL, "catalog: too many parameters (in \"%.80s\")", sql);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    struct db_arg *a = &args[i];

    memset (a, 0, sizeof *a);
    switch (types[i]) {
    case 's':
    case 'e':
      a->text = true;
      a->s = va_arg (ap, const char *);
      if (a->s == NULL && types[i] == 'e')
        a->s = "";
      a->null = a->s == NULL;
      break;
    case 'i': a->v = va_arg (ap, int); break;
    case 'I': a->v = va_arg (ap, int64_t); break;
    case 'o':
      a->v = va_arg (ap, int64_t);
      a->null = a->v < 0;
      break;
    default:
      error_set (ERR_INTERNAL, "catalog: bad bind type '%c'", types[i]);
      return NULL;
    }
  }
  return cat->drv->prepare (cat, sql, args, n);
}

/* Prepare sql and bind its parameters; the caller steps and finalizes. */
struct db_stmt *
db_prepare (struct catalog *cat, const char *sql, const char *types, ...)
{
  struct db_stmt *st;
  va_list ap;

  va_start (ap, types);
  st = core_stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  return st;
}

/* 1 for a row, 0 when done, -1 on error. */
int
db_step (struct db_stmt *st)
{
  return st->drv->step (st);
}

/* Step st to its end: the rows it changed, or -1. */
int64_t
core_stmt_run (struct db_stmt *st)
{
  int r;

  while ((r = db_step (st)) == 1)
    ;
  return r == -1 ? -1 : st->drv->changes (st);
}

/* Run a statement that returns no rows we want: the rows it changed, or
 * -1. */
int64_t
db_exec (struct catalog *cat, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  va_list ap;

  va_start (ap, types);
  st = core_stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  return st ? core_stmt_run (st) : -1;
}

/* Run an INSERT and put the id it gave its row in *id. */
int
db_insert (struct catalog *cat, int64_t *id, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  va_list ap;

  va_start (ap, types);
  st = core_stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  if (st == NULL || core_stmt_run (st) == -1)
    return -1;
  *id = st->drv->last_insert_id (st);
  return 0;
}

/* A word read back from the database that util/state.c does not know: a
 * damaged catalog, or one written by a newer strata.  column names it. */
int
core_bad_word (const char *column, const char *value)
{
  return catalog_fail (ERR_INTERNAL, "catalog: %s holds \"%s\", which this strata does not"
                       " know", column, value ? value : "NULL");
}

/* Column col of the current row as text, not copied (NULL for SQL NULL
 * or when memory ran out: then r->oom). */
const char *
core_row_peek (struct row *r, int col)
{
  const char *v;

  if (r->st->drv->column (r->st, col, &v) == -1) {
    r->oom = true;
    return NULL;
  }
  return v;
}

/* A text column, copied (the caller owns it); NULL for SQL NULL. */
char *
core_row_text (struct row *r, int col)
{
  const char *v;
  char *c = NULL;

  if (r->st->drv->column (r->st, col, &v) == -1 || (v && (c = strdup (v)) == NULL))
    r->oom = true;
  return c;
}

/* An integer column: NULL reads as -1. */
int64_t
core_row_int (struct row *r, int col)
{
  const char *v;

  if (r->st->drv->column (r->st, col, &v) == -1) {
    r->oom = true;
    return -1;
  }
  return v ? strtoll (v, NULL, 10) : -1;
}

/* After reading a row: -1 with the error set if a copy failed or a word
 * did not parse. */
int
core_row_done (struct row *r)
{
  if (r->oom)
    catalog_oom ();
  return r->oom || r->bad ? -1 : 0;
}

/* One integer: 1 and *out when there is a row (NULL reads as -1), 0 when
 * none, -1 on error. */
int
db_int (struct catalog *cat, int64_t *out, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  va_list ap;
  int r;

  va_start (ap, types);
  st = core_stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  if (st == NULL || (r = db_step (st)) == -1)
    return -1;
  if (r == 1) {
    struct row row = { st, false, false };
    int64_t v = core_row_int (&row, 0);
    if (core_row_done (&row) == -1)
      return -1;
    *out = v;
  }
  return r;
}

/* One string: 1 and *out (malloc'd, the caller's; NULL for SQL NULL) when
 * there is a row, 0 when none, -1 on error. */
int
db_text (struct catalog *cat, char **out, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  va_list ap;
  int r;

  va_start (ap, types);
  st = core_stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  if (st == NULL || (r = db_step (st)) == -1)
    return -1;
  if (r == 1) {
    struct row row = { st, false, false };
    char *v = core_row_text (&row, 0);
    if (core_row_done (&row) == -1)
      return -1;
    *out = v;
  }
  return r;
}

/* Clear the n records of array a, then free it. */
void
core_kind_free (const struct kind *k, void *a, size_t n)
{
  for (size_t i = 0; a && i < n; i++)
    k->clear ((char *) a + i * k->size);
  free (a);
}

/* Step through st, reading every row into a new array of k's records.  On
 * failure *out is untouched. */
int
core_collect_rows (struct catalog *cat, struct db_stmt *st, const struct kind *k,
              void **out, size_t *n)
{
  void *a = NULL;
  size_t count = 0, cap = 0;
  int r;

  if (st == NULL)
    return -1;
  while ((r = db_step (st)) == 1) {
    struct row row = { st, false, false };
    void *o = array_push (&a, count, &cap, k->size);

    if (o == NULL) {
      r = -1;
      break;
    }
    count++;                    /* from here on kind_free clears it */
    if (k->read (cat, &row, o) == -1) {
      r = -1;
      break;
    }
  }
  if (r == -1) {
    core_kind_free (k, a, count);
    return -1;
  }
  *out = a;
  *n = count;
  return 0;
}

/* Free a NULL-terminated vector of strings. */
void
core_strv_free (char **v)
{
  for (size_t i = 0; v && v[i]; i++)
    free (v[i]);
  free (v);
}

/* Read the first column of every row of st into a new NULL-terminated
 * vector (the caller frees it). */
int
core_collect_strings (struct db_stmt *st, char ***out)
{
  char **v = NULL;
  size_t n = 0, cap = 0;
  int r;

  if (st == NULL)
    return -1;
  do {
    struct row row = { st, false, false };
    char **slot = array_push ((void **) &v, n, &cap, sizeof *v);

    if (slot == NULL) {
      r = -1;
      break;
    }
    if ((r = db_step (st)) == 1) {
      *slot = core_row_text (&row, 0);
      if (core_row_done (&row) == -1)
        r = -1;
      else
        n++;
    }
  } while (r == 1);
  if (r == -1) {
    core_strv_free (v);
    return -1;
  }
  *out = v;
  return 0;
}

void
core_idset_clear (struct idset *s)
{
  free (s->v);
  *s = (struct idset) { 0 };
}

bool
core_idset_has (const struct idset *s, int64_t id)
{
  for (size_t i = 0; i < s->n; i++)
    if (s->v[i] == id)
      return true;
  return false;
}

/* Add id unless it is there: 0, or -1 when memory ran out. */
int
core_idset_add (struct idset *s, int64_t id)
{
  int64_t *slot;

  if (core_idset_has (s, id))
    return 0;
  if ((slot = array_push ((void **) &s->v, s->n, &s->cap, sizeof *slot)) == NULL)
    return -1;
  *slot = id;
  s->n++;
  return 0;
}

/* Add the first column of every row of st, an integer, to s. */
int
core_collect_ids (struct db_stmt *st, struct idset *s)
{
  int r;

  if (st == NULL)
    return -1;
  while ((r = db_step (st)) == 1) {
    struct row row = { st, false, false };
    int64_t id = core_row_int (&row, 0);

    if (core_row_done (&row) == -1 || core_idset_add (s, id) == -1)
      return -1;
  }
  return r;
}

/* ------------------------------------------------------------------------
 * Transactions
 */

/* End the transaction that the body's result r describes. */
int
core_tx_end (struct catalog *cat, int r)
{
  if (r == -1) {
    cat->drv->rollback (cat);
    return -1;
  }
  return cat->drv->commit (cat);
}

/* ------------------------------------------------------------------------
 * Rows
 */

/* Read the first row of st into *out, a zeroed record of kind k.  1 when
 * there is one, 0 when not, -1 on error (*out is then empty). */
int
core_first_row (struct catalog *cat, struct db_stmt *st, const struct kind *k, void *out)
{
  struct row row = { st, false, false };
  int r;

  if (st == NULL || (r = db_step (st)) == -1)
    return -1;
  if (r == 1 && k->read (cat, &row, out) == -1) {
    k->clear (out);
    return -1;
  }
  return r;
}

/* first_row of what sql selects with the text parameters a and b (b may
 * be unused: types says). */
static int
query_one (struct catalog *cat, const struct kind *k, void *out, const char *sql,
           const char *types, const char *a, const char *b)
{
  CLEANUP_STMT struct db_stmt *st = db_prepare (cat, sql, types, a, b);

  return core_first_row (cat, st, k, out);
}

/* collect_rows of what sql selects with one text parameter, which may be
 * NULL (types is "s", or "" for none). */
int
core_query_all (struct catalog *cat, const struct kind *k, void **out, size_t *n,
           const char *sql, const char *types, const char *param)
{
  CLEANUP_STMT struct db_stmt *st = db_prepare (cat, sql, types, param);

  return core_collect_rows (cat, st, k, out, n);
}

/* Copy a REPO_SELECT row into *o (owned by the caller). */
static int
repo_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_repository *o = rec;

  o->id = core_row_text (r, 0);
  o->name = core_row_text (r, 1);
  o->type = core_row_text (r, 2);
  o->path = core_row_text (r, 3);
  o->created_at = core_row_text (r, 4);
  return core_row_done (r);
}

static void
repo_clear (void *r)
{
  cat_repository_clear (r);
}

const struct kind core_repo_kind = { sizeof (struct cat_repository), repo_read, repo_clear };

/* Copy a CONTEXT_SELECT row into *o (owned by the caller). */
static int
context_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_context *o = rec;

  o->context_id = core_row_text (r, 0);
  o->vm_name = core_row_text (r, 1);
  o->repository_id = core_row_text (r, 2);
  o->vmware_vm_id = core_row_text (r, 3);
  o->vm_path = core_row_text (r, 4);
  o->vcenter_host = core_row_text (r, 5);
  o->datacenter = core_row_text (r, 6);
  o->total_backups_run = core_row_int (r, 7);
  o->successful_backups = core_row_int (r, 8);
  o->failed_backups = core_row_int (r, 9);
  o->last_backup_id = core_row_text (r, 10);
  if (o->last_backup_id)
    ROW_WORD (r, 11, "vm_backup_contexts.last_backup_type", backup_type_parse,
              &o->last_backup_type);
  o->last_backup_at = core_row_text (r, 12);
  o->created_at = core_row_text (r, 13);
  o->updated_at = core_row_text (r, 14);
  return core_row_done (r);
}

static void
context_clear (void *c)
{
  cat_context_clear (c);
}

const struct kind core_context_kind = {
  sizeof (struct cat_context), context_read, context_clear
};

/* Copy a DISK_SELECT row into *o (owned by the caller). */
static int
disk_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_disk *o = rec;

  o->id = core_row_int (r, 0);
  o->backup_job_id = core_row_text (r, 1);
  o->context_id = core_row_text (r, 2);
  o->disk_index = (int) core_row_int (r, 3);
  o->vmware_disk_key = core_row_int (r, 4);
  o->unit_number = core_row_int (r, 5);
  o->size_bytes = core_row_int (r, 6);
  ROW_WORD (r, 7, "backup_disks.backup_type", backup_type_parse, &o->backup_type);
  o->disk_change_id = core_row_text (r, 8);
  o->qcow2_path = core_row_text (r, 9);
  o->parent_disk_id = core_row_int (r, 10);
  o->parent_backup_id = core_row_text (r, 11);
  o->previous_change_id = core_row_text (r, 12);
  o->nbd_export = core_row_text (r, 13);
  o->bytes_transferred = core_row_int (r, 14);
  ROW_WORD (r, 15, "backup_disks.status", disk_status_parse, &o->status);
  o->error = core_row_text (r, 16);
  o->created_at = core_row_text (r, 17);
  o->completed_at = core_row_text (r, 18);
  o->full_reason = core_row_text (r, 19);
  ROW_WORD (r, 20, "backup_disks.verify_state", verify_state_parse, &o->verify_state);
  o->verified_at = core_row_text (r, 21);
  o->verify_error = core_row_text (r, 22);
  return core_row_done (r);
}

static void
disk_clear (void *d)
{
  cat_disk_clear (d);
}

const struct kind core_disk_kind = { sizeof (struct cat_disk), disk_read, disk_clear };

/* Read the disks that sql (a DISK_SELECT...) selects with one text
 * parameter. */
int
core_disks_query (struct catalog *cat, const char *sql, const char *param,
             struct cat_disk **out, size_t *n)
{
  return core_query_all (cat, &core_disk_kind, (void **) out, n, sql, "s", param);
}

/* Copy a JOB_SELECT row into *o with its disks, sorted by disk_index
 * (owned by the caller). */
static int
job_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_job *o = rec;

  o->id = core_row_text (r, 0);
  o->context_id = core_row_text (r, 1);
  o->vm_name = core_row_text (r, 2);
  o->repository_id = core_row_text (r, 3);
  ROW_WORD (r, 4, "backup_jobs.backup_type", backup_type_parse, &o->backup_type);
  ROW_WORD (r, 5, "backup_jobs.status", job_status_parse, &o->status);
  o->error = core_row_text (r, 6);
  o->created_at = core_row_text (r, 7);
  o->completed_at = core_row_text (r, 8);
  ROW_WORD (r, 9, "backup_jobs.driver", job_driver_parse, &o->driver);
  o->is_protected = core_row_int (r, 10) == 1;
  ROW_WORD (r, 11, "backup_jobs.verify_state", verify_state_parse, &o->verify_state);
  o->verified_at = core_row_text (r, 12);
  o->lease_seconds = core_row_int (r, 13);   /* NULL reads -1: no lease */
  if (o->lease_seconds < 0)
    o->lease_seconds = 0;
  o->lease_expires_at = core_row_text (r, 14);
  o->owner_hub = core_row_text (r, 15);
  if (core_row_done (r) == -1)
    return -1;
  return core_disks_query (cat, DISK_SELECT DISK_FROM
                      " WHERE d.backup_job_id = ? ORDER BY d.disk_index",
                      o->id, &o->disks, &o->n_disks);
}

static void
job_clear (void *j)
{
  cat_job_clear (j);
}

const struct kind core_job_kind = { sizeof (struct cat_job), job_read, job_clear };

/* Load one job with its disks into *out.  1 when found, 0 when not, -1 on
 * error. */
int
core_job_load (struct catalog *cat, const char *id, struct cat_job *out)
{
  return query_one (cat, &core_job_kind, out, JOB_SELECT " WHERE j.id = ?", "s", id, NULL);
}

/* One record of any kind the catalog reads whole. */
union any_record {
  struct cat_repository repo;
  struct cat_vm vm;
  struct cat_context ctx;
  struct cat_job job;
  struct cat_policy policy;
  struct cat_task task;
};

/* query_one in one read transaction, into *out.  When there is no row,
 * ERR_NOT_FOUND: "WHAT A not found", or, with b, "VM A has no backups in
 * repository B". */
int
core_read_one (struct catalog *cat, const struct kind *k, void *out, const char *what,
          const char *sql, const char *types, const char *a, const char *b)
{
  union any_record rec = { 0 };
  int found = 0;
  SCOPED_LOCK (&cat->lock);

  if (RUN_TX (cat, false, (found = query_one (cat, k, &rec, sql, types, a, b)) == -1
                          ? -1 : 0, (k->clear (&rec), found = 0)) == -1) {
    k->clear (&rec);
    return -1;
  }
  if (found)
    memcpy (out, &rec, k->size);
  else if (b)
    error_set (ERR_NOT_FOUND, "VM %s has no backups in repository %s", a, b);
  else
    error_set (ERR_NOT_FOUND, "%s %s not found", what, a);
  return found ? 0 : -1;
}

/* query_all in one read transaction.  On failure *out is untouched. */
int
core_read_all (struct catalog *cat, const struct kind *k, void **out, size_t *n,
          const char *sql, const char *types, const char *param)
{
  void *a = NULL;
  size_t count = 0;
  SCOPED_LOCK (&cat->lock);

  if (RUN_TX (cat, false, core_query_all (cat, k, &a, &count, sql, types, param),
              (core_kind_free (k, a, count), a = NULL, count = 0)) == -1) {
    core_kind_free (k, a, count);
    return -1;
  }
  *out = a;
  *n = count;
  return 0;
}

/* The status of job id into *out; ERR_NOT_FOUND when there is no such
 * job, ERR_INTERNAL for a word this strata does not know. */
int
core_job_status (struct catalog *cat, const char *id, enum job_status *out)
{
  CLEANUP_FREE char *word = NULL;
  int f = db_text (cat, &word, "SELECT status FROM backup_jobs WHERE id = ?", "s", id);

  if (f == 0)
    error_set (ERR_NOT_FOUND, "backup %s not found", id);
  if (f != 1)
    return -1;
  if (job_status_parse (word, out) == -1)
    return core_bad_word ("backup_jobs.status", word);
  return 0;
}

/* Read the latest completed disk of (context, disk_index) into *out.  1
 * when there is one, 0 when not, -1 on error. */
int
core_latest_disk (struct catalog *cat, const char *ctx, int disk_index, struct cat_disk *out)
{
  CLEANUP_STMT struct db_stmt *st =
    db_prepare (cat, DISK_SELECT DISK_FROM LATEST_WHERE, "si", ctx, disk_index);

  return core_first_row (cat, st, &core_disk_kind, out);
}

/* ------------------------------------------------------------------------
 * What the operations share
 */

/* After jobs of a context were deleted or failed: if last_backup_id no
 * longer names a completed job, point last_backup_* at the newest completed
 * job that remains (newest = holding the highest disk id), or at nothing. */
int
core_context_refresh_last (struct catalog *cat, const char *ctx, const char *now)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  CLEANUP_FREE char *id = NULL, *type = NULL, *at = NULL;
  int64_t stale;
  int f;

  f = db_int (cat, &stale, "SELECT 1 FROM vm_backup_contexts c"
              " WHERE c.context_id = ? AND c.last_backup_id IS NOT NULL"
              " AND NOT EXISTS (SELECT 1 FROM backup_jobs j"
              "                 WHERE j.id = c.last_backup_id AND j.status = 'completed')",
              "s", ctx);
  if (f != 1)
    return f;
  st = db_prepare (cat, "SELECT j.id, j.backup_type, j.completed_at FROM backup_jobs j"
                   " WHERE j.vm_backup_context_id = ? AND j.status = 'completed'"
                   " ORDER BY (SELECT max(d.id) FROM backup_disks d"
                   "           WHERE d.backup_job_id = j.id) DESC,"
                   " j.created_at DESC, j.id DESC LIMIT 1", "s", ctx);
  if (st == NULL || (f = db_step (st)) == -1)
    return -1;
  if (f == 1) {
    struct row row = { st, false, false };
    id = core_row_text (&row, 0);
    type = core_row_text (&row, 1);
    at = core_row_text (&row, 2);
    if (core_row_done (&row) == -1)
      return -1;
  }
  return db_exec (cat, "UPDATE vm_backup_contexts SET last_backup_id = ?,"
                  " last_backup_type = ?, last_backup_at = ?, updated_at = ?"
                  " WHERE context_id = ?", "sssss", id, type, at, now, ctx) == -1 ? -1 : 0;
}

/* Hand the disk rows of a finished write over to *out (or leave them in
 * l, to be freed, when the caller wants none); l is empty afterwards. */
void
core_disks_hand_over (struct cat_disk_list *l, struct cat_disk **out, size_t *n_out)
{
  if (out == NULL)
    return;
  *out = l->v;
  *n_out = l->n;
  *l = (struct cat_disk_list) { 0 };
}

/* Delete the disk rows of a, which are sorted by id, newest first, so that
 * no row goes before a row based on it (see PORTABLE SQL at the top). */
int
core_disks_delete (struct catalog *cat, const struct cat_disk *a, size_t n)
{
  for (size_t i = n; i-- > 0; )
    if (db_exec (cat, "DELETE FROM backup_disks WHERE id = ?", "I", a[i].id) == -1)
      return -1;
  return 0;
}

/* Refuse a call with a missing argument; what names it. */
int
core_missing (const char *what)
{
  return catalog_fail (ERR_INVALID, "catalog: %s is required", what);
}

/* 0 when sql ("SELECT 1 ... WHERE key = ?") finds the row of key; else -1,
 * with ERR_NOT_FOUND "WHAT KEY not found" when there is none. */
int
core_must_exist (struct catalog *cat, const char *sql, const char *key, const char *what)
{
  int64_t one;
  int f = db_int (cat, &one, sql, "s", key);

  if (f == 0)
    error_set (ERR_NOT_FOUND, "%s %s not found", what, key);
  return f == 1 ? 0 : -1;
}

/* Run tx on rec as one write transaction; *created (may be NULL) is set
 * after COMMIT. */
int
core_put_record (struct catalog *cat, put_tx_fn tx, const void *rec, bool *created)
{
  bool c = false;
  char now[32];

  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true, tx (cat, rec, now, &c), (void) 0) == -1)
    return -1;
  if (created)
    *created = c;
  return 0;
}

