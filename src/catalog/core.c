/* catalog/core.c - the catalog's SQL core: every domain operation of
 * catalog.h, written once, over the driver interface of catalog-int.h.
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
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/catalog-int.h"
#include "util/array.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"
#include "util/state.h"

/* ------------------------------------------------------------------------
 * Statements
 */

/* For CLEANUP_STMT: finalize a statement (NULL is harmless). */
static void
stmt_cleanup (struct db_stmt **st)
{
  if (*st)
    (*st)->drv->finalize (*st);
}
#define CLEANUP_STMT __attribute__((cleanup (stmt_cleanup)))

/* Parse ap by types (see struct db_arg) and prepare sql with it. */
static struct db_stmt *
stmt_vprepare (struct catalog *cat, const char *sql, const char *types, va_list ap)
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
static struct db_stmt *
db_prepare (struct catalog *cat, const char *sql, const char *types, ...)
{
  struct db_stmt *st;
  va_list ap;

  va_start (ap, types);
  st = stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  return st;
}

/* 1 for a row, 0 when done, -1 on error. */
static int
db_step (struct db_stmt *st)
{
  return st->drv->step (st);
}

/* Step st to its end: the rows it changed, or -1. */
static int64_t
stmt_run (struct db_stmt *st)
{
  int r;

  while ((r = db_step (st)) == 1)
    ;
  return r == -1 ? -1 : st->drv->changes (st);
}

/* Run a statement that returns no rows we want: the rows it changed, or
 * -1. */
static int64_t
db_exec (struct catalog *cat, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  va_list ap;

  va_start (ap, types);
  st = stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  return st ? stmt_run (st) : -1;
}

/* Run an INSERT and put the id it gave its row in *id. */
static int
db_insert (struct catalog *cat, int64_t *id, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  va_list ap;

  va_start (ap, types);
  st = stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  if (st == NULL || stmt_run (st) == -1)
    return -1;
  *id = st->drv->last_insert_id (st);
  return 0;
}

/* Reading the columns of a row.  A failed copy sets oom, checked once per
 * row rather than after each column; so is a word that does not parse
 * (bad, with its error already set). */
struct row {
  struct db_stmt *st;
  bool oom, bad;
};

/* A word read back from the database that util/state.c does not know: a
 * damaged catalog, or one written by a newer strata.  column names it. */
static int
bad_word (const char *column, const char *value)
{
  return catalog_fail (ERR_INTERNAL, "catalog: %s holds \"%s\", which this strata does not"
                       " know", column, value ? value : "NULL");
}

/* Column col of the current row as text, not copied (NULL for SQL NULL
 * or when memory ran out: then r->oom). */
static const char *
row_peek (struct row *r, int col)
{
  const char *v;

  if (r->st->drv->column (r->st, col, &v) == -1) {
    r->oom = true;
    return NULL;
  }
  return v;
}

/* Read column col, which holds a word of a vocabulary, into *out with
 * parse (job_status_parse, ...); column names it for bad_word. */
#define ROW_WORD(r, col, column, parse, out)                            \
  do {                                                                  \
    const char *w_ = row_peek ((r), (col));                             \
    if (!(r)->oom && parse (w_, (out)) == -1) {                         \
      bad_word ((column), w_);                                          \
      (r)->bad = true;                                                  \
    }                                                                   \
  } while (0)

/* A text column, copied (the caller owns it); NULL for SQL NULL. */
static char *
row_text (struct row *r, int col)
{
  const char *v;
  char *c = NULL;

  if (r->st->drv->column (r->st, col, &v) == -1 || (v && (c = strdup (v)) == NULL))
    r->oom = true;
  return c;
}

/* An integer column: NULL reads as -1. */
static int64_t
row_int (struct row *r, int col)
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
static int
row_done (struct row *r)
{
  if (r->oom)
    catalog_oom ();
  return r->oom || r->bad ? -1 : 0;
}

/* One integer: 1 and *out when there is a row (NULL reads as -1), 0 when
 * none, -1 on error. */
static int
db_int (struct catalog *cat, int64_t *out, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  va_list ap;
  int r;

  va_start (ap, types);
  st = stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  if (st == NULL || (r = db_step (st)) == -1)
    return -1;
  if (r == 1) {
    struct row row = { st, false, false };
    int64_t v = row_int (&row, 0);
    if (row_done (&row) == -1)
      return -1;
    *out = v;
  }
  return r;
}

/* One string: 1 and *out (malloc'd, the caller's; NULL for SQL NULL) when
 * there is a row, 0 when none, -1 on error. */
static int
db_text (struct catalog *cat, char **out, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  va_list ap;
  int r;

  va_start (ap, types);
  st = stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  if (st == NULL || (r = db_step (st)) == -1)
    return -1;
  if (r == 1) {
    struct row row = { st, false, false };
    char *v = row_text (&row, 0);
    if (row_done (&row) == -1)
      return -1;
    *out = v;
  }
  return r;
}

/* A kind of record that the core reads whole: its size, how to read one
 * from the current row into a zeroed record (cat is for readers that query
 * more, such as a job's disks; on failure the error is set and the caller
 * clears the record), and how to free what one owns. */
struct kind {
  size_t size;
  int (*read) (struct catalog *cat, struct row *r, void *rec);
  void (*clear) (void *rec);
};

/* Clear the n records of array a, then free it. */
static void
kind_free (const struct kind *k, void *a, size_t n)
{
  for (size_t i = 0; a && i < n; i++)
    k->clear ((char *) a + i * k->size);
  free (a);
}

/* Step through st, reading every row into a new array of k's records.  On
 * failure *out is untouched. */
static int
collect_rows (struct catalog *cat, struct db_stmt *st, const struct kind *k,
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
    kind_free (k, a, count);
    return -1;
  }
  *out = a;
  *n = count;
  return 0;
}

/* Free a NULL-terminated vector of strings. */
static void
strv_free (char **v)
{
  for (size_t i = 0; v && v[i]; i++)
    free (v[i]);
  free (v);
}

/* Read the first column of every row of st into a new NULL-terminated
 * vector (the caller frees it). */
static int
collect_strings (struct db_stmt *st, char ***out)
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
      *slot = row_text (&row, 0);
      if (row_done (&row) == -1)
        r = -1;
      else
        n++;
    }
  } while (r == 1);
  if (r == -1) {
    strv_free (v);
    return -1;
  }
  *out = v;
  return 0;
}

/* A set of disk row ids (or of anything numbered so), in insertion order. */
struct idset {
  int64_t *v;
  size_t n, cap;
};

static void
idset_clear (struct idset *s)
{
  free (s->v);
  *s = (struct idset) { 0 };
}

static bool
idset_has (const struct idset *s, int64_t id)
{
  for (size_t i = 0; i < s->n; i++)
    if (s->v[i] == id)
      return true;
  return false;
}

