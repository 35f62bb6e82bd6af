/* catalog/sqlite.c - SQLite backend of the catalog.
 *
 * THREADS AND TRANSACTIONS
 *
 * A catalog is one sqlite3 connection and one mutex.  Every operation holds
 * the mutex from its first statement to its COMMIT or ROLLBACK, so the hub's
 * threads never interleave inside a transaction and sqlite3_errmsg() always
 * describes the call that just failed.  An operation that writes runs in
 * BEGIN IMMEDIATE: the database's write lock is taken before the first read,
 * so what the operation checks (is a job running? is this parent still the
 * latest?) still holds when it writes, even against another process using
 * the same file.  The constraints in the schema (the partial unique index on
 * running jobs, the foreign keys) are the backstop.  A read of more than one
 * statement runs in a deferred transaction so that it sees one snapshot.
 *
 * Each public operation is split in two: sqlite_X takes the lock, begins,
 * calls X_tx and commits or rolls back; X_tx does the statements and fills
 * the caller's out-parameters only through locals that sqlite_X hands over
 * after COMMIT succeeded.  Statements are finalized when X_tx's helpers
 * return, before the ROLLBACK.
 *
 * ERRORS
 *
 * An SQLite failure is turned into the thread's error at once: constraint
 * violations become ERR_CONFLICT, a database still locked after the busy
 * timeout ERR_UNAVAILABLE, a full disk ERR_NO_SPACE, the rest ERR_INTERNAL.
 * ROLLBACK comes after and never overwrites that error.
 *
 * THE LATEST COMPLETED DISK
 *
 * The parent of a new incremental disk, and the answer to "what is the
 * change id of this disk", is the backup_disks row with the highest id among
 * the completed disks, of completed jobs, of that context and disk index.  A
 * context runs one job at a time, so the highest id is the latest
 * completion; timestamps are never used to order backups.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sqlite3.h>

#include "catalog/catalog-int.h"
#include "util/array.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

#define BUSY_TIMEOUT_MS 5000
#define DIALECT "sqlite"

struct sqlite_catalog {
  struct catalog base;          /* first: what the public functions see */
  sqlite3 *db;
  pthread_mutex_t lock;         /* held for each whole operation */
};

static const struct catalog_ops sqlite_ops;

/* For CLEANUP_STMT: finalize a statement (NULL is harmless) at the end of
 * its scope, so that no early return leaves one open. */
static void
stmt_finalize (sqlite3_stmt **s)
{
  sqlite3_finalize (*s);
}
#define CLEANUP_STMT __attribute__((cleanup (stmt_finalize)))

/* ------------------------------------------------------------------------
 * Statements
 */

/* Record the connection's last error as the thread's error, in the category
 * its result code calls for.  sql names the statement for internal errors;
 * a constraint message already says which table and column. */
static void
db_error (struct sqlite_catalog *sc, int rc, const char *sql)
{
  const char *msg = sqlite3_errmsg (sc->db);

  switch (rc & 0xff) {
  case SQLITE_CONSTRAINT:
    error_set (ERR_CONFLICT, "catalog: %s", msg);
    break;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    error_set (ERR_UNAVAILABLE, "catalog: database is locked by another user: %s", msg);
    break;
  case SQLITE_FULL:
    error_set (ERR_NO_SPACE, "catalog: %s", msg);
    break;
  default:
    error_set (ERR_INTERNAL, "catalog: %s (in \"%.80s\")", msg, sql ? sql : "?");
    break;
  }
}

/* Out of memory while copying what the database returned. */
static void
oom_error (void)
{
  error_set_errno (ERR_INTERNAL, ENOMEM, "catalog");
}

/* Bind the parameters of s from ap, one per character of types:
 *   s  const char *  (NULL binds NULL)
 *   e  const char *  (NULL binds '', for NOT NULL DEFAULT '' columns)
 *   i  int
 *   I  int64_t
 *   o  int64_t       (negative binds NULL: the "absent" of catalog.h)
 * Parameter N of the statement is character N-1 of types. */
static int
stmt_bind (struct sqlite_catalog *sc, sqlite3_stmt *s, const char *types, va_list ap)
{
  int nparams = sqlite3_bind_parameter_count (s);

  if ((size_t) nparams != strlen (types)) {
    error_set (ERR_INTERNAL, "catalog: statement has %d parameters, %zu given (in \"%.80s\")",
               nparams, strlen (types), sqlite3_sql (s));
    return -1;
  }
  for (int i = 0; types[i]; i++) {
    int rc, col = i + 1;
    const char *str;
    int64_t v;

    switch (types[i]) {
    case 's':
    case 'e':
      str = va_arg (ap, const char *);
      if (str == NULL && types[i] == 'e')
        str = "";
      rc = str ? sqlite3_bind_text (s, col, str, -1, SQLITE_TRANSIENT)
               : sqlite3_bind_null (s, col);
      break;
    case 'i':
      rc = sqlite3_bind_int64 (s, col, va_arg (ap, int));
      break;
    case 'I':
      rc = sqlite3_bind_int64 (s, col, va_arg (ap, int64_t));
      break;
    case 'o':
      v = va_arg (ap, int64_t);
      rc = v >= 0 ? sqlite3_bind_int64 (s, col, v) : sqlite3_bind_null (s, col);
      break;
    default:
      error_set (ERR_INTERNAL, "catalog: bad bind type '%c'", types[i]);
      return -1;
    }
    if (rc != SQLITE_OK) {
      db_error (sc, rc, sqlite3_sql (s));
      return -1;
    }
  }
  return 0;
}

/* Prepare sql and bind its parameters (see stmt_bind).  Returns the
 * statement, which the caller finalizes, or NULL. */
static sqlite3_stmt *
db_vprepare (struct sqlite_catalog *sc, const char *sql, const char *types, va_list ap)
{
  sqlite3_stmt *s = NULL;
  int rc;

  rc = sqlite3_prepare_v2 (sc->db, sql, -1, &s, NULL);
  if (rc != SQLITE_OK) {
    db_error (sc, rc, sql);
    sqlite3_finalize (s);
    return NULL;
  }
  if (stmt_bind (sc, s, types, ap) == -1) {
    sqlite3_finalize (s);
    return NULL;
  }
  return s;
}

static sqlite3_stmt *
db_prepare (struct sqlite_catalog *sc, const char *sql, const char *types, ...)
{
  sqlite3_stmt *s;
  va_list ap;

  va_start (ap, types);
  s = db_vprepare (sc, sql, types, ap);
  va_end (ap);
  return s;
}

/* Step s once: 1 for a row, 0 when done, -1 on error. */
static int
db_step (struct sqlite_catalog *sc, sqlite3_stmt *s)
{
  int rc = sqlite3_step (s);

  if (rc == SQLITE_ROW)
    return 1;
  if (rc == SQLITE_DONE)
    return 0;
  db_error (sc, rc, sqlite3_sql (s));
  return -1;
}

/* Run a statement that returns no rows we want.  Returns the number of rows
 * it changed, or -1. */
static int
db_exec (struct sqlite_catalog *sc, const char *sql, const char *types, ...)
{
  CLEANUP_STMT sqlite3_stmt *s = NULL;
  va_list ap;
  int rc, r;

  rc = sqlite3_prepare_v2 (sc->db, sql, -1, &s, NULL);
  if (rc != SQLITE_OK) {
    db_error (sc, rc, sql);
    return -1;
  }
  va_start (ap, types);
  r = stmt_bind (sc, s, types, ap);
  va_end (ap);
  if (r == -1)
    return -1;
  while ((r = db_step (sc, s)) == 1)
    ;
  if (r == -1)
    return -1;
  return sqlite3_changes (sc->db);
}

/* Run a query for one integer.  Returns 1 and sets *out when there is a
 * row (NULL reads as -1), 0 when there is none, -1 on error. */
static int
db_int (struct sqlite_catalog *sc, int64_t *out, const char *sql, const char *types, ...)
{
  CLEANUP_STMT sqlite3_stmt *s = NULL;
  va_list ap;
  int rc, r;

  rc = sqlite3_prepare_v2 (sc->db, sql, -1, &s, NULL);
  if (rc != SQLITE_OK) {
    db_error (sc, rc, sql);
    return -1;
  }
  va_start (ap, types);
  r = stmt_bind (sc, s, types, ap);
  va_end (ap);
  if (r == -1)
    return -1;
  r = db_step (sc, s);
  if (r == 1)
    *out = sqlite3_column_type (s, 0) == SQLITE_NULL ? -1 : sqlite3_column_int64 (s, 0);
  return r;
}

/* Run a query for one string.  Returns 1 and sets *out (malloc'd, owned by
 * the caller; NULL for an SQL NULL) when there is a row, 0 when there is
 * none, -1 on error. */
static int
db_text (struct sqlite_catalog *sc, char **out, const char *sql, const char *types, ...)
{
  CLEANUP_STMT sqlite3_stmt *s = NULL;
  va_list ap;
  int rc, r;

  rc = sqlite3_prepare_v2 (sc->db, sql, -1, &s, NULL);
  if (rc != SQLITE_OK) {
    db_error (sc, rc, sql);
    return -1;
  }
  va_start (ap, types);
  r = stmt_bind (sc, s, types, ap);
  va_end (ap);
  if (r == -1)
    return -1;
  r = db_step (sc, s);
  if (r == 1) {
    const unsigned char *t = sqlite3_column_text (s, 0);
    *out = NULL;
    if (t && (*out = strdup ((const char *) t)) == NULL) {
      oom_error ();
      return -1;
    }
    if (t == NULL && sqlite3_column_type (s, 0) != SQLITE_NULL) {
      oom_error ();
      return -1;
    }
  }
  return r;
}

/* Reading the columns of a row.  A failed copy sets oom, checked once per
 * row rather than after each column. */
struct row {
  sqlite3_stmt *s;
  bool oom;
};

/* A text column, copied (the caller owns it); NULL for SQL NULL. */
static char *
row_text (struct row *r, int col)
{
  const unsigned char *t;
  char *ret;

  if (sqlite3_column_type (r->s, col) == SQLITE_NULL)
    return NULL;
  t = sqlite3_column_text (r->s, col);
  if (t == NULL || (ret = strdup ((const char *) t)) == NULL) {
    r->oom = true;
    return NULL;
  }
  return ret;
}

/* An optional integer column: NULL reads as -1. */
static int64_t
row_int (struct row *r, int col)
{
  if (sqlite3_column_type (r->s, col) == SQLITE_NULL)
    return -1;
  return sqlite3_column_int64 (r->s, col);
}

/* Reads the current row into one zeroed record; on failure it leaves the
 * record empty (nothing to free) and sets the error.  sc is for readers that
 * query more, such as a job's disks. */
typedef int (*row_reader) (struct sqlite_catalog *sc, struct row *r, void *rec);

/* Step through s, reading every row into a new array of elem-sized records.
 * On failure free_array frees what was read, and *out is untouched. */
static int
collect_rows (struct sqlite_catalog *sc, sqlite3_stmt *s, size_t elem, row_reader read,
              void (*free_array) (void *a, size_t n), void **out, size_t *n)
{
  void *a = NULL;
  size_t count = 0, cap = 0;
  int r;

  while ((r = db_step (sc, s)) == 1) {
    struct row row = { s, false };
    void *o = array_push (&a, count, &cap, elem);
    if (o == NULL || read (sc, &row, o) == -1) {
      r = -1;
      break;
    }
    count++;
  }
  if (r == -1) {
    free_array (a, count);
    return -1;
  }
  *out = a;
  *n = count;
  return 0;
}

/* ------------------------------------------------------------------------
 * Transactions
 */

/* Begin a transaction: IMMEDIATE (the write lock now) for an operation
 * that writes, DEFERRED for a read that needs one snapshot. */
static int
tx_begin (struct sqlite_catalog *sc, bool write)
{
  return db_exec (sc, write ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED", "") == -1 ? -1 : 0;
}

/* Roll back after a failure, keeping the error that caused it. */
static void
tx_rollback (struct sqlite_catalog *sc)
{
  if (sqlite3_get_autocommit (sc->db))
    return;                     /* SQLite rolled back by itself */
  if (sqlite3_exec (sc->db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
    log_warn ("catalog: ROLLBACK failed: %s", sqlite3_errmsg (sc->db));
}

/* Commit; on failure roll back and return -1 with the error set. */
static int
tx_commit (struct sqlite_catalog *sc)
{
  if (db_exec (sc, "COMMIT", "") == -1) {
    tx_rollback (sc);
    return -1;
  }
  return 0;
}

/* End the transaction that body's result r describes. */
static int
tx_end (struct sqlite_catalog *sc, int r)
{
  if (r == -1) {
    tx_rollback (sc);
    return -1;
  }
  return tx_commit (sc);
}

#define SC(cat) ((struct sqlite_catalog *) (cat))

/* ------------------------------------------------------------------------
 * Rows
 */

#define REPO_SELECT \
  "SELECT id, name, type, path, created_at FROM backup_repositories"

/* Copy a REPO_SELECT row into *o (owned by the caller). */
static int
repo_read (struct row *r, struct cat_repository *o)
{
  o->id = row_text (r, 0);
  o->name = row_text (r, 1);
  o->type = row_text (r, 2);
  o->path = row_text (r, 3);
  o->created_at = row_text (r, 4);
  if (r->oom) {
    cat_repository_clear (o);
    oom_error ();
    return -1;
  }
  return 0;
}

#define CONTEXT_SELECT \
  "SELECT context_id, vm_name, repository_id, vmware_vm_id, vm_path," \
  " vcenter_host, datacenter, total_backups_run, successful_backups," \
  " failed_backups, last_backup_id, last_backup_type, last_backup_at," \
  " created_at, updated_at FROM vm_backup_contexts"

/* Copy a CONTEXT_SELECT row into *o (owned by the caller). */
static int
context_read (struct row *r, struct cat_context *o)
{
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
  o->last_backup_type = row_text (r, 11);
  o->last_backup_at = row_text (r, 12);
  o->created_at = row_text (r, 13);
  o->updated_at = row_text (r, 14);
  if (r->oom) {
    cat_context_clear (o);
    oom_error ();
    return -1;
  }
  return 0;
}

/* Every disk query selects these columns, the parent row joined in as p. */
#define DISK_SELECT \
  "SELECT d.id, d.backup_job_id, d.vm_backup_context_id, d.disk_index," \
  " d.vmware_disk_key, d.unit_number, d.size_bytes, d.backup_type," \
  " d.disk_change_id, d.qcow2_path, d.parent_disk_id, p.backup_job_id," \
  " p.disk_change_id, d.nbd_export, d.bytes_transferred, d.status, d.error," \
  " d.created_at, d.completed_at, d.full_reason"
#define DISK_NCOLUMNS 20
#define DISK_FROM \
  " FROM backup_disks d LEFT JOIN backup_disks p ON p.id = d.parent_disk_id"

/* Copy a DISK_SELECT row into *o (owned by the caller). */
static int
disk_read (struct row *r, struct cat_disk *o)
{
  o->id = row_int (r, 0);
  o->backup_job_id = row_text (r, 1);
  o->context_id = row_text (r, 2);
  o->disk_index = (int) row_int (r, 3);
  o->vmware_disk_key = row_int (r, 4);
  o->unit_number = row_int (r, 5);
  o->size_bytes = row_int (r, 6);
  o->backup_type = row_text (r, 7);
  o->disk_change_id = row_text (r, 8);
  o->qcow2_path = row_text (r, 9);
  o->parent_disk_id = row_int (r, 10);
  o->parent_backup_id = row_text (r, 11);
  o->previous_change_id = row_text (r, 12);
  o->nbd_export = row_text (r, 13);
  o->bytes_transferred = row_int (r, 14);
  o->status = row_text (r, 15);
  o->error = row_text (r, 16);
  o->created_at = row_text (r, 17);
  o->completed_at = row_text (r, 18);
  o->full_reason = row_text (r, 19);
  if (r->oom) {
    cat_disk_clear (o);
    oom_error ();
    return -1;
  }
  return 0;
}

/* Read every row of s (a DISK_SELECT, possibly with one more text column,
 * the repository path, when paths is not NULL) into a new array. */
static int
disks_read_all (struct sqlite_catalog *sc, sqlite3_stmt *s, struct cat_disk **out,
                size_t *n, char ***paths)
{
  struct cat_disk *a = NULL;
  char **p = NULL;
  size_t count = 0, cap = 0, pcap = 0;
  int r;

  while ((r = db_step (sc, s)) == 1) {
    struct row row = { s, false };
    struct cat_disk *d = array_push ((void **) &a, count, &cap, sizeof *a);
    char **path;

    if (d == NULL)
      goto fail;
    if (paths) {
      if ((path = array_push ((void **) &p, count, &pcap, sizeof *p)) == NULL)
        goto fail;
      *path = row_text (&row, DISK_NCOLUMNS);
      if (row.oom) {
        oom_error ();
        goto fail;
      }
    }
    if (disk_read (&row, d) == -1) {
      if (paths)
        free (p[count]);
      goto fail;
    }
    count++;
  }
  if (r == -1)
    goto fail;
  *out = a;
  *n = count;
  if (paths)
    *paths = p;
  return 0;

 fail:
  cat_disk_free_array (a, count);
  if (p)
    for (size_t i = 0; i < count; i++)
      free (p[i]);
  free (p);
  return -1;
}

/* Read the disks that sql (a DISK_SELECT...) selects with one text
 * parameter. */
static int
disks_query (struct sqlite_catalog *sc, const char *sql, const char *param,
             struct cat_disk **out, size_t *n)
{
  CLEANUP_STMT sqlite3_stmt *s = db_prepare (sc, sql, "s", param);

  if (s == NULL)
    return -1;
  return disks_read_all (sc, s, out, n, NULL);
}

#define JOB_SELECT \
  "SELECT j.id, j.vm_backup_context_id, j.vm_name, j.repository_id," \
  " j.backup_type, j.status, j.error, j.created_at, j.completed_at, j.driver" \
  " FROM backup_jobs j"

/* Copy a JOB_SELECT row into *o, without its disks (owned by the caller). */
static int
job_read (struct row *r, struct cat_job *o)
{
  o->id = row_text (r, 0);
  o->context_id = row_text (r, 1);
  o->vm_name = row_text (r, 2);
  o->repository_id = row_text (r, 3);
  o->backup_type = row_text (r, 4);
  o->status = row_text (r, 5);
  o->error = row_text (r, 6);
  o->created_at = row_text (r, 7);
  o->completed_at = row_text (r, 8);
  o->driver = row_text (r, 9);
  if (r->oom) {
    cat_job_clear (o);
    oom_error ();
    return -1;
  }
  return 0;
}

/* Fill job->disks from the database, sorted by disk_index. */
static int
job_load_disks (struct sqlite_catalog *sc, struct cat_job *job)
{
  return disks_query (sc, DISK_SELECT DISK_FROM
                      " WHERE d.backup_job_id = ? ORDER BY d.disk_index",
                      job->id, &job->disks, &job->n_disks);
}

/* Load one job with its disks into *out.  1 when found, 0 when not, -1 on
 * error. */
static int
job_load (struct sqlite_catalog *sc, const char *id, struct cat_job *out)
{
  struct cat_job j = { 0 };
  int r;

  {
    CLEANUP_STMT sqlite3_stmt *s = db_prepare (sc, JOB_SELECT " WHERE j.id = ?", "s", id);
    struct row row = { s, false };

    if (s == NULL || (r = db_step (sc, s)) == -1)
      return -1;
    if (r == 0)
      return 0;
    if (job_read (&row, &j) == -1)
      return -1;
  }
  if (job_load_disks (sc, &j) == -1) {
    cat_job_clear (&j);
    return -1;
  }
  *out = j;
  return 1;
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
latest_disk (struct sqlite_catalog *sc, const char *ctx, int disk_index,
             struct cat_disk *out)
{
  CLEANUP_STMT sqlite3_stmt *s =
    db_prepare (sc, DISK_SELECT DISK_FROM LATEST_WHERE, "si", ctx, disk_index);
  struct row row = { s, false };
  int r;

  if (s == NULL || (r = db_step (sc, s)) == -1)
    return -1;
  if (r == 1 && disk_read (&row, out) == -1)
    return -1;
  return r;
}

/* After jobs of a context were deleted or failed: if last_backup_id no
 * longer names a completed job, point last_backup_* at the newest completed
 * job that remains (newest = holding the highest disk id), or at nothing. */
static int
context_refresh_last (struct sqlite_catalog *sc, const char *ctx, const char *now)
{
  return db_exec (sc,
    "UPDATE vm_backup_contexts SET"
    " (last_backup_id, last_backup_type, last_backup_at) ="
    "  (SELECT j.id, j.backup_type, j.completed_at FROM backup_jobs j"
    "   WHERE j.vm_backup_context_id = ?1 AND j.status = 'completed'"
    "   ORDER BY (SELECT max(d.id) FROM backup_disks d WHERE d.backup_job_id = j.id) DESC,"
    "            j.created_at DESC, j.id DESC LIMIT 1),"
    " updated_at = ?2"
    " WHERE context_id = ?1 AND last_backup_id IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM backup_jobs j"
    "                 WHERE j.id = vm_backup_contexts.last_backup_id"
    "                 AND j.status = 'completed')",
    "ss", ctx, now) == -1 ? -1 : 0;
}

/* ------------------------------------------------------------------------
 * Repositories
 */

/* Insert a repository.  The taken id and path are checked first so that
 * the conflict says which; the UNIQUE constraints are the backstop. */
static int
repo_insert_tx (struct sqlite_catalog *sc, const struct cat_repository *r, const char *now)
{
  CLEANUP_FREE char *other = NULL;
  int64_t one;
  int f;

  if ((f = db_int (sc, &one, "SELECT 1 FROM backup_repositories WHERE id = ?",
                   "s", r->id)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "repository %s already exists", r->id);
    return -1;
  }
  if ((f = db_text (sc, &other, "SELECT id FROM backup_repositories WHERE path = ?",
                    "s", r->path)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "path %s is already used by repository %s",
                 r->path, other);
    return -1;
  }
  if (db_exec (sc, "INSERT INTO backup_repositories (id, name, type, path, created_at)"
               " VALUES (?, ?, ?, ?, ?)", "sssss",
               r->id, r->name, r->type, r->path, r->created_at ? r->created_at : now) == -1) {
    error_prefix ("adding repository %s", r->id);
    return -1;
  }
  return 0;
}

/* catalog_repo_insert: repo_insert_tx in one IMMEDIATE transaction. */
static int
sqlite_repo_insert (struct catalog *cat, const struct cat_repository *r)
{
  struct sqlite_catalog *sc = SC (cat);
  char now[32];

  id_now (now, sizeof now);
  SCOPED_LOCK (&sc->lock);
  if (tx_begin (sc, true) == -1)
    return -1;
  return tx_end (sc, repo_insert_tx (sc, r, now));
}

/* Read one repository (no transaction needed: one statement). */
static int
sqlite_repo_get (struct catalog *cat, const char *id, struct cat_repository *out)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);
  CLEANUP_STMT sqlite3_stmt *s = db_prepare (sc, REPO_SELECT " WHERE id = ?", "s", id);
  struct row row = { s, false };
  int r;

  if (s == NULL || (r = db_step (sc, s)) == -1)
    return -1;
  if (r == 0) {
    error_set (ERR_NOT_FOUND, "repository %s not found", id);
    return -1;
  }
  return repo_read (&row, out);
}

static int
repo_reader (struct sqlite_catalog *sc, struct row *r, void *rec)
{
  return repo_read (r, rec);
}

static void
repos_free (void *a, size_t n)
{
  cat_repository_free_array (a, n);
}

/* All repositories, oldest first. */
static int
sqlite_repo_list (struct catalog *cat, struct cat_repository **out, size_t *n)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);
  CLEANUP_STMT sqlite3_stmt *s =
    db_prepare (sc, REPO_SELECT " ORDER BY created_at, id", "");

  if (s == NULL)
    return -1;
  return collect_rows (sc, s, sizeof **out, repo_reader, repos_free, (void **) out, n);
}