/* Add id unless it is there: 0, or -1 when memory ran out. */
static int
idset_add (struct idset *s, int64_t id)
{
  int64_t *slot;

  if (idset_has (s, id))
    return 0;
  if ((slot = array_push ((void **) &s->v, s->n, &s->cap, sizeof *slot)) == NULL)
    return -1;
  *slot = id;
  s->n++;
  return 0;
}

#define CLEANUP_IDSET __attribute__((cleanup (idset_clear)))

/* Add the first column of every row of st, an integer, to s. */
static int
collect_ids (struct db_stmt *st, struct idset *s)
{
  int r;

  if (st == NULL)
    return -1;
  while ((r = db_step (st)) == 1) {
    struct row row = { st, false, false };
    int64_t id = row_int (&row, 0);

    if (row_done (&row) == -1 || idset_add (s, id) == -1)
      return -1;
  }
  return r;
}

/* ------------------------------------------------------------------------
 * Transactions
 */

/* End the transaction that the body's result r describes. */
static int
tx_end (struct catalog *cat, int r)
{
  if (r == -1) {
    cat->drv->rollback (cat);
    return -1;
  }
  return cat->drv->commit (cat);
}

/* Run body (an expression that returns 0 or -1) as one transaction, again
 * if the driver allows; cleanup (a statement) undoes what a failed
 * attempt left in the caller's locals.  The value is 0 or -1. */
#define RUN_TX(cat, write, body, cleanup)                               \
  ({                                                                    \
    int r_;                                                             \
    for (int attempt_ = 0; ; attempt_++) {                              \
      r_ = (cat)->drv->begin ((cat), (write)) == -1                     \
        ? ((cat)->drv->rollback (cat), -1) : tx_end ((cat), (body));    \
      if (r_ == 0 || !(cat)->drv->again ((cat), attempt_))              \
        break;                                                          \
      cleanup;                                                          \
    }                                                                   \
    r_;                                                                 \
  })

/* ------------------------------------------------------------------------
 * Rows
 */

/* Read the first row of st into *out, a zeroed record of kind k.  1 when
 * there is one, 0 when not, -1 on error (*out is then empty). */
static int
first_row (struct catalog *cat, struct db_stmt *st, const struct kind *k, void *out)
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

  return first_row (cat, st, k, out);
}

/* collect_rows of what sql selects with one text parameter, which may be
 * NULL (types is "s", or "" for none). */
static int
query_all (struct catalog *cat, const struct kind *k, void **out, size_t *n,
           const char *sql, const char *types, const char *param)
{
  CLEANUP_STMT struct db_stmt *st = db_prepare (cat, sql, types, param);

  return collect_rows (cat, st, k, out, n);
}

#define REPO_SELECT \
  "SELECT id, name, type, path, created_at FROM backup_repositories"

/* Copy a REPO_SELECT row into *o (owned by the caller). */
static int
repo_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_repository *o = rec;

  o->id = row_text (r, 0);
  o->name = row_text (r, 1);
  o->type = row_text (r, 2);
  o->path = row_text (r, 3);
  o->created_at = row_text (r, 4);
  return row_done (r);
}

static void
repo_clear (void *r)
{
  cat_repository_clear (r);
}

static const struct kind repo_kind = { sizeof (struct cat_repository), repo_read, repo_clear };

#define CONTEXT_SELECT \
  "SELECT context_id, vm_name, repository_id, vmware_vm_id, vm_path," \
  " vcenter_host, datacenter, total_backups_run, successful_backups," \
  " failed_backups, last_backup_id, last_backup_type, last_backup_at," \
  " created_at, updated_at FROM vm_backup_contexts"

/* Copy a CONTEXT_SELECT row into *o (owned by the caller). */
static int
context_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_context *o = rec;

  o->context_id = row_text (r, 0);
  o->vm_name = row_text (r, 1);
  o->repository_id = row_text (r, 2);
  o->vmware_vm_id = row_text (r, 3);
  o->vm_path = row_text (r, 4);
  o->vcenter_host = row_text (r, 5);
  o->datacenter = row_text (r, 6);
  o->total_backups_run = row_int (r, 7);
  o->successful_backups = row_int (r, 8);
  o->failed_backups = row_int (r, 9);
  o->last_backup_id = row_text (r, 10);
  if (o->last_backup_id)
    ROW_WORD (r, 11, "vm_backup_contexts.last_backup_type", backup_type_parse,
              &o->last_backup_type);
  o->last_backup_at = row_text (r, 12);
  o->created_at = row_text (r, 13);
  o->updated_at = row_text (r, 14);
  return row_done (r);
}

static void
context_clear (void *c)
{
  cat_context_clear (c);
}

static const struct kind context_kind = {
  sizeof (struct cat_context), context_read, context_clear
};

/* Every disk query selects these columns, the parent row joined in as p. */
#define DISK_SELECT \
  "SELECT d.id, d.backup_job_id, d.vm_backup_context_id, d.disk_index," \
  " d.vmware_disk_key, d.unit_number, d.size_bytes, d.backup_type," \
  " d.disk_change_id, d.qcow2_path, d.parent_disk_id, p.backup_job_id," \
  " p.disk_change_id, d.nbd_export, d.bytes_transferred, d.status, d.error," \
  " d.created_at, d.completed_at, d.full_reason"
#define DISK_FROM \
  " FROM backup_disks d LEFT JOIN backup_disks p ON p.id = d.parent_disk_id"

/* Copy a DISK_SELECT row into *o (owned by the caller). */
static int
disk_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_disk *o = rec;

  o->id = row_int (r, 0);
  o->backup_job_id = row_text (r, 1);
  o->context_id = row_text (r, 2);
  o->disk_index = (int) row_int (r, 3);
  o->vmware_disk_key = row_int (r, 4);
  o->unit_number = row_int (r, 5);
  o->size_bytes = row_int (r, 6);
  ROW_WORD (r, 7, "backup_disks.backup_type", backup_type_parse, &o->backup_type);
  o->disk_change_id = row_text (r, 8);
  o->qcow2_path = row_text (r, 9);
  o->parent_disk_id = row_int (r, 10);
  o->parent_backup_id = row_text (r, 11);
  o->previous_change_id = row_text (r, 12);
  o->nbd_export = row_text (r, 13);
  o->bytes_transferred = row_int (r, 14);
  ROW_WORD (r, 15, "backup_disks.status", disk_status_parse, &o->status);
  o->error = row_text (r, 16);
  o->created_at = row_text (r, 17);
  o->completed_at = row_text (r, 18);
  o->full_reason = row_text (r, 19);
  return row_done (r);
}

static void
disk_clear (void *d)
{
  cat_disk_clear (d);
}

static const struct kind disk_kind = { sizeof (struct cat_disk), disk_read, disk_clear };

/* Read the disks that sql (a DISK_SELECT...) selects with one text
 * parameter. */
static int
disks_query (struct catalog *cat, const char *sql, const char *param,
             struct cat_disk **out, size_t *n)
{
  return query_all (cat, &disk_kind, (void **) out, n, sql, "s", param);
}

#define JOB_SELECT \
  "SELECT j.id, j.vm_backup_context_id, j.vm_name, j.repository_id," \
  " j.backup_type, j.status, j.error, j.created_at, j.completed_at, j.driver," \
  " j.protected FROM backup_jobs j"

/* Copy a JOB_SELECT row into *o with its disks, sorted by disk_index
 * (owned by the caller). */
static int
job_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_job *o = rec;

  o->id = row_text (r, 0);
  o->context_id = row_text (r, 1);
  o->vm_name = row_text (r, 2);
  o->repository_id = row_text (r, 3);
  ROW_WORD (r, 4, "backup_jobs.backup_type", backup_type_parse, &o->backup_type);
  ROW_WORD (r, 5, "backup_jobs.status", job_status_parse, &o->status);
  o->error = row_text (r, 6);
  o->created_at = row_text (r, 7);
  o->completed_at = row_text (r, 8);
  ROW_WORD (r, 9, "backup_jobs.driver", job_driver_parse, &o->driver);
  o->is_protected = row_int (r, 10) == 1;
  if (row_done (r) == -1)
    return -1;
  return disks_query (cat, DISK_SELECT DISK_FROM
                      " WHERE d.backup_job_id = ? ORDER BY d.disk_index",
                      o->id, &o->disks, &o->n_disks);
}

static void
job_clear (void *j)
{
  cat_job_clear (j);
}

static const struct kind job_kind = { sizeof (struct cat_job), job_read, job_clear };

/* Load one job with its disks into *out.  1 when found, 0 when not, -1 on
 * error. */
static int
job_load (struct catalog *cat, const char *id, struct cat_job *out)
{
  return query_one (cat, &job_kind, out, JOB_SELECT " WHERE j.id = ?", "s", id, NULL);
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
static int
read_one (struct catalog *cat, const struct kind *k, void *out, const char *what,
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
static int
read_all (struct catalog *cat, const struct kind *k, void **out, size_t *n,
          const char *sql, const char *types, const char *param)
{
  void *a = NULL;
  size_t count = 0;
  SCOPED_LOCK (&cat->lock);

  if (RUN_TX (cat, false, query_all (cat, k, &a, &count, sql, types, param),
              (kind_free (k, a, count), a = NULL, count = 0)) == -1) {
    kind_free (k, a, count);
    return -1;
  }
  *out = a;
  *n = count;
  return 0;
}

/* The latest completed disk of a context and disk index (see the top of
 * the file).  Selected by d.id; ?1 is the context, ?2 the disk index. */
#define LATEST_WHERE \
  " WHERE d.vm_backup_context_id = ?1 AND d.disk_index = ?2" \
  " AND d.status = 'completed'" \
  " AND EXISTS (SELECT 1 FROM backup_jobs lj" \
  "             WHERE lj.id = d.backup_job_id AND lj.status = 'completed')" \
  " ORDER BY d.id DESC LIMIT 1"

/* Read the latest completed disk of (context, disk_index) into *out.  1
 * when there is one, 0 when not, -1 on error. */
static int
latest_disk (struct catalog *cat, const char *ctx, int disk_index, struct cat_disk *out)
{
  CLEANUP_STMT struct db_stmt *st =
    db_prepare (cat, DISK_SELECT DISK_FROM LATEST_WHERE, "si", ctx, disk_index);

  return first_row (cat, st, &disk_kind, out);
}

/* After jobs of a context were deleted or failed: if last_backup_id no
 * longer names a completed job, point last_backup_* at the newest completed
 * job that remains (newest = holding the highest disk id), or at nothing. */
static int
context_refresh_last (struct catalog *cat, const char *ctx, const char *now)
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
    id = row_text (&row, 0);
    type = row_text (&row, 1);
    at = row_text (&row, 2);
    if (row_done (&row) == -1)
      return -1;
  }
  return db_exec (cat, "UPDATE vm_backup_contexts SET last_backup_id = ?,"
                  " last_backup_type = ?, last_backup_at = ?, updated_at = ?"
                  " WHERE context_id = ?", "sssss", id, type, at, now, ctx) == -1 ? -1 : 0;
}

/* Refuse a call with a missing argument; what names it. */
static int
missing (const char *what)
{
  return catalog_fail (ERR_INVALID, "catalog: %s is required", what);
}

/* 0 when sql ("SELECT 1 ... WHERE key = ?") finds the row of key; else -1,
 * with ERR_NOT_FOUND "WHAT KEY not found" when there is none. */
static int
must_exist (struct catalog *cat, const char *sql, const char *key, const char *what)
{
  int64_t one;
  int f = db_int (cat, &one, sql, "s", key);

  if (f == 0)
    error_set (ERR_NOT_FOUND, "%s %s not found", what, key);
  return f == 1 ? 0 : -1;
}

/* The body of an insert-or-replace operation: writes rec, says whether it
 * created it. */
typedef int (*put_tx_fn) (struct catalog *cat, const void *rec, const char *now,
                          bool *created);

/* Run tx on rec as one write transaction; *created (may be NULL) is set
 * after COMMIT. */
static int
put_record (struct catalog *cat, put_tx_fn tx, const void *rec, bool *created)
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

/* ------------------------------------------------------------------------
 * Repositories
 *
 * From here on each public function checks what its contract requires of
 * the caller (the contracts are in catalog.h), then runs its X_tx. */

/* Insert a repository.  The taken id and path are checked first so that
 * the conflict says which; the UNIQUE constraints are the backstop. */
static int
repo_insert_tx (struct catalog *cat, const struct cat_repository *r, const char *now)
{
  CLEANUP_FREE char *other = NULL;
  int64_t one;
  int f;

  if ((f = db_int (cat, &one, "SELECT 1 FROM backup_repositories WHERE id = ?",
                   "s", r->id)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "repository %s already exists", r->id);
    return -1;
  }
  if ((f = db_text (cat, &other, "SELECT id FROM backup_repositories WHERE path = ?",
                    "s", r->path)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "path %s is already used by repository %s",
                 r->path, other);
    return -1;
  }
  if (db_exec (cat, "INSERT INTO backup_repositories (id, name, type, path, created_at)"
               " VALUES (?, ?, ?, ?, ?)", "sssss",
               r->id, r->name, r->type, r->path, r->created_at ? r->created_at : now) == -1) {
    error_prefix ("adding repository %s", r->id);
    return -1;
  }
  return 0;
}

int
catalog_repo_insert (struct catalog *cat, const struct cat_repository *r)
{
  char now[32];

  if (r == NULL || r->id == NULL || r->name == NULL || r->type == NULL || r->path == NULL)
    return missing ("repository id, name, type and path");
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, repo_insert_tx (cat, r, now), (void) 0);
}