/* Delete a repository no context uses.  The foreign key from
 * vm_backup_contexts would refuse it anyway; checking first gives the
 * reason in words. */
static int
repo_delete_tx (struct sqlite_catalog *sc, const char *id)
{
  int64_t count;
  int f;

  if ((f = db_int (sc, &count, "SELECT 1 FROM backup_repositories WHERE id = ?",
                   "s", id)) != 1) {
    if (f == 0)
      error_set (ERR_NOT_FOUND, "repository %s not found", id);
    return -1;
  }
  if (db_int (sc, &count, "SELECT count(*) FROM vm_backup_contexts WHERE repository_id = ?",
              "s", id) == -1)
    return -1;
  if (count > 0) {
    error_set (ERR_CONFLICT, "repository %s holds the backups of %" PRId64
               " VM%s; delete those first", id, count, count == 1 ? "" : "s");
    return -1;
  }
  if (db_exec (sc, "DELETE FROM backup_repositories WHERE id = ?", "s", id) == -1) {
    error_prefix ("deleting repository %s", id);
    return -1;
  }
  return 0;
}

/* catalog_repo_delete: repo_delete_tx in one IMMEDIATE transaction. */
static int
sqlite_repo_delete (struct catalog *cat, const char *id)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);

  if (tx_begin (sc, true) == -1)
    return -1;
  return tx_end (sc, repo_delete_tx (sc, id));
}

/* ------------------------------------------------------------------------
 * VM inventory
 */

#define VM_SELECT \
  "SELECT vm_name, vmware_vm_id, vm_path, vcenter_host, datacenter," \
  " created_at, updated_at FROM vms"

/* Fill vm->disks from vm_disks, sorted by disk_index. */
static int
vm_load_disks (struct sqlite_catalog *sc, struct cat_vm *vm)
{
  CLEANUP_STMT sqlite3_stmt *s =
    db_prepare (sc, "SELECT disk_index, size_bytes, vmware_disk_key, unit_number, source"
                " FROM vm_disks WHERE vm_name = ? ORDER BY disk_index", "s", vm->vm_name);
  size_t cap = 0;
  int r;

  if (s == NULL)
    return -1;
  while ((r = db_step (sc, s)) == 1) {
    struct row row = { s, false };
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
    if (row.oom) {
      oom_error ();
      return -1;
    }
  }
  return r;
}

/* Copy a VM_SELECT row and the VM's disks into *o (owned by the caller). */
static int
vm_read (struct sqlite_catalog *sc, struct row *r, struct cat_vm *o)
{
  o->vm_name = row_text (r, 0);
  o->vmware_vm_id = row_text (r, 1);
  o->vm_path = row_text (r, 2);
  o->vcenter_host = row_text (r, 3);
  o->datacenter = row_text (r, 4);
  o->created_at = row_text (r, 5);
  o->updated_at = row_text (r, 6);
  if (r->oom)
    oom_error ();
  if (r->oom || vm_load_disks (sc, o) == -1) {
    cat_vm_clear (o);
    return -1;
  }
  return 0;
}

/* Insert or update the VM row (keeping created_at) and replace its whole
 * disk list.  *created tells which it was. */
static int
vm_put_tx (struct sqlite_catalog *sc, const struct cat_vm *vm, const char *now,
           bool *created)
{
  int64_t one;
  int f;

  if ((f = db_int (sc, &one, "SELECT 1 FROM vms WHERE vm_name = ?", "s", vm->vm_name)) == -1)
    return -1;
  *created = f == 0;
  if (*created)
    f = db_exec (sc, "INSERT INTO vms (vm_name, vmware_vm_id, vm_path, vcenter_host,"
                 " datacenter, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 "seeeess", vm->vm_name, vm->vmware_vm_id, vm->vm_path,
                 vm->vcenter_host, vm->datacenter, now, now);
  else
    f = db_exec (sc, "UPDATE vms SET vmware_vm_id = ?, vm_path = ?, vcenter_host = ?,"
                 " datacenter = ?, updated_at = ? WHERE vm_name = ?",
                 "eeeess", vm->vmware_vm_id, vm->vm_path, vm->vcenter_host,
                 vm->datacenter, now, vm->vm_name);
  if (f == -1 ||
      db_exec (sc, "DELETE FROM vm_disks WHERE vm_name = ?", "s", vm->vm_name) == -1)
    return -1;
  for (size_t i = 0; i < vm->n_disks; i++) {
    const struct cat_vm_disk *d = &vm->disks[i];
    if (db_exec (sc, "INSERT INTO vm_disks (vm_name, disk_index, size_bytes,"
                 " vmware_disk_key, unit_number, source) VALUES (?, ?, ?, ?, ?, ?)",
                 "siIoos", vm->vm_name, d->disk_index, d->size_bytes,
                 d->vmware_disk_key, d->unit_number, d->source) == -1) {
      error_prefix ("VM %s, disk %d", vm->vm_name, d->disk_index);
      return -1;
    }
  }
  return 0;
}

/* catalog_vm_put: vm_put_tx in one IMMEDIATE transaction. */
static int
sqlite_vm_put (struct catalog *cat, const struct cat_vm *vm, bool *created)
{
  struct sqlite_catalog *sc = SC (cat);
  bool c = false;
  char now[32];

  id_now (now, sizeof now);
  SCOPED_LOCK (&sc->lock);
  if (tx_begin (sc, true) == -1 || tx_end (sc, vm_put_tx (sc, vm, now, &c)) == -1)
    return -1;
  if (created)
    *created = c;
  return 0;
}

/* Read one VM with its disks: two statements, hence the read transaction. */
static int
vm_get_tx (struct sqlite_catalog *sc, const char *vm_name, struct cat_vm *out)
{
  CLEANUP_STMT sqlite3_stmt *s = db_prepare (sc, VM_SELECT " WHERE vm_name = ?", "s", vm_name);
  struct row row = { s, false };
  int r;

  if (s == NULL || (r = db_step (sc, s)) == -1)
    return -1;
  if (r == 0) {
    error_set (ERR_NOT_FOUND, "VM %s not found", vm_name);
    return -1;
  }
  return vm_read (sc, &row, out);
}

/* catalog_vm_get: vm_get_tx in one read transaction. */
static int
sqlite_vm_get (struct catalog *cat, const char *vm_name, struct cat_vm *out)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);

  if (tx_begin (sc, false) == -1)
    return -1;
  return tx_end (sc, vm_get_tx (sc, vm_name, out));
}

static int
vm_reader (struct sqlite_catalog *sc, struct row *r, void *rec)
{
  return vm_read (sc, r, rec);
}

static void
vms_free (void *a, size_t n)
{
  cat_vm_free_array (a, n);
}

/* Read every VM with its disks, by name.  On failure *out is untouched. */
static int
vm_list_tx (struct sqlite_catalog *sc, struct cat_vm **out, size_t *n)
{
  CLEANUP_STMT sqlite3_stmt *s = db_prepare (sc, VM_SELECT " ORDER BY vm_name", "");

  if (s == NULL)
    return -1;
  return collect_rows (sc, s, sizeof **out, vm_reader, vms_free, (void **) out, n);
}

/* catalog_vm_list: vm_list_tx in one read transaction. */
static int
sqlite_vm_list (struct catalog *cat, struct cat_vm **out, size_t *n)
{
  struct sqlite_catalog *sc = SC (cat);
  struct cat_vm *a = NULL;
  size_t count = 0;
  SCOPED_LOCK (&sc->lock);

  if (tx_begin (sc, false) == -1)
    return -1;
  if (tx_end (sc, vm_list_tx (sc, &a, &count)) == -1) {
    cat_vm_free_array (a, count);
    return -1;
  }
  *out = a;
  *n = count;
  return 0;
}

/* Delete a VM from the inventory; its disks go by cascade.  Its backups
 * stay: contexts copy what they need of the VM. */
static int
sqlite_vm_delete (struct catalog *cat, const char *vm_name)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);
  int r;

  if (tx_begin (sc, true) == -1)
    return -1;
  r = db_exec (sc, "DELETE FROM vms WHERE vm_name = ?", "s", vm_name);
  if (r == 0)
    error_set (ERR_NOT_FOUND, "VM %s not found", vm_name);
  return tx_end (sc, r <= 0 ? -1 : 0);
}

/* ------------------------------------------------------------------------
 * Contexts
 */

/* Read the one context that sql selects with the text parameters a and b
 * (b may be unused: types says).  1 found, 0 not, -1 error. */