int
catalog_repo_get (struct catalog *cat, const char *id, struct cat_repository *out)
{
  if (id == NULL || out == NULL)
    return missing ("repository id");
  return read_one (cat, &repo_kind, out, "repository", REPO_SELECT " WHERE id = ?",
                   "s", id, NULL);
}

/* All repositories, oldest first. */
int
catalog_repo_list (struct catalog *cat, struct cat_repository **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return missing ("output array");
  return read_all (cat, &repo_kind, (void **) out, n,
                   REPO_SELECT " ORDER BY created_at, id", "", NULL);
}

/* Delete a repository no context uses and no policy names.  The foreign
 * keys from vm_backup_contexts and policies would refuse it anyway;
 * checking first gives the reason in words. */
static int
repo_delete_tx (struct catalog *cat, const char *id)
{
  CLEANUP_FREE char *policy = NULL;
  int64_t count;
  int f;

  if (must_exist (cat, "SELECT 1 FROM backup_repositories WHERE id = ?", id,
                  "repository") == -1 ||
      db_int (cat, &count, "SELECT count(*) FROM vm_backup_contexts WHERE repository_id = ?",
              "s", id) == -1)
    return -1;
  if (count > 0)
    return catalog_fail (ERR_CONFLICT, "repository %s holds the backups of %" PRId64
                         " VM%s; delete those first", id, count, count == 1 ? "" : "s");
  if ((f = db_text (cat, &policy, "SELECT name FROM policies WHERE repository_id = ?"
                    " ORDER BY name LIMIT 1", "s", id)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "repository %s is the repository of policy %s; change or"
                 " delete the policy first", id, policy);
    return -1;
  }
  if (db_exec (cat, "DELETE FROM backup_repositories WHERE id = ?", "s", id) == -1) {
    error_prefix ("deleting repository %s", id);
    return -1;
  }
  return 0;
}

int
catalog_repo_delete (struct catalog *cat, const char *id)
{
  if (id == NULL)
    return missing ("repository id");
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, repo_delete_tx (cat, id), (void) 0);
}

/* ------------------------------------------------------------------------
 * Policies
 */

#define POLICY_SELECT \
  "SELECT name, repository_id, schedule, keep_last, keep_hourly, keep_daily," \
  " keep_weekly, keep_monthly, keep_yearly, created_at, updated_at FROM policies"

/* Copy a POLICY_SELECT row into *o (owned by the caller).  A NULL rule
 * reads as -1; the policy has retention when any rule is there. */
static int
policy_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_policy *o = rec;
  struct cat_retention *k = &o->retention;

  (void) cat;
  o->name = row_text (r, 0);
  o->repository_id = row_text (r, 1);
  o->schedule = row_text (r, 2);
  k->keep_last = row_int (r, 3);
  k->keep_hourly = row_int (r, 4);
  k->keep_daily = row_int (r, 5);
  k->keep_weekly = row_int (r, 6);
  k->keep_monthly = row_int (r, 7);
  k->keep_yearly = row_int (r, 8);
  o->has_retention = k->keep_last >= 0 || k->keep_hourly >= 0 || k->keep_daily >= 0 ||
                     k->keep_weekly >= 0 || k->keep_monthly >= 0 || k->keep_yearly >= 0;
  o->created_at = row_text (r, 9);
  o->updated_at = row_text (r, 10);
  return row_done (r);
}

static void
policy_clear (void *p)
{
  cat_policy_clear (p);
}

static const struct kind policy_kind = {
  sizeof (struct cat_policy), policy_read, policy_clear
};

/* Insert or update a policy (keeping created_at); its repository must
 * exist.  Absent rules (-1, or all of them without retention) are NULL. */
static int
policy_put_tx (struct catalog *cat, const void *rec, const char *now, bool *created)
{
  static const struct cat_retention none = { -1, -1, -1, -1, -1, -1 };
  const struct cat_policy *p = rec;
  const struct cat_retention *k = p->has_retention ? &p->retention : &none;
  int64_t one;
  int f;

  if (p->repository_id &&
      (f = db_int (cat, &one, "SELECT 1 FROM backup_repositories WHERE id = ?",
                   "s", p->repository_id)) != 1) {
    if (f == 0)
      error_set (ERR_INVALID, "repository %s not found", p->repository_id);
    return -1;
  }
  if ((f = db_int (cat, &one, "SELECT 1 FROM policies WHERE name = ?", "s", p->name)) == -1)
    return -1;
  *created = f == 0;
  /* ?1 name, ?2 repository, ?3 schedule, ?4..?9 the rules, ?10 now. */
  if (db_exec (cat, *created
               ? "INSERT INTO policies (name, repository_id, schedule, keep_last,"
                 " keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly,"
                 " created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)"
               : "UPDATE policies SET repository_id = ?2, schedule = ?3, keep_last = ?4,"
                 " keep_hourly = ?5, keep_daily = ?6, keep_weekly = ?7, keep_monthly = ?8,"
                 " keep_yearly = ?9, updated_at = ?10 WHERE name = ?1",
               "sssoooooos", p->name, p->repository_id, p->schedule, k->keep_last,
               k->keep_hourly, k->keep_daily, k->keep_weekly, k->keep_monthly,
               k->keep_yearly, now) == -1) {
    error_prefix ("storing policy %s", p->name);
    return -1;
  }
  return 0;
}

int
catalog_policy_put (struct catalog *cat, const struct cat_policy *p, bool *created)
{
  const struct cat_retention *k;

  if (p == NULL || p->name == NULL)
    return missing ("policy name");
  k = &p->retention;
  if (p->has_retention &&
      (k->keep_last < -1 || k->keep_hourly < -1 || k->keep_daily < -1 ||
       k->keep_weekly < -1 || k->keep_monthly < -1 || k->keep_yearly < -1))
    return catalog_fail (ERR_INVALID, "policy %s: a retention rule must be 0 or more",
                         p->name);
  return put_record (cat, policy_put_tx, p, created);
}

int
catalog_policy_get (struct catalog *cat, const char *name, struct cat_policy *out)
{
  if (name == NULL || out == NULL)
    return missing ("policy name");
  return read_one (cat, &policy_kind, out, "policy", POLICY_SELECT " WHERE name = ?",
                   "s", name, NULL);
}

/* Every policy, by name. */
int
catalog_policy_list (struct catalog *cat, struct cat_policy **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return missing ("output array");
  return read_all (cat, &policy_kind, (void **) out, n, POLICY_SELECT " ORDER BY name",
                   "", NULL);
}

/* Delete a policy no VM uses.  The foreign key from vms.policy would
 * refuse it anyway; checking first names a VM that uses it. */
static int
policy_delete_tx (struct catalog *cat, const char *name)
{
  CLEANUP_FREE char *vm = NULL;
  int f;

  if (must_exist (cat, "SELECT 1 FROM policies WHERE name = ?", name, "policy") == -1)
    return -1;
  if ((f = db_text (cat, &vm, "SELECT vm_name FROM vms WHERE policy = ?"
                    " ORDER BY vm_name LIMIT 1", "s", name)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "policy %s is used by VM %s; give the VM another policy"
                 " first", name, vm);
    return -1;
  }
  if (db_exec (cat, "DELETE FROM policies WHERE name = ?", "s", name) == -1) {
    error_prefix ("deleting policy %s", name);
    return -1;
  }
  return 0;
}

int
catalog_policy_delete (struct catalog *cat, const char *name)
{
  if (name == NULL)
    return missing ("policy name");
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, policy_delete_tx (cat, name), (void) 0);
}

/* ------------------------------------------------------------------------
 * VM inventory
 */

#define VM_SELECT \
  "SELECT vm_name, vmware_vm_id, vm_path, vcenter_host, datacenter," \
  " created_at, updated_at, policy, next_run_at, last_run_at, last_skipped_at" \
  " FROM vms"

/* Fill vm->disks from vm_disks, sorted by disk_index. */
static int
vm_load_disks (struct catalog *cat, struct cat_vm *vm)
{
  CLEANUP_STMT struct db_stmt *st =
    db_prepare (cat, "SELECT disk_index, size_bytes, vmware_disk_key, unit_number, source"
                " FROM vm_disks WHERE vm_name = ? ORDER BY disk_index", "s", vm->vm_name);
  size_t cap = 0;
  int r;

  if (st == NULL)
    return -1;
  while ((r = db_step (st)) == 1) {
    struct row row = { st, false, false };
    struct cat_vm_disk *d = array_push ((void **) &vm->disks, vm->n_disks, &cap,
                                        sizeof *d);
    if (d == NULL)
      return -1;
    vm->n_disks++;
    d->disk_index = (int) row_int (&row, 0);
    d->size_bytes = row_int (&row, 1);
    d->vmware_disk_key = row_int (&row, 2);
    d->unit_number = row_int (&row, 3);
    d->source = row_text (&row, 4);
    if (row_done (&row) == -1)
      return -1;
  }
  return r;
}

/* Copy a VM_SELECT row and the VM's disks into *o (owned by the caller). */
static int
vm_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_vm *o = rec;

  o->vm_name = row_text (r, 0);
  o->vmware_vm_id = row_text (r, 1);
  o->vm_path = row_text (r, 2);
  o->vcenter_host = row_text (r, 3);
  o->datacenter = row_text (r, 4);
  o->created_at = row_text (r, 5);
  o->updated_at = row_text (r, 6);
  o->policy = row_text (r, 7);
  o->next_run_at = row_text (r, 8);
  o->last_run_at = row_text (r, 9);
  o->last_skipped_at = row_text (r, 10);
  if (row_done (r) == -1)
    return -1;
  return vm_load_disks (cat, o);
}

static void
vm_clear (void *vm)
{
  cat_vm_clear (vm);
}

static const struct kind vm_kind = { sizeof (struct cat_vm), vm_read, vm_clear };

/* Insert or update the VM row (keeping created_at, and the scheduler's
 * fields but for next_run_at when the policy changes: the next run is the
 * new policy's to compute) and replace its whole disk list.  *created
 * tells which it was. */
static int
vm_put_tx (struct catalog *cat, const void *rec, const char *now, bool *created)
{
  const struct cat_vm *vm = rec;
  CLEANUP_FREE char *old_policy = NULL;
  bool same_policy;
  int64_t one, f;

  if (vm->policy &&
      (f = db_int (cat, &one, "SELECT 1 FROM policies WHERE name = ?", "s", vm->policy)) != 1) {
    if (f == 0)
      error_set (ERR_INVALID, "policy %s not found", vm->policy);
    return -1;
  }
  f = db_text (cat, &old_policy, "SELECT policy FROM vms WHERE vm_name = ?", "s", vm->vm_name);
  if (f == -1)
    return -1;
  *created = f == 0;
  same_policy = old_policy && vm->policy ? strcmp (old_policy, vm->policy) == 0
                                         : old_policy == vm->policy;
  if (*created)
    f = db_exec (cat, "INSERT INTO vms (vm_name, vmware_vm_id, vm_path, vcenter_host,"
                 " datacenter, created_at, updated_at, policy)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 "seeeesss", vm->vm_name, vm->vmware_vm_id, vm->vm_path,
                 vm->vcenter_host, vm->datacenter, now, now, vm->policy);
  else
    f = db_exec (cat, "UPDATE vms SET vmware_vm_id = ?, vm_path = ?, vcenter_host = ?,"
                 " datacenter = ?, updated_at = ?, policy = ?,"
                 " next_run_at = CASE WHEN ? = 1 THEN next_run_at END WHERE vm_name = ?",
                 "eeeessis", vm->vmware_vm_id, vm->vm_path, vm->vcenter_host,
                 vm->datacenter, now, vm->policy, (int) same_policy, vm->vm_name);
  if (f == -1 ||
      db_exec (cat, "DELETE FROM vm_disks WHERE vm_name = ?", "s", vm->vm_name) == -1)
    return -1;
  for (size_t i = 0; i < vm->n_disks; i++) {
    const struct cat_vm_disk *d = &vm->disks[i];
    if (db_exec (cat, "INSERT INTO vm_disks (vm_name, disk_index, size_bytes,"
                 " vmware_disk_key, unit_number, source) VALUES (?, ?, ?, ?, ?, ?)",
                 "siIoos", vm->vm_name, d->disk_index, d->size_bytes,
                 d->vmware_disk_key, d->unit_number, d->source) == -1) {
      error_prefix ("VM %s, disk %d", vm->vm_name, d->disk_index);
      return -1;
    }
  }
  return 0;
}

int
catalog_vm_put (struct catalog *cat, const struct cat_vm *vm, bool *created)
{
  if (vm == NULL || vm->vm_name == NULL)
    return missing ("vm_name");
  if (vm->n_disks > 0 && vm->disks == NULL)
    return missing ("disk list");
  return put_record (cat, vm_put_tx, vm, created);
}

int
catalog_vm_get (struct catalog *cat, const char *vm_name, struct cat_vm *out)
{
  if (vm_name == NULL || out == NULL)
    return missing ("vm_name");
  return read_one (cat, &vm_kind, out, "VM", VM_SELECT " WHERE vm_name = ?",
                   "s", vm_name, NULL);
}

/* Every VM with its disks, by name. */
int
catalog_vm_list (struct catalog *cat, struct cat_vm **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return missing ("output array");
  return read_all (cat, &vm_kind, (void **) out, n, VM_SELECT " ORDER BY vm_name",
                   "", NULL);
}

/* Delete a VM from the inventory; its disks go by cascade.  Its backups
 * stay: contexts copy what they need of the VM. */
static int
vm_delete_tx (struct catalog *cat, const char *vm_name)
{
  int64_t r = db_exec (cat, "DELETE FROM vms WHERE vm_name = ?", "s", vm_name);

  if (r == 0)
    error_set (ERR_NOT_FOUND, "VM %s not found", vm_name);
  return r <= 0 ? -1 : 0;
}