static int
context_query_one (struct sqlite_catalog *sc, const char *sql, const char *types,
                   const char *a, const char *b, struct cat_context *out)
{
  CLEANUP_STMT sqlite3_stmt *s = db_prepare (sc, sql, types, a, b);
  struct row row = { s, false };
  int r;

  if (s == NULL || (r = db_step (sc, s)) == -1)
    return -1;
  if (r == 1 && context_read (&row, out) == -1)
    return -1;
  return r;
}

/* Read one context by id (one statement: no transaction). */
static int
sqlite_context_get (struct catalog *cat, const char *id, struct cat_context *out)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);
  int r = context_query_one (sc, CONTEXT_SELECT " WHERE context_id = ?", "s", id, NULL, out);

  if (r == 0)
    error_set (ERR_NOT_FOUND, "backup context %s not found", id);
  return r == 1 ? 0 : -1;
}

/* Read the context of (vm, repository) (one statement: no transaction). */
static int
sqlite_context_find (struct catalog *cat, const char *vm_name, const char *repository_id,
                     struct cat_context *out)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);
  int r = context_query_one (sc, CONTEXT_SELECT " WHERE vm_name = ? AND repository_id = ?",
                             "ss", vm_name, repository_id, out);

  if (r == 0)
    error_set (ERR_NOT_FOUND, "VM %s has no backups in repository %s",
               vm_name, repository_id);
  return r == 1 ? 0 : -1;
}

static int
context_reader (struct sqlite_catalog *sc, struct row *r, void *rec)
{
  return context_read (r, rec);
}

static void
contexts_free (void *a, size_t n)
{
  cat_context_free_array (a, n);
}

/* The contexts of one VM or of all, by VM name then repository. */
static int
sqlite_context_list (struct catalog *cat, const char *vm_name, struct cat_context **out,
                     size_t *n)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);
  CLEANUP_STMT sqlite3_stmt *s =
    db_prepare (sc, CONTEXT_SELECT " WHERE ?1 IS NULL OR vm_name = ?1"
                " ORDER BY vm_name, repository_id", "s", vm_name);

  if (s == NULL)
    return -1;
  return collect_rows (sc, s, sizeof **out, context_reader, contexts_free,
                       (void **) out, n);
}

/* Delete a context after collecting its disk rows for the caller; the
 * jobs and disks go by ON DELETE CASCADE in the same statement, so the
 * parent_disk_id references between them never stand in the way. */
static int
context_delete_tx (struct sqlite_catalog *sc, const char *id, bool force,
                   struct cat_disk **disks, size_t *n)
{
  CLEANUP_FREE char *running = NULL;
  int64_t one;
  int f;

  if ((f = db_int (sc, &one, "SELECT 1 FROM vm_backup_contexts WHERE context_id = ?",
                   "s", id)) != 1) {
    if (f == 0)
      error_set (ERR_NOT_FOUND, "backup context %s not found", id);
    return -1;
  }
  if (!force) {
    f = db_text (sc, &running, "SELECT id FROM backup_jobs"
                 " WHERE vm_backup_context_id = ? AND status IN ('running', 'finishing')", "s", id);
    if (f == -1)
      return -1;
    if (f == 1) {
      error_set (ERR_CONFLICT, "backup %s of context %s is running", running, id);
      return -1;
    }
  }
  if (disks_query (sc, DISK_SELECT DISK_FROM " WHERE d.vm_backup_context_id = ?"
                   " ORDER BY d.id", id, disks, n) == -1)
    return -1;
  if (db_exec (sc, "DELETE FROM vm_backup_contexts WHERE context_id = ?", "s", id) == -1) {
    error_prefix ("deleting backup context %s", id);
    return -1;
  }
  return 0;
}

/* catalog_context_delete: context_delete_tx in one IMMEDIATE transaction. */
static int
sqlite_context_delete (struct catalog *cat, const char *id, bool force,
                       struct cat_disk **disks, size_t *n_disks)
{
  struct sqlite_catalog *sc = SC (cat);
  struct cat_disk *a = NULL;
  size_t n = 0;
  SCOPED_LOCK (&sc->lock);

  if (tx_begin (sc, true) == -1)
    return -1;
  if (tx_end (sc, context_delete_tx (sc, id, force, &a, &n)) == -1) {
    cat_disk_free_array (a, n);
    return -1;
  }
  *disks = a;
  *n_disks = n;
  return 0;
}

/* ------------------------------------------------------------------------
 * Backups
 */

/* Fill parents[] with the latest completed disk of each index and say
 * whether a job runs.  With no context yet there is nothing to find. */
static int
backup_plan_tx (struct sqlite_catalog *sc, const char *vm_name, const char *repository_id,
                size_t n, const int *disk_indexes, struct cat_disk *parents,
                bool *running)
{
  CLEANUP_FREE char *ctx = NULL;
  int64_t one;
  int f;

  f = db_text (sc, &ctx, "SELECT context_id FROM vm_backup_contexts"
               " WHERE vm_name = ? AND repository_id = ?", "ss", vm_name, repository_id);
  if (f != 1)
    return f;                   /* no context: no parents, nothing running */
  f = db_int (sc, &one, "SELECT 1 FROM backup_jobs"
              " WHERE vm_backup_context_id = ? AND status IN ('running', 'finishing')", "s", ctx);
  if (f == -1)
    return -1;
  *running = f == 1;
  for (size_t i = 0; i < n; i++)
    if (latest_disk (sc, ctx, disk_indexes[i], &parents[i]) == -1)
      return -1;
  return 0;
}

/* catalog_backup_plan: backup_plan_tx in one read transaction, into a
 * scratch array so that parents[] is written only on success. */
static int
sqlite_backup_plan (struct catalog *cat, const char *vm_name, const char *repository_id,
                    size_t n, const int *disk_indexes, struct cat_disk *parents,
                    bool *running)
{
  struct sqlite_catalog *sc = SC (cat);
  CLEANUP_FREE struct cat_disk *tmp = calloc (n ? n : 1, sizeof *tmp);
  bool run = false;
  SCOPED_LOCK (&sc->lock);

  if (tmp == NULL) {
    oom_error ();
    return -1;
  }
  if (tx_begin (sc, false) == -1)
    return -1;
  if (tx_end (sc, backup_plan_tx (sc, vm_name, repository_id, n, disk_indexes,
                                  tmp, &run)) == -1) {
    for (size_t i = 0; i < n; i++)
      cat_disk_clear (&tmp[i]);
    return -1;
  }
  memcpy (parents, tmp, n * sizeof *tmp);
  *running = run;
  return 0;
}

/* True for the two backup types the schema allows. */
static bool
backup_type_valid (const char *t)
{
  return t && (strcmp (t, "full") == 0 || strcmp (t, "incremental") == 0);
}

/* Check a new job's disks against the contract before touching the
 * database: ERR_INVALID for what no state of the catalog could accept. */
static int
backup_insert_check (const struct cat_job *job)
{
  if (job->n_disks == 0) {
    error_set (ERR_INVALID, "backup %s has no disks", job->id);
    return -1;
  }
  if (job->context_id && !id_valid (job->context_id)) {
    error_set (ERR_INVALID, "context id \"%s\" is not a valid id", job->context_id);
    return -1;
  }
  if (!backup_type_valid (job->backup_type)) {
    error_set (ERR_INVALID, "backup_type must be \"full\" or \"incremental\"");
    return -1;
  }
  if (job->driver && strcmp (job->driver, "agent") != 0 && strcmp (job->driver, "hub") != 0) {
    error_set (ERR_INVALID, "driver must be \"agent\" or \"hub\"");
    return -1;
  }
  for (size_t i = 0; i < job->n_disks; i++) {
    const struct cat_disk *d = &job->disks[i];
    bool full = d->backup_type && strcmp (d->backup_type, "full") == 0;

    if (!backup_type_valid (d->backup_type)) {
      error_set (ERR_INVALID, "disk %d: backup_type must be \"full\" or \"incremental\"",
                 d->disk_index);
      return -1;
    }
    if (full && d->parent_disk_id >= 0) {
      error_set (ERR_INVALID, "disk %d: a full backup has no parent disk", d->disk_index);
      return -1;
    }
    if (!full && d->parent_disk_id < 0) {
      error_set (ERR_INVALID, "disk %d: an incremental backup needs a parent disk",
                 d->disk_index);
      return -1;
    }
  }
  return 0;
}

/* Find or create the context, refuse a second running job, check each
 * parent against the latest completed disk, then write the job, its disks
 * and the count: all inside the caller's IMMEDIATE transaction, so that no
 * other writer, in this process or another, comes between the checks and
 * the writes.  On success *ctx_out is the context id (caller frees) and
 * disk_ids[i] the new rows' ids. */