int
catalog_vm_delete (struct catalog *cat, const char *vm_name)
{
  if (vm_name == NULL)
    return missing ("vm_name");
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, vm_delete_tx (cat, vm_name), (void) 0);
}

/* The scheduler's fields of a VM: next_run_at as given, the others kept
 * where NULL. */
static int
vm_schedule_set_tx (struct catalog *cat, const char *vm_name, const char *next_run_at,
                    const char *last_run_at, const char *last_skipped_at)
{
  int64_t r = db_exec (cat, "UPDATE vms SET next_run_at = ?,"
                       " last_run_at = COALESCE(?, last_run_at),"
                       " last_skipped_at = COALESCE(?, last_skipped_at) WHERE vm_name = ?",
                       "ssss", next_run_at, last_run_at, last_skipped_at, vm_name);

  if (r == 0)
    error_set (ERR_NOT_FOUND, "VM %s not found", vm_name);
  return r <= 0 ? -1 : 0;
}

int
catalog_vm_schedule_set (struct catalog *cat, const char *vm_name, const char *next_run_at,
                         const char *last_run_at, const char *last_skipped_at)
{
  if (vm_name == NULL)
    return missing ("vm_name");
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, vm_schedule_set_tx (cat, vm_name, next_run_at, last_run_at,
                                                last_skipped_at), (void) 0);
}

/* ------------------------------------------------------------------------
 * Contexts
 */

int
catalog_context_get (struct catalog *cat, const char *id, struct cat_context *out)
{
  if (id == NULL || out == NULL)
    return missing ("context id");
  return read_one (cat, &context_kind, out, "backup context",
                   CONTEXT_SELECT " WHERE context_id = ?", "s", id, NULL);
}

int
catalog_context_find (struct catalog *cat, const char *vm_name,
                      const char *repository_id, struct cat_context *out)
{
  if (vm_name == NULL || repository_id == NULL || out == NULL)
    return missing ("vm_name and repository_id");
  return read_one (cat, &context_kind, out, "VM",
                   CONTEXT_SELECT " WHERE vm_name = ? AND repository_id = ?",
                  "ss", vm_name, repository_id);
}

/* The contexts of one VM or of all, by VM name then repository. */
int
catalog_context_list (struct catalog *cat, const char *vm_name,
                      struct cat_context **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return missing ("output array");
  return read_all (cat, &context_kind, (void **) out, n,
                   CONTEXT_SELECT " WHERE ?1 IS NULL OR vm_name = ?1"
                   " ORDER BY vm_name, repository_id", "s", vm_name);
}

/* Hand the disk rows of a finished write over to *out (or leave them in
 * l, to be freed, when the caller wants none); l is empty afterwards. */
static void
disks_hand_over (struct cat_disk_list *l, struct cat_disk **out, size_t *n_out)
{
  if (out == NULL)
    return;
  *out = l->v;
  *n_out = l->n;
  *l = (struct cat_disk_list) { 0 };
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

/* Delete the disk rows of a, which are sorted by id, newest first, so that
 * no row goes before a row based on it (see PORTABLE SQL at the top). */
static int
disks_delete (struct catalog *cat, const struct cat_disk *a, size_t n)
{
  for (size_t i = n; i-- > 0; )
    if (db_exec (cat, "DELETE FROM backup_disks WHERE id = ?", "I", a[i].id) == -1)
      return -1;
  return 0;
}

/* Delete a context after collecting its disk rows for the caller: the
 * disks newest first, then the context, whose cascade takes the jobs. */
static int
context_delete_tx (struct catalog *cat, const char *id, bool force,
                   struct cat_disk **disks, size_t *n)
{
  CLEANUP_FREE char *running = NULL, *removing = NULL;
  int f;

  if (must_exist (cat, "SELECT 1 FROM vm_backup_contexts WHERE context_id = ?", id,
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
  if (disks_query (cat, DISK_SELECT DISK_FROM " WHERE d.vm_backup_context_id = ?"
                   " ORDER BY d.id", id, disks, n) == -1)
    return -1;
  if (disks_delete (cat, *disks, *n) == -1 ||
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
    return missing ("context id");
  if (disks == NULL || n_disks == NULL)
    return missing ("output array");
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true, context_delete_tx (cat, id, force, &l.v, &l.n),
              cat_disk_list_clear (&l)) == -1)
    return -1;
  disks_hand_over (&l, disks, n_disks);
  return 0;
}

/* ------------------------------------------------------------------------
 * Backups
 */

/* Fill parents[] with the latest completed disk of each index and say
 * whether a job is active.  With no context yet there is nothing to find. */
static int
backup_plan_tx (struct catalog *cat, const char *vm_name, const char *repository_id,
                size_t n, const int *disk_indexes, struct cat_disk *parents,
                bool *running)
{
  CLEANUP_FREE char *ctx = NULL, *active = NULL;
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
    if (latest_disk (cat, ctx, disk_indexes[i], &parents[i]) == -1)
      return -1;
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
    return missing ("vm_name and repository_id");
  if (n > 0 && (disk_indexes == NULL || parents == NULL))
    return missing ("disk index list");
  if (running == NULL)
    return missing ("running flag");
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
  CLEANUP_FREE char *ctx = NULL, *running = NULL;
  int64_t latest;
  int f;

  if (must_exist (cat, "SELECT 1 FROM backup_repositories WHERE id = ?",
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
   * is still the latest completed disk of its index. */
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
  }

  if (db_exec (cat, "INSERT INTO backup_jobs (id, vm_backup_context_id, vm_name,"
               " repository_id, backup_type, status, error, created_at, completed_at, driver)"
               " VALUES (?, ?, ?, ?, ?, ?, NULL, ?, NULL, ?)", "ssssssss",
               job->id, ctx, job->vm_name, job->repository_id,
               backup_type_name (job->backup_type), job_status_name (JOB_RUNNING),
               job->created_at ? job->created_at : now,
               job_driver_name (job->driver)) == -1) {
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
    return missing ("backup id, vm_name and repository_id");
  if (job->n_disks > 0 && job->disks == NULL)
    return missing ("disk list");
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
    return missing ("backup id");
  return read_one (cat, &job_kind, out, "backup", JOB_SELECT " WHERE j.id = ?",
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
  return collect_rows (cat, st, &job_kind, (void **) out, n);
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
    return missing ("output array");
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
  *ctx = row_text (&row, 1);
  if (row_done (&row) == -1)
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
    return bad_word ("backup_disks.status", word);
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
  return job_load (cat, backup_id, after) == 1 ? 0 : -1;
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
  return job_load (cat, backup_id, after) == 1 ? 0 : -1;
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
    return missing ("backup id");
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
    return missing ("backup id");
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
  if (disks_query (cat, DISK_SELECT DISK_FROM " WHERE d.backup_job_id = ?"
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
    return missing ("backup id");
  if ((dropped == NULL) != (n_dropped == NULL))
    return missing ("count of dropped disks");
  if (status != JOB_FAILED && status != JOB_CANCELLED)
    return catalog_fail (ERR_INVALID, "a backup can only end as failed or cancelled, not %s",
                         job_status_name (status));
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true, backup_end_tx (cat, backup_id, status, error_disk, error, now,
                                        &l.v, &l.n),
              cat_disk_list_clear (&l)) == -1)
    return -1;
  disks_hand_over (&l, dropped, n_dropped);
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
  CLEANUP_FREE char *word = NULL, *dependent = NULL, *active = NULL, *active_word = NULL;
  CLEANUP_STMT struct db_stmt *st = NULL;
  enum job_status status;
  int64_t dependents;
  int f;

  f = db_text (cat, &word, "SELECT status FROM backup_jobs WHERE id = ?", "s", backup_id);
  if (f == 0)
    error_set (ERR_NOT_FOUND, "backup %s not found", backup_id);
  if (f != 1)
    return -1;
  if (job_status_parse (word, &status) == -1)
    return bad_word ("backup_jobs.status", word);
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
  return collect_strings (st, job_ids);
}

int
catalog_backup_delete_plan (struct catalog *cat, const char *backup_id, bool cascade,
                            char ***job_ids)
{
  char **v = NULL;

  if (backup_id == NULL || job_ids == NULL)
    return missing ("backup id and output vector");
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, false, backup_delete_plan_tx (cat, backup_id, cascade, &v),
              (strv_free (v), v = NULL)) == -1) {
    strv_free (v);
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
      disks_query (cat, DOOMED_JOBS DISK_SELECT DISK_FROM
                   " WHERE d.backup_job_id IN (SELECT job_id FROM doomed)"
                   " ORDER BY d.id", backup_id, deleted, n) == -1)
    return -1;
  if (disks_delete (cat, *deleted, *n) == -1)
    goto fail;
  for (char **j = jobs; *j; j++)
    if (db_exec (cat, "DELETE FROM backup_jobs WHERE id = ?", "s", *j) == -1)
      goto fail;
  return context_refresh_last (cat, ctx, now);

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
    return missing ("backup id");
  if ((deleted == NULL) != (n_deleted == NULL))
    return missing ("count of deleted disks");
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true, backup_delete_tx (cat, backup_id, cascade, now, &l.v, &l.n),
              cat_disk_list_clear (&l)) == -1)
    return -1;
  disks_hand_over (&l, deleted, n_deleted);
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
    return missing ("backup id");
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
  f = latest_disk (cat, ctx, disk_index, out);
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
    return missing ("vm_name");
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, false, changeid_get_tx (cat, vm_name, disk_index, repository_id, &d),
              cat_disk_clear (&d)) == -1)
    return -1;
  *out = d;
  d = (struct cat_disk) { 0 };
  return 0;
}

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

  if (query_all (cat, &disk_kind, (void **) out, n, DISK_SELECT DISK_FROM FILES_WHERE,
                 "", NULL) == -1)
    return -1;
  st = db_prepare (cat, "SELECT r.path FROM backup_disks d" FILES_WHERE, "");
  return collect_strings (st, repo_paths);
}

int
catalog_disk_files (struct catalog *cat, struct cat_disk **out,
                    char ***repo_paths, size_t *n)
{
  CLEANUP_CAT_DISK_LIST struct cat_disk_list l = { 0 };
  CLEANUP_STRV char **p = NULL;

  if (out == NULL || repo_paths == NULL || n == NULL)
    return missing ("output arrays");
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, false, disk_files_tx (cat, &l.v, &p, &l.n),
              (cat_disk_list_clear (&l), strv_free (p), p = NULL)) == -1)
    return -1;
  disks_hand_over (&l, out, n);
  *repo_paths = p;
  p = NULL;
  return 0;
}

/* The disks to export: running disks of running jobs. */
int
catalog_running_disks (struct catalog *cat, struct cat_disk **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return missing ("output array");
  return read_all (cat, &disk_kind, (void **) out, n, DISK_SELECT DISK_FROM
                   " JOIN backup_jobs j ON j.id = d.backup_job_id"
                   " WHERE d.status = 'running' AND j.status = 'running' ORDER BY d.id",
                   "", NULL);
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

  j->id = row_text (r, 0);
  ROW_WORD (r, 1, "backup_jobs.status", job_status_parse, &j->status);
  j->ctx = row_text (r, 2);
  return row_done (r);
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
  kind_free (&lost_job_kind, l->v, l->n);
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
    if (collect_ids (st, &ids) == -1)
      return -1;
  }
  {
    CLEANUP_STMT struct db_stmt *st =
      db_prepare (cat, LOST_DISKS "SELECT DISTINCT j.id, j.status, j.vm_backup_context_id"
                  " FROM backup_jobs j JOIN backup_disks d ON d.backup_job_id = j.id"
                  " WHERE d.id IN (SELECT id FROM lost) ORDER BY j.id", "I", disk_id);
    if (collect_rows (cat, st, &lost_job_kind, (void **) &jobs.v, &jobs.n) == -1)
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
    if (context_refresh_last (cat, j->ctx, now) == -1)
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
  " result, created_at, updated_at, completed_at FROM tasks"

/* Copy a TASK_SELECT row into *o (owned by the caller). */
static int
task_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_task *o = rec;

  (void) cat;
  o->id = row_text (r, 0);
  ROW_WORD (r, 1, "tasks.kind", task_kind_parse, &o->kind);
  o->context_id = row_text (r, 2);
  ROW_WORD (r, 3, "tasks.status", task_status_parse, &o->status);
  o->steps_done = row_int (r, 4);
  o->steps_total = row_int (r, 5);
  o->message = row_text (r, 6);
  o->error = row_text (r, 7);
  o->result = row_text (r, 8);
  o->created_at = row_text (r, 9);
  o->updated_at = row_text (r, 10);
  o->completed_at = row_text (r, 11);
  return row_done (r);
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
    return missing ("task id");
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
               " steps_total, message, error, result, created_at, updated_at, completed_at)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, NULL)", "ssssIIssss",
               t->id, task_kind_name (t->kind), t->context_id,
               task_status_name (TASK_RUNNING), t->steps_done, t->steps_total,
               t->message, t->result, at, at) == -1) {
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
    return missing ("task id");
  return read_one (cat, &task_kind, out, "task", TASK_SELECT " WHERE id = ?", "s", id, NULL);
}