static int
backup_insert_tx (struct sqlite_catalog *sc, const struct cat_job *job,
                  const struct cat_vm *vm, const char *now, char **ctx_out,
                  int64_t *disk_ids)
{
  CLEANUP_FREE char *ctx = NULL, *running = NULL;
  int64_t one, latest;
  int f;

  if ((f = db_int (sc, &one, "SELECT 1 FROM backup_repositories WHERE id = ?",
                   "s", job->repository_id)) != 1) {
    if (f == 0)
      error_set (ERR_NOT_FOUND, "repository %s not found", job->repository_id);
    return -1;
  }
  f = db_text (sc, &ctx, "SELECT context_id FROM vm_backup_contexts"
               " WHERE vm_name = ? AND repository_id = ?", "ss",
               job->vm_name, job->repository_id);
  if (f == -1)
    return -1;
  /* The caller may have chosen the context's id already (its files' paths
   * hold it): a new context takes it; an existing one must be it. */
  if (f == 1 && job->context_id && strcmp (job->context_id, ctx) != 0) {
    error_set (ERR_CONFLICT, "the backup context of VM %s in repository %s is %s,"
               " not %s; plan again", job->vm_name, job->repository_id, ctx,
               job->context_id);
    return -1;
  }
  if (f == 0) {
    ctx = job->context_id ? strdup (job->context_id) : id_new ("ctx-backup", job->vm_name);
    if (ctx == NULL) {
      if (job->context_id)
        oom_error ();
      return -1;
    }
    if (db_exec (sc, "INSERT INTO vm_backup_contexts (context_id, vm_name, repository_id,"
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
  else {
    f = db_text (sc, &running, "SELECT id FROM backup_jobs"
                 " WHERE vm_backup_context_id = ? AND status IN ('running', 'finishing')", "s", ctx);
    if (f == -1)
      return -1;
    if (f == 1) {
      error_set (ERR_CONFLICT, "VM %s already has a running backup (%s) in repository %s",
                 job->vm_name, running, job->repository_id);
      return -1;
    }
  }

  /* The plan was read in an earlier transaction: check that every parent
   * is still the latest completed disk of its index. */
  for (size_t i = 0; i < job->n_disks; i++) {
    const struct cat_disk *d = &job->disks[i];

    if (d->parent_disk_id < 0)
      continue;
    f = db_int (sc, &latest, "SELECT d.id FROM backup_disks d" LATEST_WHERE,
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

  if (db_exec (sc, "INSERT INTO backup_jobs (id, vm_backup_context_id, vm_name,"
               " repository_id, backup_type, status, error, created_at, completed_at, driver)"
               " VALUES (?, ?, ?, ?, ?, 'running', NULL, ?, NULL, ?)", "sssssss",
               job->id, ctx, job->vm_name, job->repository_id, job->backup_type,
               job->created_at ? job->created_at : now,
               job->driver ? job->driver : "agent") == -1) {
    error_prefix ("adding backup %s", job->id);
    return -1;
  }
  for (size_t i = 0; i < job->n_disks; i++) {
    const struct cat_disk *d = &job->disks[i];

    if (db_exec (sc, "INSERT INTO backup_disks (vm_backup_context_id, backup_job_id,"
                 " disk_index, vmware_disk_key, size_bytes, unit_number, backup_type,"
                 " qcow2_path, parent_disk_id, nbd_export, bytes_transferred, status,"
                 " created_at, full_reason)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                 "ssioIossossss", ctx, job->id, d->disk_index, d->vmware_disk_key,
                 d->size_bytes, d->unit_number, d->backup_type, d->qcow2_path,
                 d->parent_disk_id, d->nbd_export, d->status ? d->status : "running",
                 d->created_at ? d->created_at : now, d->full_reason) == -1) {
      error_prefix ("adding disk %d of backup %s", d->disk_index, job->id);
      return -1;
    }
    disk_ids[i] = sqlite3_last_insert_rowid (sc->db);
  }
  if (db_exec (sc, "UPDATE vm_backup_contexts SET total_backups_run = total_backups_run + 1,"
               " updated_at = ? WHERE context_id = ?", "ss", now, ctx) == -1)
    return -1;
  *ctx_out = ctx;
  ctx = NULL;
  return 0;
}

/* See backup_insert_tx.  The job's context_id, if set, is the id the
 * caller chose for a new context; after COMMIT the job and its disks
 * receive the context id and the disk ids. */
static int
sqlite_backup_insert (struct catalog *cat, struct cat_job *job, const struct cat_vm *vm)
{
  struct sqlite_catalog *sc = SC (cat);
  CLEANUP_FREE int64_t *ids = NULL;
  CLEANUP_FREE char *ctx = NULL;
  char **ctx_copies;
  char now[32];

  if (backup_insert_check (job) == -1)
    return -1;
  /* Everything that can fail is done before COMMIT, so that a job that was
   * committed is always handed back complete. */
  ids = calloc (job->n_disks, sizeof *ids);
  ctx_copies = calloc (job->n_disks, sizeof *ctx_copies);
  if (ids == NULL || ctx_copies == NULL) {
    free (ctx_copies);
    oom_error ();
    return -1;
  }
  id_now (now, sizeof now);
  {
    SCOPED_LOCK (&sc->lock);
    int r = -1;

    if (tx_begin (sc, true) == -1)
      goto fail;
    r = backup_insert_tx (sc, job, vm, now, &ctx, ids);
    for (size_t i = 0; r == 0 && i < job->n_disks; i++)
      if ((ctx_copies[i] = strdup (ctx)) == NULL) {
        oom_error ();
        r = -1;
      }
    if (tx_end (sc, r) == -1)
      goto fail;
  }
  free (job->context_id);
  job->context_id = ctx;
  ctx = NULL;
  for (size_t i = 0; i < job->n_disks; i++) {
    job->disks[i].id = ids[i];
    free (job->disks[i].context_id);
    job->disks[i].context_id = ctx_copies[i];
  }
  free (ctx_copies);
  return 0;

 fail:
  for (size_t i = 0; i < job->n_disks; i++)
    free (ctx_copies[i]);
  free (ctx_copies);
  return -1;
}

/* Read one job with its disks. */
static int
backup_get_tx (struct sqlite_catalog *sc, const char *id, struct cat_job *out)
{
  int r = job_load (sc, id, out);

  if (r == 0)
    error_set (ERR_NOT_FOUND, "backup %s not found", id);
  return r == 1 ? 0 : -1;
}

/* catalog_backup_get: backup_get_tx in one read transaction. */
static int
sqlite_backup_get (struct catalog *cat, const char *id, struct cat_job *out)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);

  if (tx_begin (sc, false) == -1)
    return -1;
  return tx_end (sc, backup_get_tx (sc, id, out));
}

/* The filter of catalog_backup_list, as ?1..?4 (NULL matches anything). */
#define JOB_FILTER \
  " WHERE (?1 IS NULL OR j.vm_name = ?1) AND (?2 IS NULL OR j.repository_id = ?2)" \
  " AND (?3 IS NULL OR j.status = ?3) AND (?4 IS NULL OR j.backup_type = ?4)"

/* A job with its disks. */
static int
job_reader (struct sqlite_catalog *sc, struct row *r, void *rec)
{
  if (job_read (r, rec) == -1)
    return -1;
  if (job_load_disks (sc, rec) == -1) {
    cat_job_clear (rec);
    return -1;
  }
  return 0;
}

static void
jobs_free (void *a, size_t n)
{
  cat_job_free_array (a, n);
}

/* Count the matches, then read one page of them, newest first, each with
 * its disks.  A limit of 0 or less means no limit. */
static int
backup_list_tx (struct sqlite_catalog *sc, const struct cat_job_filter *f,
                struct cat_job **out, size_t *n, int64_t *total)
{
  CLEANUP_STMT sqlite3_stmt *s = NULL;
  int64_t limit = f->limit > 0 ? f->limit : -1, offset = f->offset > 0 ? f->offset : 0;

  if (db_int (sc, total, "SELECT count(*) FROM backup_jobs j" JOB_FILTER, "ssss",
              f->vm_name, f->repository_id, f->status, f->backup_type) == -1)
    return -1;
  s = db_prepare (sc, JOB_SELECT JOB_FILTER " ORDER BY j.created_at DESC, j.id DESC"
                  " LIMIT ?5 OFFSET ?6", "ssssII", f->vm_name, f->repository_id,
                  f->status, f->backup_type, limit, offset);
  if (s == NULL)
    return -1;
  return collect_rows (sc, s, sizeof **out, job_reader, jobs_free, (void **) out, n);
}

/* catalog_backup_list: backup_list_tx in one read transaction, so that
 * the total and the page agree. */
static int
sqlite_backup_list (struct catalog *cat, const struct cat_job_filter *f,
                    struct cat_job **out, size_t *n, int64_t *total)
{
  struct sqlite_catalog *sc = SC (cat);
  static const struct cat_job_filter any = { 0 };
  struct cat_job *a = NULL;
  size_t count = 0;
  int64_t t = 0;
  SCOPED_LOCK (&sc->lock);

  if (tx_begin (sc, false) == -1)
    return -1;
  if (tx_end (sc, backup_list_tx (sc, f ? f : &any, &a, &count, &t)) == -1) {
    cat_job_free_array (a, count);
    return -1;
  }
  *out = a;
  *n = count;
  if (total)
    *total = t;
  return 0;
}

/* Check that job id exists and its status is want.  On success *ctx, *type
 * and, when driver is not NULL, *driver receive its context id, backup
 * type and driver (malloc'd, the caller frees). */
static int
job_in (struct sqlite_catalog *sc, const char *id, const char *want, char **ctx,
        char **type, char **driver)
{
  CLEANUP_STMT sqlite3_stmt *s =
    db_prepare (sc, "SELECT status, vm_backup_context_id, backup_type, driver FROM backup_jobs"
                " WHERE id = ?", "s", id);
  struct row row = { s, false };
  CLEANUP_FREE char *status = NULL, *c = NULL, *t = NULL, *dr = NULL;
  int r;

  if (s == NULL || (r = db_step (sc, s)) == -1)
    return -1;
  if (r == 0) {
    error_set (ERR_NOT_FOUND, "backup %s not found", id);
    return -1;
  }
  status = row_text (&row, 0);
  c = row_text (&row, 1);
  t = row_text (&row, 2);
  dr = row_text (&row, 3);
  if (row.oom) {
    oom_error ();
    return -1;
  }
  if (strcmp (status, want) != 0) {
    error_set (ERR_CONFLICT, "backup %s is %s", id, status);
    return -1;
  }
  *ctx = c;
  *type = t;
  if (driver) {
    *driver = dr;
    dr = NULL;
  }
  c = t = NULL;
  return 0;
}

/* Mark job backup_id (of context ctx, backup type type) completed and
 * count it as the context's latest successful backup. */
static int
job_complete (struct sqlite_catalog *sc, const char *backup_id, const char *type, const char *ctx,
              const char *now)
{
  if (db_exec (sc, "UPDATE backup_jobs SET status = 'completed', completed_at = ?"
               " WHERE id = ?", "ss", now, backup_id) == -1 ||
      db_exec (sc, "UPDATE vm_backup_contexts SET"
               " successful_backups = successful_backups + 1, last_backup_id = ?,"
               " last_backup_type = ?, last_backup_at = ?, updated_at = ?"
               " WHERE context_id = ?", "sssss",
               backup_id, type, now, now, ctx) == -1)
    return -1;
  return 0;
}

/* Complete one disk of a running job; when it was the last unfinished
 * one, complete the job and count it in the context.  *after receives the
 * job as it stands after the change (caller frees). */
static int
disk_complete_tx (struct sqlite_catalog *sc, const char *backup_id, int disk_index,
                  const char *change_id, int64_t bytes, const char *full_reason,
                  const char *now, struct cat_job *after)
{
  CLEANUP_FREE char *ctx = NULL, *type = NULL, *status = NULL, *driver = NULL;
  int64_t disk_id, left;
  int f;

  if (job_in (sc, backup_id, "running", &ctx, &type, &driver) == -1)
    return -1;
  f = db_int (sc, &disk_id, "SELECT id FROM backup_disks"
              " WHERE backup_job_id = ? AND disk_index = ?", "si", backup_id, disk_index);
  if (f == -1)
    return -1;
  if (f == 0) {
    error_set (ERR_NOT_FOUND, "backup %s has no disk %d", backup_id, disk_index);
    return -1;
  }
  if (db_text (sc, &status, "SELECT status FROM backup_disks WHERE id = ?",
               "I", disk_id) != 1)
    return -1;
  if (strcmp (status, "running") != 0 && strcmp (status, "pending") != 0) {
    error_set (ERR_CONFLICT, "disk %d of backup %s is %s", disk_index, backup_id, status);
    return -1;
  }
  if (db_exec (sc, "UPDATE backup_disks SET status = 'completed', disk_change_id = ?,"
               " bytes_transferred = ?, completed_at = ?, nbd_export = NULL,"
               " full_reason = COALESCE(?, full_reason) WHERE id = ?",
               "sIssI", change_id, bytes, now, full_reason, disk_id) == -1)
    return -1;
  if (db_int (sc, &left, "SELECT count(*) FROM backup_disks"
              " WHERE backup_job_id = ? AND status <> 'completed'", "s", backup_id) == -1)
    return -1;
  if (left == 0) {
    /* A hub-driven job still owes the source its bitmaps: it finishes
     * later, by catalog_backup_finish. */
    if (strcmp (driver, "hub") == 0) {
      if (db_exec (sc, "UPDATE backup_jobs SET status = 'finishing' WHERE id = ?",
                   "s", backup_id) == -1)
        return -1;
    }
    else if (job_complete (sc, backup_id, type, ctx, now) == -1)
      return -1;
  }
  return job_load (sc, backup_id, after) == 1 ? 0 : -1;
}

/* Finish a finishing job: complete it and count it in its context.
 * *after receives the job as it stands after the change. */
static int
backup_finish_tx (struct sqlite_catalog *sc, const char *backup_id, const char *now,
                  struct cat_job *after)
{
  CLEANUP_FREE char *ctx = NULL, *type = NULL;

  if (job_in (sc, backup_id, "finishing", &ctx, &type, NULL) == -1 ||
      job_complete (sc, backup_id, type, ctx, now) == -1)
    return -1;
  return job_load (sc, backup_id, after) == 1 ? 0 : -1;
}

/* catalog_disk_complete: disk_complete_tx in one IMMEDIATE transaction. */
static int
sqlite_disk_complete (struct catalog *cat, const char *backup_id, int disk_index,
                      const char *change_id, int64_t bytes_transferred,
                      const char *full_reason, struct cat_job *job_after)
{
  struct sqlite_catalog *sc = SC (cat);
  struct cat_job after = { 0 };
  char now[32];

  if (bytes_transferred < 0) {
    error_set (ERR_INVALID, "bytes_transferred must not be negative");
    return -1;
  }
  id_now (now, sizeof now);
  SCOPED_LOCK (&sc->lock);
  if (tx_begin (sc, true) == -1)
    return -1;
  if (tx_end (sc, disk_complete_tx (sc, backup_id, disk_index, change_id,
                                    bytes_transferred, full_reason, now, &after)) == -1) {
    cat_job_clear (&after);
    return -1;
  }
  if (job_after)
    *job_after = after;
  else
    cat_job_clear (&after);
  return 0;
}

/* End a running job as failed or cancelled: collect its unfinished disks
 * as they are (with paths and exports) into *dropped, then fail them,
 * clearing paths and exports, and count the failure in the context. */
static int
backup_end_tx (struct sqlite_catalog *sc, const char *backup_id, const char *status,
               int error_disk, const char *error, const char *now,
               struct cat_disk **dropped, size_t *n)
{
  CLEANUP_FREE char *ctx = NULL, *type = NULL;
  const char *other = strcmp (status, "failed") == 0 ? "job failed" : "job cancelled";

  if (job_in (sc, backup_id, "running", &ctx, &type, NULL) == -1)
    return -1;
  if (disks_query (sc, DISK_SELECT DISK_FROM " WHERE d.backup_job_id = ?"
                   " AND d.status <> 'completed' ORDER BY d.disk_index",
                   backup_id, dropped, n) == -1)
    return -1;
  for (size_t i = 0; i < *n; i++) {
    const struct cat_disk *d = &(*dropped)[i];
    const char *msg = other;

    if (d->disk_index == error_disk && error_disk >= 0 && error)
      msg = error;
    if (db_exec (sc, "UPDATE backup_disks SET status = 'failed', error = ?,"
                 " qcow2_path = NULL, nbd_export = NULL, completed_at = ?"
                 " WHERE id = ?", "ssI", msg, now, d->id) == -1)
      return -1;
  }
  if (db_exec (sc, "UPDATE backup_jobs SET status = ?, error = ?, completed_at = ?"
               " WHERE id = ?", "ssss", status, error, now, backup_id) == -1 ||
      db_exec (sc, "UPDATE vm_backup_contexts SET failed_backups = failed_backups + 1,"
               " updated_at = ? WHERE context_id = ?", "ss", now, ctx) == -1)
    return -1;
  return 0;
}

/* catalog_backup_finish: backup_finish_tx in one write transaction. */
static int
sqlite_backup_finish (struct catalog *cat, const char *backup_id, struct cat_job *job_after)
{
  struct sqlite_catalog *sc = SC (cat);
  struct cat_job after = { 0 };
  char now[32];

  id_now (now, sizeof now);
  SCOPED_LOCK (&sc->lock);
  if (tx_begin (sc, true) == -1)
    return -1;
  if (tx_end (sc, backup_finish_tx (sc, backup_id, now, &after)) == -1) {
    cat_job_clear (&after);
    return -1;
  }
  if (job_after)
    *job_after = after;
  else
    cat_job_clear (&after);
  return 0;
}

static int backup_delete_plan_tx (struct sqlite_catalog *sc, const char *backup_id, bool cascade,
                                  char ***out);

/* Free a NULL-terminated vector of strings. */
static void
strv_free (char **v)
{
  for (size_t i = 0; v && v[i]; i++)
    free (v[i]);
  free (v);
}

/* catalog_backup_delete_plan: backup_delete_plan_tx in one transaction. */
static int
sqlite_backup_delete_plan (struct catalog *cat, const char *backup_id, bool cascade,
                        char ***job_ids)
{
  struct sqlite_catalog *sc = SC (cat);
  char **v = NULL;
  SCOPED_LOCK (&sc->lock);

  if (tx_begin (sc, false) == -1)
    return -1;
  if (tx_end (sc, backup_delete_plan_tx (sc, backup_id, cascade, &v)) == -1) {
    strv_free (v);
    return -1;
  }
  *job_ids = v;
  return 0;
}

/* catalog_backup_end: backup_end_tx in one IMMEDIATE transaction. */
static int
sqlite_backup_end (struct catalog *cat, const char *backup_id, const char *status,
                   int error_disk, const char *error, struct cat_disk **dropped,
                   size_t *n_dropped)
{
  struct sqlite_catalog *sc = SC (cat);
  struct cat_disk *a = NULL;
  size_t n = 0;
  char now[32];

  if (strcmp (status, "failed") != 0 && strcmp (status, "cancelled") != 0) {
    error_set (ERR_INVALID, "a backup can only end as failed or cancelled, not %s", status);
    return -1;
  }
  id_now (now, sizeof now);
  SCOPED_LOCK (&sc->lock);
  if (tx_begin (sc, true) == -1)
    return -1;
  if (tx_end (sc, backup_end_tx (sc, backup_id, status, error_disk, error, now,
                                 &a, &n)) == -1) {
    cat_disk_free_array (a, n);
    return -1;
  }
  if (dropped) {
    *dropped = a;
    *n_dropped = n;
  }
  else
    cat_disk_free_array (a, n);
  return 0;
}

/* The job ?1 and, recursively, every job with a disk based on a disk of a
 * job already in the set: what deleting ?1 with cascade deletes. */
#define DOOMED_JOBS \
  "WITH RECURSIVE doomed (job_id) AS (" \
  "  SELECT ?1" \
  "  UNION" \
  "  SELECT c.backup_job_id FROM backup_disks c" \
  "  JOIN backup_disks p ON c.parent_disk_id = p.id" \
  "  JOIN doomed ON p.backup_job_id = doomed.job_id) "

#define WITH_FILES \
  " AND EXISTS (SELECT 1 FROM backup_disks x" \
  "             WHERE x.backup_job_id = doomed.job_id AND x.qcow2_path IS NOT NULL)"

/* The checks of deleting backup_id (with cascade or not): it exists and
 * is not active, and its dependents with files are deleted only with
 * cascade and only when none of them is active.  On success *ctx is its
 * context id (malloc'd, the caller frees). */
static int
backup_delete_check (struct sqlite_catalog *sc, const char *backup_id, bool cascade, char **ctx)
{
  CLEANUP_FREE char *status = NULL, *dependent = NULL, *dep_status = NULL;
  int64_t dependents;
  int f;

  f = db_text (sc, &status, "SELECT status FROM backup_jobs WHERE id = ?", "s", backup_id);
  if (f == -1)
    return -1;
  if (f == 0) {
    error_set (ERR_NOT_FOUND, "backup %s not found", backup_id);
    return -1;
  }
  if (strcmp (status, "running") == 0 || strcmp (status, "finishing") == 0) {
    error_set (ERR_CONFLICT, "backup %s is %s", backup_id, status);
    return -1;
  }
  /* Only dependents that still have a file are backed by this backup; a
   * failed attempt whose overlays are gone goes with it. */
  if (db_text (sc, ctx, "SELECT vm_backup_context_id FROM backup_jobs WHERE id = ?",
               "s", backup_id) != 1 ||
      db_int (sc, &dependents, DOOMED_JOBS
              "SELECT count(*) FROM doomed WHERE job_id <> ?1" WITH_FILES,
              "s", backup_id) == -1)
    return -1;
  if (dependents > 0) {
    if (db_text (sc, &dependent, DOOMED_JOBS
                 "SELECT job_id FROM doomed WHERE job_id <> ?1" WITH_FILES
                 " ORDER BY job_id LIMIT 1", "s", backup_id) != 1)
      return -1;
    if (!cascade) {
      error_set (ERR_CONFLICT, "%" PRId64 " later backup%s (%s%s) %s based on backup %s;"
                 " delete with cascade to delete them too",
                 dependents, dependents == 1 ? "" : "s", dependent,
                 dependents == 1 ? "" : ", ...", dependents == 1 ? "is" : "are",
                 backup_id);
      return -1;
    }
    f = db_text (sc, &dep_status, DOOMED_JOBS
                 "SELECT j.id FROM backup_jobs j JOIN doomed ON j.id = doomed.job_id"
                 " WHERE j.status IN ('running', 'finishing') LIMIT 1", "s", backup_id);
    if (f == -1)
      return -1;
    if (f == 1) {
      error_set (ERR_CONFLICT, "backup %s, which is based on backup %s, is running",
                 dep_status, backup_id);
      return -1;
    }
  }
  return 0;
}

/* The ids of the jobs that deleting backup_id would delete: backup_id
 * first, then the others by id, into a NULL-terminated vector (the caller
 * frees it). */
static int
backup_delete_plan_tx (struct sqlite_catalog *sc, const char *backup_id, bool cascade, char ***out)
{
  CLEANUP_FREE char *ctx = NULL;
  CLEANUP_STMT sqlite3_stmt *s = NULL;
  char **v = NULL;
  size_t n = 0, cap = 0;
  int r;

  if (backup_delete_check (sc, backup_id, cascade, &ctx) == -1)
    return -1;
  s = db_prepare (sc, DOOMED_JOBS "SELECT job_id FROM doomed"
                  " ORDER BY job_id <> ?1, job_id", "s", backup_id);
  if (s == NULL)
    return -1;
  for (;;) {
    char **slot = array_push ((void **) &v, n, &cap, sizeof *v);
    if (slot == NULL) {
      r = -1;
      break;
    }
    *slot = NULL;
    if ((r = db_step (sc, s)) != 1)
      break;
    struct row row = { s, false };
    if ((*slot = row_text (&row, 0)) == NULL) {
      oom_error ();
      r = -1;
      break;
    }
    n++;
  }
  if (r == -1) {
    for (size_t i = 0; i < n; i++)
      free (v[i]);
    free (v);
    return -1;
  }
  *out = v;
  return 0;
}

/* Delete a finished job, and with cascade every job built on it.  The
 * deleted disk rows are collected into *deleted first; the delete itself
 * is one statement (see below).  last_backup_* moves back if it named a
 * deleted job. */
static int
backup_delete_tx (struct sqlite_catalog *sc, const char *backup_id, bool cascade,
                  const char *now, struct cat_disk **deleted, size_t *n)
{
  CLEANUP_FREE char *ctx = NULL;

  if (backup_delete_check (sc, backup_id, cascade, &ctx) == -1)
    return -1;
  if (disks_query (sc, DOOMED_JOBS DISK_SELECT DISK_FROM
                   " WHERE d.backup_job_id IN (SELECT job_id FROM doomed)"
                   " ORDER BY d.id", backup_id, deleted, n) == -1)
    return -1;
  /* One statement, so that the parent_disk_id references are checked when
   * all the rows are gone, not row by row. */
  if (db_exec (sc, DOOMED_JOBS "DELETE FROM backup_jobs"
               " WHERE id IN (SELECT job_id FROM doomed)", "s", backup_id) == -1) {
    error_prefix ("deleting backup %s", backup_id);
    return -1;
  }
  return context_refresh_last (sc, ctx, now);
}

/* catalog_backup_delete: backup_delete_tx in one IMMEDIATE transaction. */
static int
sqlite_backup_delete (struct catalog *cat, const char *backup_id, bool cascade,
                      struct cat_disk **deleted, size_t *n_deleted)
{
  struct sqlite_catalog *sc = SC (cat);
  struct cat_disk *a = NULL;
  size_t n = 0;
  char now[32];

  id_now (now, sizeof now);
  SCOPED_LOCK (&sc->lock);
  if (tx_begin (sc, true) == -1)
    return -1;
  if (tx_end (sc, backup_delete_tx (sc, backup_id, cascade, now, &a, &n)) == -1) {
    cat_disk_free_array (a, n);
    return -1;
  }
  if (deleted) {
    *deleted = a;
    *n_deleted = n;
  }
  else
    cat_disk_free_array (a, n);
  return 0;
}

/* Find the context (the named repository's, or the VM's only one), then
 * its latest completed disk of that index. */
static int
changeid_get_tx (struct sqlite_catalog *sc, const char *vm_name, int disk_index,
                 const char *repository_id, struct cat_disk *out)
{
  CLEANUP_FREE char *ctx = NULL;
  int64_t contexts;
  int f;

  if (repository_id) {
    f = db_text (sc, &ctx, "SELECT context_id FROM vm_backup_contexts"
                 " WHERE vm_name = ? AND repository_id = ?", "ss", vm_name, repository_id);
    if (f == 0)
      error_set (ERR_NOT_FOUND, "VM %s has no backups in repository %s",
                 vm_name, repository_id);
    if (f != 1)
      return -1;
  }
  else {
    if (db_int (sc, &contexts, "SELECT count(*) FROM vm_backup_contexts WHERE vm_name = ?",
                "s", vm_name) == -1)
      return -1;
    if (contexts == 0) {
      error_set (ERR_NOT_FOUND, "VM %s has no backups", vm_name);
      return -1;
    }
    if (contexts > 1) {
      error_set (ERR_CONFLICT, "VM %s has backups in %" PRId64 " repositories;"
                 " name the repository", vm_name, contexts);
      return -1;
    }
    if (db_text (sc, &ctx, "SELECT context_id FROM vm_backup_contexts WHERE vm_name = ?",
                 "s", vm_name) != 1)
      return -1;
  }
  f = latest_disk (sc, ctx, disk_index, out);
  if (f == 0)
    error_set (ERR_NOT_FOUND, "VM %s has no completed backup of disk %d",
               vm_name, disk_index);
  return f == 1 ? 0 : -1;
}

/* catalog_changeid_get: changeid_get_tx in one read transaction. */
static int
sqlite_changeid_get (struct catalog *cat, const char *vm_name, int disk_index,
                     const char *repository_id, struct cat_disk *out)
{
  struct sqlite_catalog *sc = SC (cat);
  struct cat_disk d = { 0 };
  SCOPED_LOCK (&sc->lock);

  if (tx_begin (sc, false) == -1)
    return -1;
  if (tx_end (sc, changeid_get_tx (sc, vm_name, disk_index, repository_id, &d)) == -1) {
    cat_disk_clear (&d);
    return -1;
  }
  *out = d;
  return 0;
}

/* ------------------------------------------------------------------------
 * Recovery
 */

/* Every disk row with a file, and its repository's path (one statement). */
static int
sqlite_disk_files (struct catalog *cat, struct cat_disk **out, char ***repo_paths,
                   size_t *n)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);
  CLEANUP_STMT sqlite3_stmt *s =
    db_prepare (sc, DISK_SELECT ", r.path" DISK_FROM
                " JOIN vm_backup_contexts c ON c.context_id = d.vm_backup_context_id"
                " JOIN backup_repositories r ON r.id = c.repository_id"
                " WHERE d.qcow2_path IS NOT NULL ORDER BY d.id", "");

  if (s == NULL)
    return -1;
  return disks_read_all (sc, s, out, n, repo_paths);
}

/* The disks to export: running disks of running jobs (one statement). */
static int
sqlite_running_disks (struct catalog *cat, struct cat_disk **out, size_t *n)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);
  CLEANUP_STMT sqlite3_stmt *s =
    db_prepare (sc, DISK_SELECT DISK_FROM
                " JOIN backup_jobs j ON j.id = d.backup_job_id"
                " WHERE d.status = 'running' AND j.status = 'running' ORDER BY d.id", "");

  if (s == NULL)
    return -1;
  return disks_read_all (sc, s, out, n, NULL);
}