/* Every task or those of one status, newest first. */
int
catalog_task_list (struct catalog *cat, bool by_status, enum task_status status,
                   struct cat_task **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return missing ("output array");
  return read_all (cat, &task_kind, (void **) out, n,
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
    return bad_word ("tasks.status", word);
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
    return missing ("task id");
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
    return missing ("task id");
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
  prot = row_int (&row, 1);
  if (row_done (&row) == -1)
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
    return missing ("the task's context and the list of backups to remove");
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
  p->id = row_int (r, 0);
  p->parent = row_int (r, 1);
  p->disk_index = (int) row_int (r, 2);
  p->job = row_text (r, 3);
  p->ctx = row_text (r, 4);
  ROW_WORD (r, 5, "backup_jobs.status", job_status_parse, &p->job_status);
  return row_done (r);
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
  int r = first_row (cat, st, &place_kind, p);

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

    if (collect_rows (cat, st, &place_kind, (void **) &kids.v, &kids.n) == -1)
      return -1;
    for (size_t k = 0; r == 0 && k < kids.n; k++) {
      const struct place *c = &kids.v[k];
      CLEANUP_STMT struct db_stmt *own = NULL;

      if (c->id == kept || idset_has (rows, c->id))
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
      r = collect_ids (own, rows);
    }
    kind_free (&place_kind, kids.v, kids.n);
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
    if (idset_add (&rows, p.id) == -1 || jobset_add (&removing, p.job) == -1)
      return -1;
    if (i == 0) {
      first = p;
      p = (struct place) { 0 };
    }
  }
  if (kept >= 0) {
    if (place_get (cat, kept, JOB_COMPLETED, "the kept row", &k) == -1)
      return -1;
    if (!idset_has (&rows, k.parent))
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

    if (d == NULL || (f = first_row (cat, st, &disk_kind, d)) == -1)
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
  if (disks_delete (cat, out->v, out->n) == -1)
    return -1;
  for (size_t i = 0; i < hanging.n; i++)
    if (db_exec (cat, "DELETE FROM backup_jobs WHERE id = ?", "s", hanging.v[i]) == -1)
      return -1;
  for (size_t i = 0; i < removing.n; i++)
    if (db_exec (cat, "DELETE FROM backup_jobs WHERE id = ?1 AND NOT EXISTS"
                 " (SELECT 1 FROM backup_disks WHERE backup_job_id = ?1)", "s",
                 removing.v[i]) == -1)
      return -1;
  return context_refresh_last (cat, first.ctx, now);
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
    return missing ("count of deleted disks");
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  if (RUN_TX (cat, true, merge_commit_tx (cat, kept_disk_id, new_parent_disk_id, removed_ids,
                                          n_removed, now, &l),
              cat_disk_list_clear (&l)) == -1)
    return -1;
  disks_hand_over (&l, deleted, n_deleted);
  return 0;
}

/* ------------------------------------------------------------------------
 * Migrations
 */

/* Apply migration m unless it is already applied: with its
 * schema_migrations row in one write transaction where the dialect's DDL
 * is transactional (the "already applied?" check inside it, so that two
 * processes opening a new database cannot both apply it); else, under the
 * driver's migration lock, statement by statement, recording the version
 * last (every such migration is re-runnable). */
static int
migrate_one (struct catalog *cat, const struct catalog_migration *m)
{
  bool tx = cat->drv->ddl_in_tx;
  char now[32];
  int64_t one;
  int f;

  if (tx && cat->drv->begin (cat, true) == -1) {
    cat->drv->rollback (cat);
    return -1;
  }
  f = db_int (cat, &one, "SELECT 1 FROM schema_migrations WHERE version = ?", "s", m->version);
  if (f == 0) {
    log_info ("catalog: applying migration %s", m->version);
    id_now (now, sizeof now);
    if (cat->drv->script (cat, m) == -1 ||
        db_exec (cat, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                 "ss", m->version, now) == -1)
      f = -1;
  }
  if (!tx)
    return f == -1 ? -1 : 0;
  return tx_end (cat, f == -1 ? -1 : 0);
}

/* Warn about applied migrations this binary does not carry: the database
 * was migrated by a newer strata, and this one may misread it. */
static int
migrate_check_unknown (struct catalog *cat)
{
  CLEANUP_STMT struct db_stmt *st =
    db_prepare (cat, "SELECT version FROM schema_migrations ORDER BY version", "");
  int r;

  if (st == NULL)
    return -1;
  while ((r = db_step (st)) == 1) {
    const char *v;
    bool known = false;

    if (st->drv->column (st, 0, &v) == -1)
      v = NULL;
    for (const struct catalog_migration *m = catalog_migrations; m->version; m++)
      known |= v && strcmp (m->dialect, cat->drv->name) == 0 && strcmp (m->version, v) == 0;
    if (!known)
      log_warn ("catalog: the database has migration %s, which this strata does not"
                " know: it was made by a newer version", v ? v : "?");
  }
  return r;
}

/* Make sure schema_migrations exists, then apply, in order, each migration
 * of the catalog's dialect that the database has not seen.  Versions are
 * file names ("0003_finishing"), the same in every dialect. */
int
catalog_migrate (struct catalog *cat)
{
  int r = -1;
  SCOPED_LOCK (&cat->lock);

  if (cat->drv->migrate_enter (cat) == -1)
    return -1;
  if (db_exec (cat, cat->drv->migrations_ddl, "") == -1)
    goto out;
  for (const struct catalog_migration *m = catalog_migrations; m->version; m++)
    if (strcmp (m->dialect, cat->drv->name) == 0 && migrate_one (cat, m) == -1)
      goto out;
  r = migrate_check_unknown (cat);
 out:
  cat->drv->migrate_leave (cat);
  return r;
}

/* ------------------------------------------------------------------------
 * Raw access for maintenance tools (catalog-int.h)
 */

int
catalog_raw_migrate (struct catalog *cat)
{
  return catalog_migrate (cat);
}

int
catalog_raw_exec (struct catalog *cat, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  va_list ap;
  SCOPED_LOCK (&cat->lock);

  va_start (ap, types);
  st = stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  return st ? (int) stmt_run (st) : -1;
}

int
catalog_raw_query (struct catalog *cat, catalog_row_fn fn, void *opaque,
                   const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  va_list ap;
  int r, n;
  SCOPED_LOCK (&cat->lock);

  va_start (ap, types);
  st = stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  if (st == NULL)
    return -1;
  while ((r = db_step (st)) == 1) {
    n = st->drv->ncols (st);
    char *vals[n > 0 ? n : 1];
    for (int i = 0; i < n; i++)
      if (st->drv->column (st, i, (const char **) &vals[i]) == -1) {
        catalog_oom ();
        return -1;
      }
    if (fn (opaque, n, vals) == -1)
      return -1;
  }
  return r;
}

int
catalog_raw_tx (struct catalog *cat, enum catalog_tx what)
{
  SCOPED_LOCK (&cat->lock);

  switch (what) {
  case CATALOG_TX_BEGIN:
    if (cat->drv->begin (cat, true) == -1) {
      cat->drv->rollback (cat);
      return -1;
    }
    return 0;
  case CATALOG_TX_COMMIT: return cat->drv->commit (cat);
  default: cat->drv->rollback (cat); return 0;
  }
}