/* The disk ?1 and every disk based on it, recursively. */
#define LOST_DISKS \
  "WITH RECURSIVE lost (id) AS (" \
  "  SELECT ?1" \
  "  UNION" \
  "  SELECT c.id FROM backup_disks c JOIN lost ON c.parent_disk_id = lost.id) "

struct lost_job {
  char *id, *status, *ctx;
};

/* Free what lost_jobs_read returned. */
static void
lost_jobs_free (struct lost_job *a, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    free (a[i].id);
    free (a[i].status);
    free (a[i].ctx);
  }
  free (a);
}

/* Read the jobs that own the lost disk or a disk based on it. */
static int
lost_jobs_read (struct sqlite_catalog *sc, int64_t disk_id, struct lost_job **out,
                size_t *n)
{
  CLEANUP_STMT sqlite3_stmt *s =
    db_prepare (sc, LOST_DISKS "SELECT DISTINCT j.id, j.status, j.vm_backup_context_id"
                " FROM backup_jobs j JOIN backup_disks d ON d.backup_job_id = j.id"
                " WHERE d.id IN (SELECT id FROM lost) ORDER BY j.id", "I", disk_id);
  struct lost_job *a = NULL;
  size_t count = 0, cap = 0;
  int r;

  if (s == NULL)
    return -1;
  while ((r = db_step (sc, s)) == 1) {
    struct row row = { s, false };
    struct lost_job *j = array_push ((void **) &a, count, &cap, sizeof *a);
    if (j == NULL) {
      r = -1;
      break;
    }
    count++;
    j->id = row_text (&row, 0);
    j->status = row_text (&row, 1);
    j->ctx = row_text (&row, 2);
    if (row.oom) {
      oom_error ();
      r = -1;
      break;
    }
  }
  if (r == -1) {
    lost_jobs_free (a, count);
    return -1;
  }
  *out = a;
  *n = count;
  return 0;
}

/* Fail a disk whose file is gone and every disk built on it, clearing
 * their paths and exports.  Their jobs, if running or completed, fail too;
 * a running one also stops its other disks (their files stay referenced
 * until the job is deleted) and counts as a failed backup.  A completed one
 * keeps its place in successful_backups: that is history. */
static int
disk_lost_tx (struct sqlite_catalog *sc, int64_t disk_id, const char *reason,
              const char *now)
{
  struct lost_job *jobs = NULL;
  CLEANUP_FREE char *child_msg = NULL, *job_msg = NULL;
  size_t n_jobs = 0;
  int64_t one;
  int f, r = -1;

  if ((f = db_int (sc, &one, "SELECT 1 FROM backup_disks WHERE id = ?", "I", disk_id)) != 1) {
    if (f == 0)
      error_set (ERR_NOT_FOUND, "backup disk %" PRId64 " not found", disk_id);
    return -1;
  }
  if (asprintf (&child_msg, "based on lost backup disk %" PRId64 ": %s",
                disk_id, reason) == -1) {
    child_msg = NULL;
    oom_error ();
    return -1;
  }
  if (asprintf (&job_msg, "backup disk %" PRId64 " lost: %s", disk_id, reason) == -1) {
    job_msg = NULL;
    oom_error ();
    return -1;
  }
  if (lost_jobs_read (sc, disk_id, &jobs, &n_jobs) == -1)
    return -1;

  if (db_exec (sc, "UPDATE backup_disks SET status = 'failed', error = ?2,"
               " qcow2_path = NULL, nbd_export = NULL,"
               " completed_at = coalesce (completed_at, ?3) WHERE id = ?1",
               "Iss", disk_id, reason, now) == -1 ||
      db_exec (sc, LOST_DISKS "UPDATE backup_disks SET status = 'failed', error = ?2,"
               " qcow2_path = NULL, nbd_export = NULL,"
               " completed_at = coalesce (completed_at, ?3)"
               " WHERE id IN (SELECT id FROM lost) AND id <> ?1",
               "Iss", disk_id, child_msg, now) == -1)
    goto out;

  for (size_t i = 0; i < n_jobs; i++) {
    const struct lost_job *j = &jobs[i];
    bool was_running = strcmp (j->status, "running") == 0 ||
                       strcmp (j->status, "finishing") == 0;

    if (!was_running && strcmp (j->status, "completed") != 0)
      continue;
    if (db_exec (sc, "UPDATE backup_jobs SET status = 'failed', error = ?,"
                 " completed_at = coalesce (completed_at, ?) WHERE id = ?",
                 "sss", job_msg, now, j->id) == -1)
      goto out;
    if (was_running) {
      /* A failed job has no running disks: the others stop too.  Their
       * files stay referenced, to go when the job is deleted. */
      if (db_exec (sc, "UPDATE backup_disks SET status = 'failed', error = 'job failed',"
                   " nbd_export = NULL, completed_at = ?"
                   " WHERE backup_job_id = ? AND status IN ('pending', 'running')",
                   "ss", now, j->id) == -1 ||
          db_exec (sc, "UPDATE vm_backup_contexts SET failed_backups = failed_backups + 1,"
                   " updated_at = ? WHERE context_id = ?", "ss", now, j->ctx) == -1)
        goto out;
    }
    if (context_refresh_last (sc, j->ctx, now) == -1)
      goto out;
  }
  r = 0;

 out:
  lost_jobs_free (jobs, n_jobs);
  return r;
}

/* catalog_disk_lost: disk_lost_tx in one IMMEDIATE transaction. */
static int
sqlite_disk_lost (struct catalog *cat, int64_t disk_id, const char *reason)
{
  struct sqlite_catalog *sc = SC (cat);
  char now[32];

  id_now (now, sizeof now);
  SCOPED_LOCK (&sc->lock);
  if (tx_begin (sc, true) == -1)
    return -1;
  return tx_end (sc, disk_lost_tx (sc, disk_id, reason ? reason : "file lost", now));
}

/* ------------------------------------------------------------------------
 * Opening, migrating, closing
 */

/* migrate_one's transaction. */
static int
migrate_one_tx (struct sqlite_catalog *sc, const struct catalog_migration *m)
{
  char now[32];
  int64_t one;
  char *errmsg = NULL;
  int f, rc;

  if (tx_begin (sc, true) == -1)
    return -1;
  f = db_int (sc, &one, "SELECT 1 FROM schema_migrations WHERE version = ?", "s", m->version);
  if (f != 0)
    return tx_end (sc, f == -1 ? -1 : 0);
  log_info ("catalog: applying migration %s", m->version);
  /* A migration is a script of several statements, all constant text from
   * the binary: sqlite3_exec runs it whole. */
  rc = sqlite3_exec (sc->db, m->sql, NULL, NULL, &errmsg);
  if (rc != SQLITE_OK) {
    error_set (ERR_INTERNAL, "catalog: migration %s failed: %s", m->version,
               errmsg ? errmsg : sqlite3_errstr (rc));
    sqlite3_free (errmsg);
    tx_rollback (sc);
    return -1;
  }
  f = db_int (sc, &one, "SELECT 1 FROM pragma_foreign_key_check", "");
  if (f == 1)
    error_set (ERR_INTERNAL, "catalog: migration %s breaks a foreign key", m->version);
  if (f != 0) {
    tx_rollback (sc);
    return -1;
  }
  id_now (now, sizeof now);
  if (db_exec (sc, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
               "ss", m->version, now) == -1) {
    tx_rollback (sc);
    return -1;
  }
  return tx_commit (sc);
}

/* Apply one migration, with its schema_migrations row, in one transaction,
 * unless it is already applied (checked inside the transaction, so that two
 * processes opening a new database cannot both apply it).  Foreign keys are
 * off meanwhile, as SQLite's procedure for general schema changes wants (a
 * table rebuilt by DROP and RENAME must not cascade), and checked whole
 * before COMMIT. */
static int
migrate_one (struct sqlite_catalog *sc, const struct catalog_migration *m)
{
  int r;

  /* PRAGMA foreign_keys is a no-op inside a transaction. */
  if (db_exec (sc, "PRAGMA foreign_keys = OFF", "") == -1)
    return -1;
  r = migrate_one_tx (sc, m);
  if (db_exec (sc, "PRAGMA foreign_keys = ON", "") == -1)
    return -1;
  return r;
}

/* Warn about applied migrations this binary does not carry: the database
 * was migrated by a newer strata, and this one may misread it. */
static int
migrate_check_unknown (struct sqlite_catalog *sc)
{
  CLEANUP_STMT sqlite3_stmt *s =
    db_prepare (sc, "SELECT version FROM schema_migrations ORDER BY version", "");
  int r;

  if (s == NULL)
    return -1;
  while ((r = db_step (sc, s)) == 1) {
    const char *v = (const char *) sqlite3_column_text (s, 0);
    bool known = false;

    for (const struct catalog_migration *m = catalog_migrations; m->version; m++)
      known |= v && strcmp (m->dialect, DIALECT) == 0 && strcmp (m->version, v) == 0;
    if (!known)
      log_warn ("catalog: the database has migration %s, which this strata does not"
                " know: it was made by a newer version", v ? v : "?");
  }
  return r;
}

/* Make sure schema_migrations exists, then apply, in order, each sqlite
 * migration the binary carries and the database has not seen. */
static int
migrate (struct sqlite_catalog *sc)
{
  if (db_exec (sc, "CREATE TABLE IF NOT EXISTS schema_migrations ("
               " version TEXT NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL)", "") == -1)
    return -1;
  for (const struct catalog_migration *m = catalog_migrations; m->version; m++)
    if (strcmp (m->dialect, DIALECT) == 0 && migrate_one (sc, m) == -1)
      return -1;
  return migrate_check_unknown (sc);
}

/* Set a PRAGMA and read back its value, for PRAGMAs that return one. */
static int
pragma (struct sqlite_catalog *sc, const char *sql, const char *want)
{
  CLEANUP_FREE char *got = NULL;
  int f = db_text (sc, &got, sql, "");

  if (f == -1)
    return -1;
  if (want && (f == 0 || got == NULL || strcasecmp (got, want) != 0)) {
    error_set (ERR_INTERNAL, "catalog: \"%s\" gave \"%s\", not \"%s\"",
               sql, got ? got : "", want);
    return -1;
  }
  return 0;
}

/* Configure a new connection, then migrate the database unless told not
 * to. */
static int
sqlite_setup (struct sqlite_catalog *sc, bool do_migrate)
{
  sqlite3_extended_result_codes (sc->db, 1);
  if (sqlite3_busy_timeout (sc->db, BUSY_TIMEOUT_MS) != SQLITE_OK) {
    db_error (sc, sqlite3_errcode (sc->db), "busy_timeout");
    return -1;
  }
  /* WAL: readers never block the writer.  synchronous=FULL: a COMMIT is
   * on disk before we acknowledge anything to a client. */
  if (pragma (sc, "PRAGMA journal_mode = WAL", "wal") == -1 ||
      db_exec (sc, "PRAGMA synchronous = FULL", "") == -1 ||
      db_exec (sc, "PRAGMA foreign_keys = ON", "") == -1 ||
      pragma (sc, "PRAGMA foreign_keys", "1") == -1)
    return -1;
  return do_migrate ? migrate (sc) : 0;
}

/* Open (creating if need be) the database file at path, configure and
 * migrate it.  Returns the catalog (freed by catalog_close) or NULL. */
struct catalog *
catalog_sqlite_open (const char *path, bool do_migrate)
{
  struct sqlite_catalog *sc = calloc (1, sizeof *sc);
  int rc;

  if (sc == NULL) {
    oom_error ();
    return NULL;
  }
  sc->base.ops = &sqlite_ops;
  pthread_mutex_init (&sc->lock, NULL);
  /* NOMUTEX: sc->lock already serializes every use of the connection. */
  rc = sqlite3_open_v2 (path, &sc->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL);
  if (rc != SQLITE_OK) {
    error_set (ERR_UNAVAILABLE, "catalog: cannot open %s: %s", path,
               sc->db ? sqlite3_errmsg (sc->db) : sqlite3_errstr (rc));
    sqlite3_close (sc->db);
    pthread_mutex_destroy (&sc->lock);
    free (sc);
    return NULL;
  }
  if (sqlite_setup (sc, do_migrate) == -1) {
    error_prefix ("opening catalog %s", path);
    sqlite3_close (sc->db);
    pthread_mutex_destroy (&sc->lock);
    free (sc);
    return NULL;
  }
  return &sc->base;
}

/* Close the connection and free the catalog. */
static void
sqlite_close (struct catalog *cat)
{
  struct sqlite_catalog *sc = SC (cat);

  /* Every statement is finalized by the operation that made it, so close
   * cannot find one still open. */
  if (sqlite3_close (sc->db) != SQLITE_OK)
    log_warn ("catalog: close: %s", sqlite3_errmsg (sc->db));
  pthread_mutex_destroy (&sc->lock);
  free (sc);
}

/* ------------------------------------------------------------------------
 * Raw access for maintenance tools (catalog-int.h)
 */

static int
sqlite_raw_migrate (struct catalog *cat)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);

  return migrate (sc);
}

static int
sqlite_raw_exec (struct catalog *cat, const char *sql, const char *types, va_list ap)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);
  CLEANUP_STMT sqlite3_stmt *s = db_vprepare (sc, sql, types, ap);
  int r;

  if (s == NULL)
    return -1;
  while ((r = db_step (sc, s)) == 1)
    ;
  return r == -1 ? -1 : sqlite3_changes (sc->db);
}

static int
sqlite_raw_query (struct catalog *cat, const char *sql, const char *types, va_list ap,
                  catalog_row_fn fn, void *opaque)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);
  CLEANUP_STMT sqlite3_stmt *s = db_vprepare (sc, sql, types, ap);
  int r, n;

  if (s == NULL)
    return -1;
  n = sqlite3_column_count (s);
  while ((r = db_step (sc, s)) == 1) {
    char *vals[n > 0 ? n : 1];
    for (int i = 0; i < n; i++)
      vals[i] = (char *) sqlite3_column_text (s, i);
    if (fn (opaque, n, vals) == -1)
      return -1;
  }
  return r;
}

static int
sqlite_raw_tx (struct catalog *cat, enum catalog_tx what)
{
  struct sqlite_catalog *sc = SC (cat);
  SCOPED_LOCK (&sc->lock);

  switch (what) {
  case CATALOG_TX_BEGIN: return tx_begin (sc, true);
  case CATALOG_TX_COMMIT: return tx_commit (sc);
  default: tx_rollback (sc); return 0;
  }
}

static const struct catalog_ops sqlite_ops = {
  .name = "sqlite",
  .close = sqlite_close,
  .repo_insert = sqlite_repo_insert,
  .repo_get = sqlite_repo_get,
  .repo_list = sqlite_repo_list,
  .repo_delete = sqlite_repo_delete,
  .vm_put = sqlite_vm_put,
  .vm_get = sqlite_vm_get,
  .vm_list = sqlite_vm_list,
  .vm_delete = sqlite_vm_delete,
  .context_get = sqlite_context_get,
  .context_find = sqlite_context_find,
  .context_list = sqlite_context_list,
  .context_delete = sqlite_context_delete,
  .backup_plan = sqlite_backup_plan,
  .backup_insert = sqlite_backup_insert,
  .backup_get = sqlite_backup_get,
  .backup_list = sqlite_backup_list,
  .disk_complete = sqlite_disk_complete,
  .backup_end = sqlite_backup_end,
  .backup_delete = sqlite_backup_delete,
  .backup_finish = sqlite_backup_finish,
  .backup_delete_plan = sqlite_backup_delete_plan,
  .changeid_get = sqlite_changeid_get,
  .disk_files = sqlite_disk_files,
  .running_disks = sqlite_running_disks,
  .disk_lost = sqlite_disk_lost,
  .raw_exec = sqlite_raw_exec,
  .raw_query = sqlite_raw_query,
  .raw_tx = sqlite_raw_tx,
  .raw_migrate = sqlite_raw_migrate,
};
