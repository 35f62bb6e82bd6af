/* catalog/mariadb.c - MariaDB/MySQL backend of the catalog (libmariadb).
 *
 * The rules are those of catalog/sqlite.c, which this file follows
 * operation by operation: the same statements where the dialects agree,
 * the same checks in the same order, the same errors.  Only what MariaDB
 * does differently is explained here.
 *
 * CONNECTION
 *
 * A catalog is one connection and one mutex, held for each whole operation.
 * The session runs with sql_mode STRICT_ALL_TABLES, utf8mb4 and the
 * collation utf8mb4_nopad_bin (byte order, case and trailing blanks count,
 * as in SQLite), REPEATABLE READ, and CLIENT_FOUND_ROWS so that an UPDATE
 * reports the rows it matched, as sqlite3_changes does.  Statements are
 * server-side prepared statements: values are always bound, never spliced
 * into SQL.  "?N" in the SQL text below names parameter N, as in SQLite;
 * mysql_prep rewrites it into plain "?" and binds the value at each place.
 *
 * TRANSACTIONS AND LOCKS
 *
 * SQLite's BEGIN IMMEDIATE takes the database's one write lock before the
 * first read.  The same here: a write transaction starts by locking the one
 * row of catalog_lock (SELECT ... FOR UPDATE), so that the writers of every
 * hub sharing the database take turns, and what a transaction checks (no job
 * running, the parent still the latest, no dependents) still holds when it
 * writes.  The row is locked before the transaction's snapshot is taken
 * (the first plain read), so the checks see every earlier commit.  The
 * schema's keys are the backstop: the UNIQUE key on backup_jobs'
 * generated column running_context refuses a second running job of a
 * context even from a writer that skips the lock.  Reads of more than one
 * statement run in START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT.
 *
 * LOST CONNECTIONS, DEADLOCKS
 *
 * When the server goes away, or InnoDB picks the transaction as a deadlock
 * victim, before COMMIT was sent, the server has rolled the transaction
 * back: the operation reconnects if need be and runs once more from the
 * start (its out-parameters are only ever filled after COMMIT).  If it fails
 * again, or if the connection is lost while COMMIT is on its way (then
 * nobody knows whether it was applied), the operation fails with
 * ERR_UNAVAILABLE: a client never hears "done" for something that was not
 * committed, and InnoDB never applies half a transaction.
 *
 * FOREIGN KEYS
 *
 * InnoDB checks foreign keys row by row, not at the end of the statement,
 * and a cascade that deletes the disks of a chain in id order would trip
 * over parent_disk_id (which, as in SQLite, has no ON DELETE action).  So
 * deleting a context or a chain of jobs first deletes their disks newest
 * first (DELETE ... ORDER BY id DESC), then the jobs or the context, whose
 * cascades find nothing left in the way.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mysql.h>
#include <errmsg.h>
#include <mysqld_error.h>

#include "catalog/catalog-int.h"
#include "util/array.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

#define DIALECT "mysql"
#define LOCK_WAIT_S 10          /* innodb_lock_wait_timeout, like SQLite's busy timeout */
#define CONNECT_TIMEOUT_S 10
#define IO_TIMEOUT_S 60
#define MIGRATE_LOCK "strata-catalog-migrate"

struct mariadb_catalog {
  struct catalog base;          /* first: what the public functions see */
  MYSQL *db;                    /* NULL after a failed reconnect */
  pthread_mutex_t lock;         /* held for each whole operation */
  char *host, *user, *password, *dbname, *socket;
  unsigned port;
  bool in_tx;                   /* between START TRANSACTION and its end */
  bool retry;                   /* the last error allows running the transaction again */
  bool lost;                    /* ... and the connection is gone */
};

static const struct catalog_ops mariadb_ops;

#define MC(cat) ((struct mariadb_catalog *) (cat))

/* ------------------------------------------------------------------------
 * Errors
 */

/* True for the error numbers that mean the connection is gone. */
static bool
errno_lost (unsigned e)
{
  return e == CR_SERVER_GONE_ERROR || e == CR_SERVER_LOST || e == CR_CONNECTION_ERROR ||
         e == CR_CONN_HOST_ERROR || e == CR_SERVER_LOST_EXTENDED ||
         e == ER_CONNECTION_KILLED || e == ER_SERVER_SHUTDOWN || e == 4031 /* idle timeout */;
}

/* Record error number e with message msg as the thread's error, in the
 * category it calls for, and remember whether the transaction may run
 * again.  sql names the statement for internal errors. */
static void
db_error_num (struct mariadb_catalog *mc, unsigned e, const char *msg, const char *sql)
{
  mc->retry = false;
  mc->lost = false;
  switch (e) {
  case ER_DUP_ENTRY:
  case ER_DUP_KEY:
  case ER_ROW_IS_REFERENCED:
  case ER_ROW_IS_REFERENCED_2:
  case ER_NO_REFERENCED_ROW:
  case ER_NO_REFERENCED_ROW_2:
  case ER_BAD_NULL_ERROR:
  case ER_CONSTRAINT_FAILED:
  case ER_FOREIGN_DUPLICATE_KEY_WITH_CHILD_INFO:
  case ER_FOREIGN_DUPLICATE_KEY_WITHOUT_CHILD_INFO:
    error_set (ERR_CONFLICT, "catalog: %s", msg);
    break;
  case ER_LOCK_DEADLOCK:
    mc->retry = true;
    error_set (ERR_UNAVAILABLE, "catalog: %s", msg);
    break;
  case ER_LOCK_WAIT_TIMEOUT:
    error_set (ERR_UNAVAILABLE, "catalog: database is locked by another user: %s", msg);
    break;
  case ER_RECORD_FILE_FULL:
  case ER_DISK_FULL:
    error_set (ERR_NO_SPACE, "catalog: %s", msg);
    break;
  case ER_DATA_TOO_LONG:
    error_set (ERR_INVALID, "catalog: %s", msg);
    break;
  default:
    if (errno_lost (e)) {
      mc->retry = mc->lost = true;
      error_set (ERR_UNAVAILABLE, "catalog: connection to the MariaDB server lost: %s", msg);
    }
    else
      error_set (ERR_INTERNAL, "catalog: %s (in \"%.80s\")", msg, sql ? sql : "?");
    break;
  }
}

static void
db_error (struct mariadb_catalog *mc, const char *sql)
{
  db_error_num (mc, mysql_errno (mc->db), mysql_error (mc->db), sql);
}

static void
stmt_error (struct mariadb_catalog *mc, MYSQL_STMT *s, const char *sql)
{
  db_error_num (mc, mysql_stmt_errno (s), mysql_stmt_error (s), sql);
}

static void
oom_error (void)
{
  error_set_errno (ERR_INTERNAL, ENOMEM, "catalog");
}

/* ------------------------------------------------------------------------
 * Statements
 */

/* One prepared statement with its parameters and, after each fetch, the
 * current row's values as strings (NULL for SQL NULL). */
struct stmt {
  struct mariadb_catalog *mc;
  MYSQL_STMT *s;
  char *sql;                    /* as sent: "?N" rewritten to "?" */
  MYSQL_BIND *params;
  int64_t *ints;                /* integer values, one per place */
  my_bool *nulls;
  unsigned ncols;
  char **vals;                  /* the current row */
  bool executed, has_result;
};

static void
stmt_free_row (struct stmt *st)
{
  for (unsigned i = 0; st->vals && i < st->ncols; i++) {
    free (st->vals[i]);
    st->vals[i] = NULL;
  }
}

static void
stmt_close (struct stmt *st)
{
  if (st == NULL)
    return;
  stmt_free_row (st);
  if (st->s) {
    if (st->has_result)
      mysql_stmt_free_result (st->s);
    mysql_stmt_close (st->s);
  }
  free (st->vals);
  free (st->sql);
  free (st->params);
  free (st->ints);
  free (st->nulls);
  free (st);
}

static void
stmt_cleanup (struct stmt **st)
{
  stmt_close (*st);
}
#define CLEANUP_STMT __attribute__((cleanup (stmt_cleanup)))

/* One value of a parameter list, read from the va_list by type:
 *   s  const char *  (NULL binds NULL)
 *   e  const char *  (NULL binds '', for NOT NULL DEFAULT '' columns)
 *   i  int
 *   I  int64_t
 *   o  int64_t       (negative binds NULL: the "absent" of catalog.h) */
struct arg {
  char type;
  const char *s;
  int64_t v;
  bool null;
};

/* Prepare sql, rewriting "?N" (parameter N, 1-based) and "?" (the next
 * one) into "?", and bind the values in ap (one per character of types) at
 * each place.  Returns the statement, not yet executed, or NULL. */
static struct stmt *
stmt_prepare_v (struct mariadb_catalog *mc, const char *sql, const char *types, va_list ap)
{
  size_t nargs = strlen (types), nplaces = 0, next = 0, len = strlen (sql);
  struct arg args[16];
  size_t place_arg[64];
  struct stmt *st;
  char *out;
  bool quoted = false;

  if (mc->db == NULL) {
    error_set (ERR_UNAVAILABLE, "catalog: not connected to the MariaDB server");
    mc->retry = mc->lost = true;
    return NULL;
  }
  if (nargs > sizeof args / sizeof *args) {
    error_set (ERR_INTERNAL, "catalog: too many parameters");
    return NULL;
  }
  for (size_t i = 0; i < nargs; i++) {
    struct arg *a = &args[i];
    a->type = types[i];
    a->null = false;
    switch (types[i]) {
    case 's':
    case 'e':
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

  st = calloc (1, sizeof *st);
  if (st == NULL || (st->sql = out = malloc (len + 1)) == NULL) {
    free (st);
    oom_error ();
    return NULL;
  }
  st->mc = mc;
  for (const char *p = sql; *p; p++) {
    if (*p == '\'')
      quoted = !quoted;
    if (*p != '?' || quoted) {
      *out++ = *p;
      continue;
    }
    *out++ = '?';
    if (p[1] >= '1' && p[1] <= '9') {
      char *end;
      size_t n = strtoul (p + 1, &end, 10);
      place_arg[nplaces] = n - 1;
      p = end - 1;
    }
    else
      place_arg[nplaces] = next++;
    if (place_arg[nplaces] >= nargs || ++nplaces == sizeof place_arg / sizeof *place_arg) {
      error_set (ERR_INTERNAL, "catalog: statement parameters do not match (in \"%.80s\")",
                 sql);
      stmt_close (st);
      return NULL;
    }
  }
  *out = '\0';
  if (nplaces == 0 && nargs > 0) {
    error_set (ERR_INTERNAL, "catalog: statement has no parameters, %zu given (in \"%.80s\")",
               nargs, sql);
    stmt_close (st);
    return NULL;
  }

  st->s = mysql_stmt_init (mc->db);
  st->params = calloc (nplaces ? nplaces : 1, sizeof *st->params);
  st->ints = calloc (nplaces ? nplaces : 1, sizeof *st->ints);
  st->nulls = calloc (nplaces ? nplaces : 1, sizeof *st->nulls);
  if (st->s == NULL || st->params == NULL || st->ints == NULL || st->nulls == NULL) {
    stmt_close (st);
    oom_error ();
    return NULL;
  }
  if (mysql_stmt_prepare (st->s, st->sql, strlen (st->sql)) != 0) {
    stmt_error (mc, st->s, sql);
    stmt_close (st);
    return NULL;
  }
  if (mysql_stmt_param_count (st->s) != nplaces) {
    error_set (ERR_INTERNAL, "catalog: statement has %lu parameters, %zu places (in \"%.80s\")",
               mysql_stmt_param_count (st->s), nplaces, sql);
    stmt_close (st);
    return NULL;
  }
  for (size_t k = 0; k < nplaces; k++) {
    const struct arg *a = &args[place_arg[k]];
    MYSQL_BIND *b = &st->params[k];

    st->nulls[k] = a->null;
    b->is_null = &st->nulls[k];
    if (a->null)
      b->buffer_type = MYSQL_TYPE_NULL;
    else if (a->type == 's' || a->type == 'e') {
      b->buffer_type = MYSQL_TYPE_STRING;
      b->buffer = (void *) a->s;
      b->buffer_length = strlen (a->s);
    }
    else {
      st->ints[k] = a->v;
      b->buffer_type = MYSQL_TYPE_LONGLONG;
      b->buffer = &st->ints[k];
    }
  }
  /* The strings are bound by pointer: they must live until execution,
   * which db_step and db_exec do before returning to the caller's frame. */
  if (nplaces && mysql_stmt_bind_param (st->s, st->params) != 0) {
    stmt_error (mc, st->s, sql);
    stmt_close (st);
    return NULL;
  }
  return st;
}

/* Execute st and, when it returns rows, fetch them all to the client. */
static int
stmt_execute (struct stmt *st)
{
  MYSQL_RES *meta;

  st->executed = true;
  if (mysql_stmt_execute (st->s) != 0) {
    stmt_error (st->mc, st->s, st->sql);
    return -1;
  }
  meta = mysql_stmt_result_metadata (st->s);
  if (meta == NULL)
    return 0;
  st->ncols = mysql_num_fields (meta);
  mysql_free_result (meta);
  st->vals = calloc (st->ncols ? st->ncols : 1, sizeof *st->vals);
  if (st->vals == NULL) {
    oom_error ();
    return -1;
  }
  if (mysql_stmt_store_result (st->s) != 0) {
    stmt_error (st->mc, st->s, st->sql);
    return -1;
  }
  st->has_result = true;
  return 0;
}

/* Fetch the next row into st->vals: 1 for a row, 0 when done, -1 on error.
 * Each column is fetched as a string of its own length. */
static int
stmt_fetch (struct stmt *st)
{
  MYSQL_BIND b[st->ncols ? st->ncols : 1];
  unsigned long lengths[st->ncols ? st->ncols : 1];
  my_bool nulls[st->ncols ? st->ncols : 1];
  int rc;

  stmt_free_row (st);
  memset (b, 0, sizeof b);
  for (unsigned i = 0; i < st->ncols; i++) {
    b[i].buffer_type = MYSQL_TYPE_STRING;
    b[i].length = &lengths[i];
    b[i].is_null = &nulls[i];
  }
  if (mysql_stmt_bind_result (st->s, b) != 0) {
    stmt_error (st->mc, st->s, st->sql);
    return -1;
  }
  rc = mysql_stmt_fetch (st->s);
  if (rc == MYSQL_NO_DATA)
    return 0;
  if (rc == 1) {
    stmt_error (st->mc, st->s, st->sql);
    return -1;
  }
  for (unsigned i = 0; i < st->ncols; i++) {
    MYSQL_BIND one = { 0 };
    char *v;

    if (nulls[i])
      continue;
    if ((v = malloc (lengths[i] + 1)) == NULL) {
      oom_error ();
      return -1;
    }
    one.buffer_type = MYSQL_TYPE_STRING;
    one.buffer = v;
    one.buffer_length = lengths[i] + 1;
    if (lengths[i] > 0 && mysql_stmt_fetch_column (st->s, &one, i, 0) != 0) {
      free (v);
      stmt_error (st->mc, st->s, st->sql);
      return -1;
    }
    v[lengths[i]] = '\0';
    st->vals[i] = v;
  }
  return 1;
}

/* Prepare sql and bind its parameters; the caller steps and closes it. */
static struct stmt *
db_prepare (struct mariadb_catalog *mc, const char *sql, const char *types, ...)
{
  struct stmt *st;
  va_list ap;

  va_start (ap, types);
  st = stmt_prepare_v (mc, sql, types, ap);
  va_end (ap);
  return st;
}

/* Step st once (executing it the first time): 1 for a row, 0 when done,
 * -1 on error. */
static int
db_step (struct stmt *st)
{
  if (!st->executed && stmt_execute (st) == -1)
    return -1;
  if (!st->has_result)
    return 0;
  return stmt_fetch (st);
}

/* Run a statement that returns no rows we want: the number of rows it
 * matched, or -1. */
static int
db_exec (struct mariadb_catalog *mc, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct stmt *st = NULL;
  va_list ap;

  va_start (ap, types);
  st = stmt_prepare_v (mc, sql, types, ap);
  va_end (ap);
  if (st == NULL || stmt_execute (st) == -1)
    return -1;
  return (int) mysql_stmt_affected_rows (st->s);
}

/* Run a statement without preparing it (transaction control, SET). */
static int
db_query (struct mariadb_catalog *mc, const char *sql)
{
  if (mc->db == NULL) {
    error_set (ERR_UNAVAILABLE, "catalog: not connected to the MariaDB server");
    mc->retry = mc->lost = true;
    return -1;
  }
  if (mysql_real_query (mc->db, sql, strlen (sql)) != 0) {
    db_error (mc, sql);
    return -1;
  }
  return 0;
}

/* One integer: 1 and *out when there is a row (NULL reads as -1), 0 when
 * none, -1 on error. */
static int
db_int (struct mariadb_catalog *mc, int64_t *out, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct stmt *st = NULL;
  va_list ap;
  int r;

  va_start (ap, types);
  st = stmt_prepare_v (mc, sql, types, ap);
  va_end (ap);
  if (st == NULL || (r = db_step (st)) == -1)
    return -1;
  if (r == 1)
    *out = st->vals[0] ? strtoll (st->vals[0], NULL, 10) : -1;
  return r;
}

/* One string: 1 and *out (malloc'd; NULL for SQL NULL) when there is a
 * row, 0 when none, -1 on error. */
static int
db_text (struct mariadb_catalog *mc, char **out, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct stmt *st = NULL;
  va_list ap;
  int r;

  va_start (ap, types);
  st = stmt_prepare_v (mc, sql, types, ap);
  va_end (ap);
  if (st == NULL || (r = db_step (st)) == -1)
    return -1;
  if (r == 1) {
    *out = st->vals[0];
    st->vals[0] = NULL;
  }
  return r;
}

/* Reading the columns of a row; a failed copy sets oom. */
struct row {
  struct stmt *s;
  bool oom;
};

static char *
row_text (struct row *r, int col)
{
  char *v = r->s->vals[col];

  r->s->vals[col] = NULL;       /* handed over */
  return v;
}

static int64_t
row_int (struct row *r, int col)
{
  const char *v = r->s->vals[col];

  return v ? strtoll (v, NULL, 10) : -1;
}

typedef int (*row_reader) (struct mariadb_catalog *mc, struct row *r, void *rec);

/* Step through s, reading every row into a new array of elem-sized records.
 * The statement's rows are all on the client (stmt_execute stored them), so
 * a reader may run queries of its own. */
static int
collect_rows (struct mariadb_catalog *mc, struct stmt *s, size_t elem, row_reader read,
              void (*free_array) (void *a, size_t n), void **out, size_t *n)
{
  void *a = NULL;
  size_t count = 0, cap = 0;
  int r;

  while ((r = db_step (s)) == 1) {
    struct row row = { s, false };
    void *o = array_push (&a, count, &cap, elem);
    if (o == NULL || read (mc, &row, o) == -1) {
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
 * Connection and transactions
 */

/* Connect (again) with the catalog's parameters and set up the session. */
static int
db_connect (struct mariadb_catalog *mc)
{
  unsigned timeout = CONNECT_TIMEOUT_S, io = IO_TIMEOUT_S;
  char set[256];

  if (mc->db)
    mysql_close (mc->db);
  mc->in_tx = false;
  mc->db = mysql_init (NULL);
  if (mc->db == NULL) {
    oom_error ();
    return -1;
  }
  mysql_options (mc->db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
  mysql_options (mc->db, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
  mysql_options (mc->db, MYSQL_OPT_READ_TIMEOUT, &io);
  mysql_options (mc->db, MYSQL_OPT_WRITE_TIMEOUT, &io);
  if (mysql_real_connect (mc->db, mc->host, mc->user, mc->password, mc->dbname, mc->port,
                          mc->socket, CLIENT_FOUND_ROWS) == NULL) {
    /* The message names user and host, never the password. */
    error_set (ERR_UNAVAILABLE, "catalog: cannot connect to MariaDB database %s as %s: %s",
               mc->dbname, mc->user ? mc->user : "(default user)", mysql_error (mc->db));
    mc->retry = false;
    mc->lost = true;
    mysql_close (mc->db);
    mc->db = NULL;
    return -1;
  }
  snprintf (set, sizeof set,
            "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,"
            "ERROR_FOR_DIVISION_BY_ZERO', collation_connection = 'utf8mb4_nopad_bin',"
            " innodb_lock_wait_timeout = %d, autocommit = 1", LOCK_WAIT_S);
  if (db_query (mc, set) == -1 ||
      db_query (mc, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ") == -1) {
    error_prefix ("setting up the MariaDB session");
    mysql_close (mc->db);
    mc->db = NULL;
    return -1;
  }
  return 0;
}

/* Begin a transaction.  A writer locks catalog_lock's row first (see the
 * top of the file); a reader takes a consistent snapshot. */
static int
tx_begin (struct mariadb_catalog *mc, bool write)
{
  int64_t one;
  int f;

  if (mc->db == NULL && db_connect (mc) == -1) {
    mc->retry = false;
    return -1;
  }
  if (write) {
    if (db_query (mc, "START TRANSACTION READ WRITE") == -1)
      return -1;
    mc->in_tx = true;
    f = db_int (mc, &one, "SELECT id FROM catalog_lock WHERE id = 1 FOR UPDATE", "");
    if (f == 0)
      error_set (ERR_INTERNAL, "catalog: the row of catalog_lock is missing");
    if (f != 1)
      return -1;
    return 0;
  }
  if (db_query (mc, "START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT") == -1)
    return -1;
  mc->in_tx = true;
  return 0;
}

/* Roll back after a failure, keeping the error that caused it. */
static void
tx_rollback (struct mariadb_catalog *mc)
{
  if (!mc->in_tx || mc->db == NULL)
    return;
  mc->in_tx = false;
  if (mysql_real_query (mc->db, "ROLLBACK", 8) != 0 && !errno_lost (mysql_errno (mc->db)))
    log_warn ("catalog: ROLLBACK failed: %s", mysql_error (mc->db));
}

/* Commit.  A connection lost now leaves the outcome unknown: never retried,
 * never reported as success. */
static int
tx_commit (struct mariadb_catalog *mc)
{
  mc->in_tx = false;
  if (mysql_real_query (mc->db, "COMMIT", 6) != 0) {
    unsigned e = mysql_errno (mc->db);
    if (errno_lost (e)) {
      error_set (ERR_UNAVAILABLE, "catalog: connection to the MariaDB server lost during"
                 " COMMIT; the change may or may not have been applied: %s",
                 mysql_error (mc->db));
      mc->retry = false;
      mc->lost = true;
      return -1;
    }
    db_error (mc, "COMMIT");
    mc->retry = false;
    mc->in_tx = true;
    tx_rollback (mc);
    return -1;
  }
  return 0;
}

static int
tx_end (struct mariadb_catalog *mc, int r)
{
  if (r == -1) {
    tx_rollback (mc);
    return -1;
  }
  return tx_commit (mc);
}

/* After a failed attempt: may the transaction run again?  Once, and only
 * when the failure rolled everything back before COMMIT (a lost connection,
 * a deadlock); reconnects when the connection is gone. */
static bool
tx_again (struct mariadb_catalog *mc, int attempt)
{
  if (attempt > 0 || !mc->retry)
    return false;
  mc->retry = false;
  if (mc->lost || mc->db == NULL) {
    log_warn ("%s; reconnecting and trying once more", error_message ());
    if (db_connect (mc) == -1)
      return false;
  }
  else
    log_warn ("%s; trying once more", error_message ());
  mc->lost = false;
  return true;
}

/* Run body (an expression that returns 0 or -1) as one transaction, again
 * once if tx_again allows; cleanup (a statement) undoes what a failed
 * attempt left in the caller's locals.  The value is 0 or -1. */
#define RUN_TX(mc, write, body, cleanup)                                \
  ({                                                                    \
    int r_;                                                             \
    for (int attempt_ = 0; ; attempt_++) {                              \
      (mc)->retry = false;                                              \
      r_ = tx_begin ((mc), (write)) == -1 ? (tx_rollback (mc), -1)      \
                                          : tx_end ((mc), (body));      \
      if (r_ == 0 || !tx_again ((mc), attempt_))                        \
        break;                                                          \
      cleanup;                                                          \
    }                                                                   \
    r_;                                                                 \
  })

/* ------------------------------------------------------------------------
 * Rows
 */

#define REPO_SELECT \
  "SELECT id, name, type, path, created_at FROM backup_repositories"

static int
repo_read (struct row *r, struct cat_repository *o)
{
  o->id = row_text (r, 0);
  o->name = row_text (r, 1);
  o->type = row_text (r, 2);
  o->path = row_text (r, 3);
  o->created_at = row_text (r, 4);
  return 0;
}

#define CONTEXT_SELECT \
  "SELECT context_id, vm_name, repository_id, vmware_vm_id, vm_path," \
  " vcenter_host, datacenter, total_backups_run, successful_backups," \
  " failed_backups, last_backup_id, last_backup_type, last_backup_at," \
  " created_at, updated_at FROM vm_backup_contexts"

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
  return 0;
}

#define DISK_SELECT \
  "SELECT d.id, d.backup_job_id, d.vm_backup_context_id, d.disk_index," \
  " d.vmware_disk_key, d.unit_number, d.size_bytes, d.backup_type," \
  " d.disk_change_id, d.qcow2_path, d.parent_disk_id, p.backup_job_id," \
  " p.disk_change_id, d.nbd_export, d.bytes_transferred, d.status, d.error," \
  " d.created_at, d.completed_at, d.full_reason"
#define DISK_NCOLUMNS 20
#define DISK_FROM \
  " FROM backup_disks d LEFT JOIN backup_disks p ON p.id = d.parent_disk_id"

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
  return 0;
}

/* Read every row of s (a DISK_SELECT, with the repository path as one more
 * column when paths is not NULL) into a new array. */
static int
disks_read_all (struct stmt *s, struct cat_disk **out, size_t *n, char ***paths)
{
  struct cat_disk *a = NULL;
  char **p = NULL;
  size_t count = 0, cap = 0, pcap = 0;
  int r;

  while ((r = db_step (s)) == 1) {
    struct row row = { s, false };
    struct cat_disk *d = array_push ((void **) &a, count, &cap, sizeof *a);
    char **path;

    if (d == NULL)
      goto fail;
    if (paths) {
      if ((path = array_push ((void **) &p, count, &pcap, sizeof *p)) == NULL)
        goto fail;
      *path = row_text (&row, DISK_NCOLUMNS);
    }
    disk_read (&row, d);
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

static int
disks_query (struct mariadb_catalog *mc, const char *sql, const char *param,
             struct cat_disk **out, size_t *n)
{
  CLEANUP_STMT struct stmt *s = db_prepare (mc, sql, "s", param);

  if (s == NULL)
    return -1;
  return disks_read_all (s, out, n, NULL);
}

#define JOB_SELECT \
  "SELECT j.id, j.vm_backup_context_id, j.vm_name, j.repository_id," \
  " j.backup_type, j.status, j.error, j.created_at, j.completed_at, j.driver" \
  " FROM backup_jobs j"

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
  return 0;
}

static int
job_load_disks (struct mariadb_catalog *mc, struct cat_job *job)
{
  return disks_query (mc, DISK_SELECT DISK_FROM
                      " WHERE d.backup_job_id = ? ORDER BY d.disk_index",
                      job->id, &job->disks, &job->n_disks);
}

/* Load one job with its disks: 1 found, 0 not, -1 error. */
static int
job_load (struct mariadb_catalog *mc, const char *id, struct cat_job *out)
{
  struct cat_job j = { 0 };
  int r;

  {
    CLEANUP_STMT struct stmt *s = db_prepare (mc, JOB_SELECT " WHERE j.id = ?", "s", id);
    struct row row = { s, false };

    if (s == NULL || (r = db_step (s)) == -1)
      return -1;
    if (r == 0)
      return 0;
    job_read (&row, &j);
  }
  if (job_load_disks (mc, &j) == -1) {
    cat_job_clear (&j);
    return -1;
  }
  *out = j;
  return 1;
}

/* The latest completed disk of a context and disk index (see sqlite.c). */
#define LATEST_WHERE \
  " WHERE d.vm_backup_context_id = ?1 AND d.disk_index = ?2" \
  " AND d.status = 'completed'" \
  " AND EXISTS (SELECT 1 FROM backup_jobs lj" \
  "             WHERE lj.id = d.backup_job_id AND lj.status = 'completed')" \
  " ORDER BY d.id DESC LIMIT 1"

static int
latest_disk (struct mariadb_catalog *mc, const char *ctx, int disk_index,
             struct cat_disk *out)
{
  CLEANUP_STMT struct stmt *s =
    db_prepare (mc, DISK_SELECT DISK_FROM LATEST_WHERE, "si", ctx, disk_index);
  struct row row = { s, false };
  int r;

  if (s == NULL || (r = db_step (s)) == -1)
    return -1;
  if (r == 1)
    disk_read (&row, out);
  return r;
}

/* If last_backup_id no longer names a completed job, point last_backup_*
 * at the newest completed job that remains, or at nothing.  (SQLite does
 * this in one UPDATE with a row-value subquery, which MariaDB lacks.) */
static int
context_refresh_last (struct mariadb_catalog *mc, const char *ctx, const char *now)
{
  CLEANUP_STMT struct stmt *s = NULL;
  int64_t stale;
  int f;

  f = db_int (mc, &stale, "SELECT 1 FROM vm_backup_contexts c"
              " WHERE c.context_id = ? AND c.last_backup_id IS NOT NULL"
              " AND NOT EXISTS (SELECT 1 FROM backup_jobs j"
              "                 WHERE j.id = c.last_backup_id AND j.status = 'completed')",
              "s", ctx);
  if (f != 1)
    return f;
  s = db_prepare (mc, "SELECT j.id, j.backup_type, j.completed_at FROM backup_jobs j"
                  " WHERE j.vm_backup_context_id = ? AND j.status = 'completed'"
                  " ORDER BY (SELECT max(d.id) FROM backup_disks d"
                  "           WHERE d.backup_job_id = j.id) DESC,"
                  " j.created_at DESC, j.id DESC LIMIT 1", "s", ctx);
  if (s == NULL || (f = db_step (s)) == -1)
    return -1;
  return db_exec (mc, "UPDATE vm_backup_contexts SET last_backup_id = ?,"
                  " last_backup_type = ?, last_backup_at = ?, updated_at = ?"
                  " WHERE context_id = ?", "sssss",
                  f == 1 ? s->vals[0] : NULL, f == 1 ? s->vals[1] : NULL,
                  f == 1 ? s->vals[2] : NULL, now, ctx) == -1 ? -1 : 0;
}

/* ------------------------------------------------------------------------
 * Repositories
 */

static int
repo_insert_tx (struct mariadb_catalog *mc, const struct cat_repository *r, const char *now)
{
  CLEANUP_FREE char *other = NULL;
  int64_t one;
  int f;

  if ((f = db_int (mc, &one, "SELECT 1 FROM backup_repositories WHERE id = ?",
                   "s", r->id)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "repository %s already exists", r->id);
    return -1;
  }
  if ((f = db_text (mc, &other, "SELECT id FROM backup_repositories WHERE path = ?",
                    "s", r->path)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "path %s is already used by repository %s",
                 r->path, other);
    return -1;
  }
  if (db_exec (mc, "INSERT INTO backup_repositories (id, name, type, path, created_at)"
               " VALUES (?, ?, ?, ?, ?)", "sssss",
               r->id, r->name, r->type, r->path, r->created_at ? r->created_at : now) == -1) {
    error_prefix ("adding repository %s", r->id);
    return -1;
  }
  return 0;
}

static int
mariadb_repo_insert (struct catalog *cat, const struct cat_repository *r)
{
  struct mariadb_catalog *mc = MC (cat);
  char now[32];

  id_now (now, sizeof now);
  SCOPED_LOCK (&mc->lock);
  return RUN_TX (mc, true, repo_insert_tx (mc, r, now), (void) 0);
}

static int
repo_get_tx (struct mariadb_catalog *mc, const char *id, struct cat_repository *out)
{
  CLEANUP_STMT struct stmt *s = db_prepare (mc, REPO_SELECT " WHERE id = ?", "s", id);
  struct row row = { s, false };
  int r;

  if (s == NULL || (r = db_step (s)) == -1)
    return -1;
  if (r == 0) {
    error_set (ERR_NOT_FOUND, "repository %s not found", id);
    return -1;
  }
  return repo_read (&row, out);
}

static int
mariadb_repo_get (struct catalog *cat, const char *id, struct cat_repository *out)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_repository r = { 0 };
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, false, repo_get_tx (mc, id, &r), cat_repository_clear (&r)) == -1) {
    cat_repository_clear (&r);
    return -1;
  }
  *out = r;
  return 0;
}

static int
repo_reader (struct mariadb_catalog *mc, struct row *r, void *rec)
{
  return repo_read (r, rec);
}

static void
repos_free (void *a, size_t n)
{
  cat_repository_free_array (a, n);
}

static int
repo_list_tx (struct mariadb_catalog *mc, struct cat_repository **out, size_t *n)
{
  CLEANUP_STMT struct stmt *s = db_prepare (mc, REPO_SELECT " ORDER BY created_at, id", "");

  if (s == NULL)
    return -1;
  return collect_rows (mc, s, sizeof **out, repo_reader, repos_free, (void **) out, n);
}

static int
mariadb_repo_list (struct catalog *cat, struct cat_repository **out, size_t *n)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_repository *a = NULL;
  size_t count = 0;
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, false, repo_list_tx (mc, &a, &count),
              (cat_repository_free_array (a, count), a = NULL, count = 0)) == -1) {
    cat_repository_free_array (a, count);
    return -1;
  }
  *out = a;
  *n = count;
  return 0;
}

static int
repo_delete_tx (struct mariadb_catalog *mc, const char *id)
{
  int64_t count;
  int f;

  if ((f = db_int (mc, &count, "SELECT 1 FROM backup_repositories WHERE id = ?",
                   "s", id)) != 1) {
    if (f == 0)
      error_set (ERR_NOT_FOUND, "repository %s not found", id);
    return -1;
  }
  if (db_int (mc, &count, "SELECT count(*) FROM vm_backup_contexts WHERE repository_id = ?",
              "s", id) == -1)
    return -1;
  if (count > 0) {
    error_set (ERR_CONFLICT, "repository %s holds the backups of %" PRId64
               " VM%s; delete those first", id, count, count == 1 ? "" : "s");
    return -1;
  }
  if (db_exec (mc, "DELETE FROM backup_repositories WHERE id = ?", "s", id) == -1) {
    error_prefix ("deleting repository %s", id);
    return -1;
  }
  return 0;
}

static int
mariadb_repo_delete (struct catalog *cat, const char *id)
{
  struct mariadb_catalog *mc = MC (cat);
  SCOPED_LOCK (&mc->lock);

  return RUN_TX (mc, true, repo_delete_tx (mc, id), (void) 0);
}

/* ------------------------------------------------------------------------
 * VM inventory
 */

#define VM_SELECT \
  "SELECT vm_name, vmware_vm_id, vm_path, vcenter_host, datacenter," \
  " created_at, updated_at FROM vms"

static int
vm_load_disks (struct mariadb_catalog *mc, struct cat_vm *vm)
{
  CLEANUP_STMT struct stmt *s =
    db_prepare (mc, "SELECT disk_index, size_bytes, vmware_disk_key, unit_number, source"
                " FROM vm_disks WHERE vm_name = ? ORDER BY disk_index", "s", vm->vm_name);
  size_t cap = 0;
  int r;

  if (s == NULL)
    return -1;
  while ((r = db_step (s)) == 1) {
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
  }
  return r;
}

static int
vm_read (struct mariadb_catalog *mc, struct row *r, struct cat_vm *o)
{
  o->vm_name = row_text (r, 0);
  o->vmware_vm_id = row_text (r, 1);
  o->vm_path = row_text (r, 2);
  o->vcenter_host = row_text (r, 3);
  o->datacenter = row_text (r, 4);
  o->created_at = row_text (r, 5);
  o->updated_at = row_text (r, 6);
  if (vm_load_disks (mc, o) == -1) {
    cat_vm_clear (o);
    return -1;
  }
  return 0;
}

static int
vm_put_tx (struct mariadb_catalog *mc, const struct cat_vm *vm, const char *now,
           bool *created)
{
  int64_t one;
  int f;

  if ((f = db_int (mc, &one, "SELECT 1 FROM vms WHERE vm_name = ?", "s", vm->vm_name)) == -1)
    return -1;
  *created = f == 0;
  if (*created)
    f = db_exec (mc, "INSERT INTO vms (vm_name, vmware_vm_id, vm_path, vcenter_host,"
                 " datacenter, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 "seeeess", vm->vm_name, vm->vmware_vm_id, vm->vm_path,
                 vm->vcenter_host, vm->datacenter, now, now);
  else
    f = db_exec (mc, "UPDATE vms SET vmware_vm_id = ?, vm_path = ?, vcenter_host = ?,"
                 " datacenter = ?, updated_at = ? WHERE vm_name = ?",
                 "eeeess", vm->vmware_vm_id, vm->vm_path, vm->vcenter_host,
                 vm->datacenter, now, vm->vm_name);
  if (f == -1 ||
      db_exec (mc, "DELETE FROM vm_disks WHERE vm_name = ?", "s", vm->vm_name) == -1)
    return -1;
  for (size_t i = 0; i < vm->n_disks; i++) {
    const struct cat_vm_disk *d = &vm->disks[i];
    if (db_exec (mc, "INSERT INTO vm_disks (vm_name, disk_index, size_bytes,"
                 " vmware_disk_key, unit_number, source) VALUES (?, ?, ?, ?, ?, ?)",
                 "siIoos", vm->vm_name, d->disk_index, d->size_bytes,
                 d->vmware_disk_key, d->unit_number, d->source) == -1) {
      error_prefix ("VM %s, disk %d", vm->vm_name, d->disk_index);
      return -1;
    }
  }
  return 0;
}

static int
mariadb_vm_put (struct catalog *cat, const struct cat_vm *vm, bool *created)
{
  struct mariadb_catalog *mc = MC (cat);
  bool c = false;
  char now[32];

  id_now (now, sizeof now);
  SCOPED_LOCK (&mc->lock);
  if (RUN_TX (mc, true, vm_put_tx (mc, vm, now, &c), (void) 0) == -1)
    return -1;
  if (created)
    *created = c;
  return 0;
}

static int
vm_get_tx (struct mariadb_catalog *mc, const char *vm_name, struct cat_vm *out)
{
  CLEANUP_STMT struct stmt *s = db_prepare (mc, VM_SELECT " WHERE vm_name = ?", "s", vm_name);
  struct row row = { s, false };
  int r;

  if (s == NULL || (r = db_step (s)) == -1)
    return -1;
  if (r == 0) {
    error_set (ERR_NOT_FOUND, "VM %s not found", vm_name);
    return -1;
  }
  return vm_read (mc, &row, out);
}

static int
mariadb_vm_get (struct catalog *cat, const char *vm_name, struct cat_vm *out)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_vm vm = { 0 };
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, false, vm_get_tx (mc, vm_name, &vm), cat_vm_clear (&vm)) == -1) {
    cat_vm_clear (&vm);
    return -1;
  }
  *out = vm;
  return 0;
}

static int
vm_reader (struct mariadb_catalog *mc, struct row *r, void *rec)
{
  return vm_read (mc, r, rec);
}

static void
vms_free (void *a, size_t n)
{
  cat_vm_free_array (a, n);
}

static int
vm_list_tx (struct mariadb_catalog *mc, struct cat_vm **out, size_t *n)
{
  CLEANUP_STMT struct stmt *s = db_prepare (mc, VM_SELECT " ORDER BY vm_name", "");

  if (s == NULL)
    return -1;
  return collect_rows (mc, s, sizeof **out, vm_reader, vms_free, (void **) out, n);
}

static int
mariadb_vm_list (struct catalog *cat, struct cat_vm **out, size_t *n)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_vm *a = NULL;
  size_t count = 0;
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, false, vm_list_tx (mc, &a, &count),
              (cat_vm_free_array (a, count), a = NULL, count = 0)) == -1) {
    cat_vm_free_array (a, count);
    return -1;
  }
  *out = a;
  *n = count;
  return 0;
}

static int
vm_delete_tx (struct mariadb_catalog *mc, const char *vm_name)
{
  int r = db_exec (mc, "DELETE FROM vms WHERE vm_name = ?", "s", vm_name);

  if (r == 0)
    error_set (ERR_NOT_FOUND, "VM %s not found", vm_name);
  return r <= 0 ? -1 : 0;
}

static int
mariadb_vm_delete (struct catalog *cat, const char *vm_name)
{
  struct mariadb_catalog *mc = MC (cat);
  SCOPED_LOCK (&mc->lock);

  return RUN_TX (mc, true, vm_delete_tx (mc, vm_name), (void) 0);
}

/* ------------------------------------------------------------------------
 * Contexts
 */

static int
context_query_one (struct mariadb_catalog *mc, const char *sql, const char *types,
                   const char *a, const char *b, struct cat_context *out)
{
  CLEANUP_STMT struct stmt *s = db_prepare (mc, sql, types, a, b);
  struct row row = { s, false };
  int r;

  if (s == NULL || (r = db_step (s)) == -1)
    return -1;
  if (r == 1)
    context_read (&row, out);
  return r;
}

static int
context_get_tx (struct mariadb_catalog *mc, const char *id, struct cat_context *out)
{
  int r = context_query_one (mc, CONTEXT_SELECT " WHERE context_id = ?", "s", id, NULL, out);

  if (r == 0)
    error_set (ERR_NOT_FOUND, "backup context %s not found", id);
  return r == 1 ? 0 : -1;
}

static int
mariadb_context_get (struct catalog *cat, const char *id, struct cat_context *out)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_context c = { 0 };
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, false, context_get_tx (mc, id, &c), cat_context_clear (&c)) == -1) {
    cat_context_clear (&c);
    return -1;
  }
  *out = c;
  return 0;
}

static int
context_find_tx (struct mariadb_catalog *mc, const char *vm_name, const char *repository_id,
                 struct cat_context *out)
{
  int r = context_query_one (mc, CONTEXT_SELECT " WHERE vm_name = ? AND repository_id = ?",
                             "ss", vm_name, repository_id, out);

  if (r == 0)
    error_set (ERR_NOT_FOUND, "VM %s has no backups in repository %s",
               vm_name, repository_id);
  return r == 1 ? 0 : -1;
}

static int
mariadb_context_find (struct catalog *cat, const char *vm_name, const char *repository_id,
                      struct cat_context *out)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_context c = { 0 };
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, false, context_find_tx (mc, vm_name, repository_id, &c),
              cat_context_clear (&c)) == -1) {
    cat_context_clear (&c);
    return -1;
  }
  *out = c;
  return 0;
}

static int
context_reader (struct mariadb_catalog *mc, struct row *r, void *rec)
{
  return context_read (r, rec);
}

static void
contexts_free (void *a, size_t n)
{
  cat_context_free_array (a, n);
}

static int
context_list_tx (struct mariadb_catalog *mc, const char *vm_name, struct cat_context **out,
                 size_t *n)
{
  CLEANUP_STMT struct stmt *s =
    db_prepare (mc, CONTEXT_SELECT " WHERE ?1 IS NULL OR vm_name = ?1"
                " ORDER BY vm_name, repository_id", "s", vm_name);

  if (s == NULL)
    return -1;
  return collect_rows (mc, s, sizeof **out, context_reader, contexts_free,
                       (void **) out, n);
}

static int
mariadb_context_list (struct catalog *cat, const char *vm_name, struct cat_context **out,
                      size_t *n)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_context *a = NULL;
  size_t count = 0;
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, false, context_list_tx (mc, vm_name, &a, &count),
              (cat_context_free_array (a, count), a = NULL, count = 0)) == -1) {
    cat_context_free_array (a, count);
    return -1;
  }
  *out = a;
  *n = count;
  return 0;
}

/* Delete a context after collecting its disk rows: its disks newest first
 * (see FOREIGN KEYS at the top), then the context, whose cascade takes the
 * jobs. */
static int
context_delete_tx (struct mariadb_catalog *mc, const char *id, bool force,
                   struct cat_disk **disks, size_t *n)
{
  CLEANUP_FREE char *running = NULL;
  int64_t one;
  int f;

  if ((f = db_int (mc, &one, "SELECT 1 FROM vm_backup_contexts WHERE context_id = ?",
                   "s", id)) != 1) {
    if (f == 0)
      error_set (ERR_NOT_FOUND, "backup context %s not found", id);
    return -1;
  }
  if (!force) {
    f = db_text (mc, &running, "SELECT id FROM backup_jobs"
                 " WHERE vm_backup_context_id = ? AND status IN ('running', 'finishing')", "s", id);
    if (f == -1)
      return -1;
    if (f == 1) {
      error_set (ERR_CONFLICT, "backup %s of context %s is running", running, id);
      return -1;
    }
  }
  if (disks_query (mc, DISK_SELECT DISK_FROM " WHERE d.vm_backup_context_id = ?"
                   " ORDER BY d.id", id, disks, n) == -1)
    return -1;
  if (db_exec (mc, "DELETE FROM backup_disks WHERE vm_backup_context_id = ?"
               " ORDER BY id DESC", "s", id) == -1 ||
      db_exec (mc, "DELETE FROM vm_backup_contexts WHERE context_id = ?", "s", id) == -1) {
    error_prefix ("deleting backup context %s", id);
    return -1;
  }
  return 0;
}

static int
mariadb_context_delete (struct catalog *cat, const char *id, bool force,
                        struct cat_disk **disks, size_t *n_disks)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_disk *a = NULL;
  size_t n = 0;
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, true, context_delete_tx (mc, id, force, &a, &n),
              (cat_disk_free_array (a, n), a = NULL, n = 0)) == -1) {
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

static int
backup_plan_tx (struct mariadb_catalog *mc, const char *vm_name, const char *repository_id,
                size_t n, const int *disk_indexes, struct cat_disk *parents,
                bool *running)
{
  CLEANUP_FREE char *ctx = NULL;
  int64_t one;
  int f;

  f = db_text (mc, &ctx, "SELECT context_id FROM vm_backup_contexts"
               " WHERE vm_name = ? AND repository_id = ?", "ss", vm_name, repository_id);
  if (f != 1)
    return f;
  f = db_int (mc, &one, "SELECT 1 FROM backup_jobs"
              " WHERE vm_backup_context_id = ? AND status IN ('running', 'finishing')", "s", ctx);
  if (f == -1)
    return -1;
  *running = f == 1;
  for (size_t i = 0; i < n; i++)
    if (latest_disk (mc, ctx, disk_indexes[i], &parents[i]) == -1)
      return -1;
  return 0;
}

static int
mariadb_backup_plan (struct catalog *cat, const char *vm_name, const char *repository_id,
                     size_t n, const int *disk_indexes, struct cat_disk *parents,
                     bool *running)
{
  struct mariadb_catalog *mc = MC (cat);
  CLEANUP_FREE struct cat_disk *tmp = calloc (n ? n : 1, sizeof *tmp);
  bool run = false;
  SCOPED_LOCK (&mc->lock);

  if (tmp == NULL) {
    oom_error ();
    return -1;
  }
#define CLEAR_TMP for (size_t i = 0; i < n; i++) cat_disk_clear (&tmp[i])
  if (RUN_TX (mc, false, backup_plan_tx (mc, vm_name, repository_id, n, disk_indexes,
                                         tmp, &run), ({ CLEAR_TMP; run = false; })) == -1) {
    CLEAR_TMP;
    return -1;
  }
#undef CLEAR_TMP
  memcpy (parents, tmp, n * sizeof *tmp);
  *running = run;
  return 0;
}

static bool
backup_type_valid (const char *t)
{
  return t && (strcmp (t, "full") == 0 || strcmp (t, "incremental") == 0);
}

/* The checks of sqlite.c's backup_insert_check, word for word. */
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

/* As sqlite.c's backup_insert_tx, inside the catalog_lock. */
static int
backup_insert_tx (struct mariadb_catalog *mc, const struct cat_job *job,
                  const struct cat_vm *vm, const char *now, char **ctx_out,
                  int64_t *disk_ids)
{
  CLEANUP_FREE char *ctx = NULL, *running = NULL;
  int64_t one, latest;
  int f;

  if ((f = db_int (mc, &one, "SELECT 1 FROM backup_repositories WHERE id = ?",
                   "s", job->repository_id)) != 1) {
    if (f == 0)
      error_set (ERR_NOT_FOUND, "repository %s not found", job->repository_id);
    return -1;
  }
  f = db_text (mc, &ctx, "SELECT context_id FROM vm_backup_contexts"
               " WHERE vm_name = ? AND repository_id = ?", "ss",
               job->vm_name, job->repository_id);
  if (f == -1)
    return -1;
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
    if (db_exec (mc, "INSERT INTO vm_backup_contexts (context_id, vm_name, repository_id,"
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
    f = db_text (mc, &running, "SELECT id FROM backup_jobs"
                 " WHERE vm_backup_context_id = ? AND status IN ('running', 'finishing')", "s", ctx);
    if (f == -1)
      return -1;
    if (f == 1) {
      error_set (ERR_CONFLICT, "VM %s already has a running backup (%s) in repository %s",
                 job->vm_name, running, job->repository_id);
      return -1;
    }
  }

  for (size_t i = 0; i < job->n_disks; i++) {
    const struct cat_disk *d = &job->disks[i];

    if (d->parent_disk_id < 0)
      continue;
    f = db_int (mc, &latest, "SELECT d.id FROM backup_disks d" LATEST_WHERE,
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

  if (db_exec (mc, "INSERT INTO backup_jobs (id, vm_backup_context_id, vm_name,"
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
    CLEANUP_STMT struct stmt *s =
      db_prepare (mc, "INSERT INTO backup_disks (vm_backup_context_id, backup_job_id,"
                  " disk_index, vmware_disk_key, size_bytes, unit_number, backup_type,"
                  " qcow2_path, parent_disk_id, nbd_export, bytes_transferred, status,"
                  " created_at, full_reason)"
                  " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                  "ssioIossossss", ctx, job->id, d->disk_index, d->vmware_disk_key,
                  d->size_bytes, d->unit_number, d->backup_type, d->qcow2_path,
                  d->parent_disk_id, d->nbd_export, d->status ? d->status : "running",
                  d->created_at ? d->created_at : now, d->full_reason);

    if (s == NULL || db_step (s) == -1) {
      error_prefix ("adding disk %d of backup %s", d->disk_index, job->id);
      return -1;
    }
    disk_ids[i] = (int64_t) mysql_stmt_insert_id (s->s);
  }
  if (db_exec (mc, "UPDATE vm_backup_contexts SET total_backups_run = total_backups_run + 1,"
               " updated_at = ? WHERE context_id = ?", "ss", now, ctx) == -1)
    return -1;
  *ctx_out = ctx;
  ctx = NULL;
  return 0;
}

static int
mariadb_backup_insert (struct catalog *cat, struct cat_job *job, const struct cat_vm *vm)
{
  struct mariadb_catalog *mc = MC (cat);
  CLEANUP_FREE int64_t *ids = NULL;
  CLEANUP_FREE char *ctx = NULL;
  char **ctx_copies;
  char now[32];

  if (backup_insert_check (job) == -1)
    return -1;
  ids = calloc (job->n_disks, sizeof *ids);
  ctx_copies = calloc (job->n_disks, sizeof *ctx_copies);
  if (ids == NULL || ctx_copies == NULL) {
    free (ctx_copies);
    oom_error ();
    return -1;
  }
  id_now (now, sizeof now);
  {
    SCOPED_LOCK (&mc->lock);
    int r = RUN_TX (mc, true,
                    ({ int b_ = backup_insert_tx (mc, job, vm, now, &ctx, ids);
                       for (size_t i = 0; b_ == 0 && i < job->n_disks; i++)
                         if ((ctx_copies[i] = strdup (ctx)) == NULL) {
                           oom_error ();
                           b_ = -1;
                         }
                       b_; }),
                    ({ free (ctx); ctx = NULL;
                       for (size_t i = 0; i < job->n_disks; i++) {
                         free (ctx_copies[i]);
                         ctx_copies[i] = NULL;
                       } }));
    if (r == -1)
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

static int
backup_get_tx (struct mariadb_catalog *mc, const char *id, struct cat_job *out)
{
  int r = job_load (mc, id, out);

  if (r == 0)
    error_set (ERR_NOT_FOUND, "backup %s not found", id);
  return r == 1 ? 0 : -1;
}

static int
mariadb_backup_get (struct catalog *cat, const char *id, struct cat_job *out)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_job j = { 0 };
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, false, backup_get_tx (mc, id, &j), cat_job_clear (&j)) == -1) {
    cat_job_clear (&j);
    return -1;
  }
  *out = j;
  return 0;
}

#define JOB_FILTER \
  " WHERE (?1 IS NULL OR j.vm_name = ?1) AND (?2 IS NULL OR j.repository_id = ?2)" \
  " AND (?3 IS NULL OR j.status = ?3) AND (?4 IS NULL OR j.backup_type = ?4)"

static int
job_reader (struct mariadb_catalog *mc, struct row *r, void *rec)
{
  job_read (r, rec);
  if (job_load_disks (mc, rec) == -1) {
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

static int
backup_list_tx (struct mariadb_catalog *mc, const struct cat_job_filter *f,
                struct cat_job **out, size_t *n, int64_t *total)
{
  CLEANUP_STMT struct stmt *s = NULL;
  /* No LIMIT -1 here: "no limit" is the largest count. */
  int64_t limit = f->limit > 0 ? f->limit : INT64_MAX, offset = f->offset > 0 ? f->offset : 0;

  if (db_int (mc, total, "SELECT count(*) FROM backup_jobs j" JOB_FILTER, "ssss",
              f->vm_name, f->repository_id, f->status, f->backup_type) == -1)
    return -1;
  s = db_prepare (mc, JOB_SELECT JOB_FILTER " ORDER BY j.created_at DESC, j.id DESC"
                  " LIMIT ?5 OFFSET ?6", "ssssII", f->vm_name, f->repository_id,
                  f->status, f->backup_type, limit, offset);
  if (s == NULL)
    return -1;
  return collect_rows (mc, s, sizeof **out, job_reader, jobs_free, (void **) out, n);
}

static int
mariadb_backup_list (struct catalog *cat, const struct cat_job_filter *f,
                     struct cat_job **out, size_t *n, int64_t *total)
{
  struct mariadb_catalog *mc = MC (cat);
  static const struct cat_job_filter any = { 0 };
  struct cat_job *a = NULL;
  size_t count = 0;
  int64_t t = 0;
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, false, backup_list_tx (mc, f ? f : &any, &a, &count, &t),
              (cat_job_free_array (a, count), a = NULL, count = 0)) == -1) {
    cat_job_free_array (a, count);
    return -1;
  }
  *out = a;
  *n = count;
  if (total)
    *total = t;
  return 0;
}

static int
job_in (struct mariadb_catalog *mc, const char *id, const char *want, char **ctx,
        char **type, char **driver)
{
  CLEANUP_STMT struct stmt *s =
    db_prepare (mc, "SELECT status, vm_backup_context_id, backup_type, driver FROM backup_jobs"
                " WHERE id = ?", "s", id);
  struct row row = { s, false };
  CLEANUP_FREE char *status = NULL, *c = NULL, *t = NULL, *dr = NULL;
  int r;

  if (s == NULL || (r = db_step (s)) == -1)
    return -1;
  if (r == 0) {
    error_set (ERR_NOT_FOUND, "backup %s not found", id);
    return -1;
  }
  status = row_text (&row, 0);
  c = row_text (&row, 1);
  t = row_text (&row, 2);
  dr = row_text (&row, 3);
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
job_complete (struct mariadb_catalog *mc, const char *backup_id, const char *type, const char *ctx,
              const char *now)
{
  if (db_exec (mc, "UPDATE backup_jobs SET status = 'completed', completed_at = ?"
               " WHERE id = ?", "ss", now, backup_id) == -1 ||
      db_exec (mc, "UPDATE vm_backup_contexts SET"
               " successful_backups = successful_backups + 1, last_backup_id = ?,"
               " last_backup_type = ?, last_backup_at = ?, updated_at = ?"
               " WHERE context_id = ?", "sssss",
               backup_id, type, now, now, ctx) == -1)
    return -1;
  return 0;
}

static int
disk_complete_tx (struct mariadb_catalog *mc, const char *backup_id, int disk_index,
                  const char *change_id, int64_t bytes, const char *full_reason,
                  const char *now, struct cat_job *after)
{
  CLEANUP_FREE char *ctx = NULL, *type = NULL, *status = NULL, *driver = NULL;
  int64_t disk_id, left;
  int f;

  if (job_in (mc, backup_id, "running", &ctx, &type, &driver) == -1)
    return -1;
  f = db_int (mc, &disk_id, "SELECT id FROM backup_disks"
              " WHERE backup_job_id = ? AND disk_index = ?", "si", backup_id, disk_index);
  if (f == -1)
    return -1;
  if (f == 0) {
    error_set (ERR_NOT_FOUND, "backup %s has no disk %d", backup_id, disk_index);
    return -1;
  }
  if (db_text (mc, &status, "SELECT status FROM backup_disks WHERE id = ?",
               "I", disk_id) != 1)
    return -1;
  if (strcmp (status, "running") != 0 && strcmp (status, "pending") != 0) {
    error_set (ERR_CONFLICT, "disk %d of backup %s is %s", disk_index, backup_id, status);
    return -1;
  }
  if (db_exec (mc, "UPDATE backup_disks SET status = 'completed', disk_change_id = ?,"
               " bytes_transferred = ?, completed_at = ?, nbd_export = NULL,"
               " full_reason = COALESCE(?, full_reason) WHERE id = ?",
               "sIssI", change_id, bytes, now, full_reason, disk_id) == -1)
    return -1;
  if (db_int (mc, &left, "SELECT count(*) FROM backup_disks"
              " WHERE backup_job_id = ? AND status <> 'completed'", "s", backup_id) == -1)
    return -1;
  if (left == 0) {
    /* A hub-driven job still owes the source its bitmaps: it finishes
     * later, by catalog_backup_finish. */
    if (strcmp (driver, "hub") == 0) {
      if (db_exec (mc, "UPDATE backup_jobs SET status = 'finishing' WHERE id = ?",
                   "s", backup_id) == -1)
        return -1;
    }
    else if (job_complete (mc, backup_id, type, ctx, now) == -1)
      return -1;
  }
  return job_load (mc, backup_id, after) == 1 ? 0 : -1;
}

/* Finish a finishing job: complete it and count it in its context.
 * *after receives the job as it stands after the change. */
static int
backup_finish_tx (struct mariadb_catalog *mc, const char *backup_id, const char *now,
                  struct cat_job *after)
{
  CLEANUP_FREE char *ctx = NULL, *type = NULL;

  if (job_in (mc, backup_id, "finishing", &ctx, &type, NULL) == -1 ||
      job_complete (mc, backup_id, type, ctx, now) == -1)
    return -1;
  return job_load (mc, backup_id, after) == 1 ? 0 : -1;
}

static int
mariadb_disk_complete (struct catalog *cat, const char *backup_id, int disk_index,
                       const char *change_id, int64_t bytes_transferred,
                       const char *full_reason, struct cat_job *job_after)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_job after = { 0 };
  char now[32];

  if (bytes_transferred < 0) {
    error_set (ERR_INVALID, "bytes_transferred must not be negative");
    return -1;
  }
  id_now (now, sizeof now);
  SCOPED_LOCK (&mc->lock);
  if (RUN_TX (mc, true, disk_complete_tx (mc, backup_id, disk_index, change_id,
                                          bytes_transferred, full_reason, now, &after),
              cat_job_clear (&after)) == -1) {
    cat_job_clear (&after);
    return -1;
  }
  if (job_after)
    *job_after = after;
  else
    cat_job_clear (&after);
  return 0;
}

/* catalog_backup_finish: backup_finish_tx in one write transaction. */
static int
mariadb_backup_finish (struct catalog *cat, const char *backup_id, struct cat_job *job_after)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_job after = { 0 };
  char now[32];

  id_now (now, sizeof now);
  SCOPED_LOCK (&mc->lock);
  if (RUN_TX (mc, true, backup_finish_tx (mc, backup_id, now, &after),
              cat_job_clear (&after)) == -1) {
    cat_job_clear (&after);
    return -1;
  }
  if (job_after)
    *job_after = after;
  else
    cat_job_clear (&after);
  return 0;
}

static int backup_delete_plan_tx (struct mariadb_catalog *mc, const char *backup_id, bool cascade,
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
mariadb_backup_delete_plan (struct catalog *cat, const char *backup_id, bool cascade,
                        char ***job_ids)
{
  struct mariadb_catalog *mc = MC (cat);
  char **v = NULL;
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, false, backup_delete_plan_tx (mc, backup_id, cascade, &v),
              (strv_free (v), v = NULL)) == -1) {
    strv_free (v);
    return -1;
  }
  *job_ids = v;
  return 0;
}

static int
backup_end_tx (struct mariadb_catalog *mc, const char *backup_id, const char *status,
               int error_disk, const char *error, const char *now,
               struct cat_disk **dropped, size_t *n)
{
  CLEANUP_FREE char *ctx = NULL, *type = NULL;
  const char *other = strcmp (status, "failed") == 0 ? "job failed" : "job cancelled";

  if (job_in (mc, backup_id, "running", &ctx, &type, NULL) == -1)
    return -1;
  if (disks_query (mc, DISK_SELECT DISK_FROM " WHERE d.backup_job_id = ?"
                   " AND d.status <> 'completed' ORDER BY d.disk_index",
                   backup_id, dropped, n) == -1)
    return -1;
  for (size_t i = 0; i < *n; i++) {
    const struct cat_disk *d = &(*dropped)[i];
    const char *msg = other;

    if (d->disk_index == error_disk && error_disk >= 0 && error)
      msg = error;
    if (db_exec (mc, "UPDATE backup_disks SET status = 'failed', error = ?,"
                 " qcow2_path = NULL, nbd_export = NULL, completed_at = ?"
                 " WHERE id = ?", "ssI", msg, now, d->id) == -1)
      return -1;
  }
  if (db_exec (mc, "UPDATE backup_jobs SET status = ?, error = ?, completed_at = ?"
               " WHERE id = ?", "ssss", status, error, now, backup_id) == -1 ||
      db_exec (mc, "UPDATE vm_backup_contexts SET failed_backups = failed_backups + 1,"
               " updated_at = ? WHERE context_id = ?", "ss", now, ctx) == -1)
    return -1;
  return 0;
}

static int
mariadb_backup_end (struct catalog *cat, const char *backup_id, const char *status,
                    int error_disk, const char *error, struct cat_disk **dropped,
                    size_t *n_dropped)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_disk *a = NULL;
  size_t n = 0;
  char now[32];

  if (strcmp (status, "failed") != 0 && strcmp (status, "cancelled") != 0) {
    error_set (ERR_INVALID, "a backup can only end as failed or cancelled, not %s", status);
    return -1;
  }
  id_now (now, sizeof now);
  SCOPED_LOCK (&mc->lock);
  if (RUN_TX (mc, true, backup_end_tx (mc, backup_id, status, error_disk, error, now,
                                       &a, &n),
              (cat_disk_free_array (a, n), a = NULL, n = 0)) == -1) {
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
 * job already in the set.  The anchor selects the column, not the
 * parameter, so that the CTE's column has the column's type. */
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

/* The checks of deleting backup_id (with cascade or not): it exists and
 * is not active, and its dependents with files are deleted only with
 * cascade and only when none of them is active.  On success *ctx is its
 * context id (malloc'd, the caller frees). */
static int
backup_delete_check (struct mariadb_catalog *mc, const char *backup_id, bool cascade, char **ctx)
{
  CLEANUP_FREE char *status = NULL, *dependent = NULL, *dep_status = NULL;
  int64_t dependents;
  int f;

  f = db_text (mc, &status, "SELECT status FROM backup_jobs WHERE id = ?", "s", backup_id);
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
  if (db_text (mc, ctx, "SELECT vm_backup_context_id FROM backup_jobs WHERE id = ?",
               "s", backup_id) != 1 ||
      db_int (mc, &dependents, DOOMED_JOBS
              "SELECT count(*) FROM doomed WHERE job_id <> ?1" WITH_FILES,
              "s", backup_id) == -1)
    return -1;
  if (dependents > 0) {
    if (db_text (mc, &dependent, DOOMED_JOBS
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
    f = db_text (mc, &dep_status, DOOMED_JOBS
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
backup_delete_plan_tx (struct mariadb_catalog *mc, const char *backup_id, bool cascade, char ***out)
{
  CLEANUP_FREE char *ctx = NULL;
  CLEANUP_STMT struct stmt *s = NULL;
  char **v = NULL;
  size_t n = 0, cap = 0;
  int r;

  if (backup_delete_check (mc, backup_id, cascade, &ctx) == -1)
    return -1;
  s = db_prepare (mc, DOOMED_JOBS "SELECT job_id FROM doomed"
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
    if ((r = db_step (s)) != 1)
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

static int
backup_delete_tx (struct mariadb_catalog *mc, const char *backup_id, bool cascade,
                  const char *now, struct cat_disk **deleted, size_t *n)
{
  CLEANUP_FREE char *ctx = NULL;

  if (backup_delete_check (mc, backup_id, cascade, &ctx) == -1)
    return -1;
  if (disks_query (mc, DOOMED_JOBS DISK_SELECT DISK_FROM
                   " WHERE d.backup_job_id IN (SELECT job_id FROM doomed)"
                   " ORDER BY d.id", backup_id, deleted, n) == -1)
    return -1;
  /* The disks newest first (children before parents), then the jobs. */
  for (size_t i = *n; i-- > 0; )
    if (db_exec (mc, "DELETE FROM backup_disks WHERE id = ?", "I", (*deleted)[i].id) == -1) {
      error_prefix ("deleting backup %s", backup_id);
      return -1;
    }
  {
    CLEANUP_STMT struct stmt *s =
      db_prepare (mc, DOOMED_JOBS "SELECT job_id FROM doomed", "s", backup_id);
    char **jobs = NULL;
    size_t n_jobs = 0, cap = 0;
    int r;

    /* The disks are gone: doomed holds just ?1 now; the other jobs are
     * those of the deleted disks. */
    if (s == NULL)
      return -1;
    while ((r = db_step (s)) == 1) {
      char **slot = array_push ((void **) &jobs, n_jobs, &cap, sizeof *jobs);
      if (slot == NULL) {
        r = -1;
        break;
      }
      *slot = s->vals[0];
      s->vals[0] = NULL;
      n_jobs++;
    }
    for (size_t i = 0; r == 0 && i < *n; i++) {
      char **slot = array_push ((void **) &jobs, n_jobs, &cap, sizeof *jobs);
      if (slot == NULL || (*slot = strdup ((*deleted)[i].backup_job_id)) == NULL) {
        if (slot)
          oom_error ();
        r = -1;
        break;
      }
      n_jobs++;
    }
    for (size_t i = 0; r == 0 && i < n_jobs; i++)
      if (db_exec (mc, "DELETE FROM backup_jobs WHERE id = ?", "s", jobs[i]) == -1) {
        error_prefix ("deleting backup %s", backup_id);
        r = -1;
      }
    for (size_t i = 0; i < n_jobs; i++)
      free (jobs[i]);
    free (jobs);
    if (r == -1)
      return -1;
  }
  return context_refresh_last (mc, ctx, now);
}

static int
mariadb_backup_delete (struct catalog *cat, const char *backup_id, bool cascade,
                       struct cat_disk **deleted, size_t *n_deleted)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_disk *a = NULL;
  size_t n = 0;
  char now[32];

  id_now (now, sizeof now);
  SCOPED_LOCK (&mc->lock);
  if (RUN_TX (mc, true, backup_delete_tx (mc, backup_id, cascade, now, &a, &n),
              (cat_disk_free_array (a, n), a = NULL, n = 0)) == -1) {
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

static int
changeid_get_tx (struct mariadb_catalog *mc, const char *vm_name, int disk_index,
                 const char *repository_id, struct cat_disk *out)
{
  CLEANUP_FREE char *ctx = NULL;
  int64_t contexts;
  int f;

  if (repository_id) {
    f = db_text (mc, &ctx, "SELECT context_id FROM vm_backup_contexts"
                 " WHERE vm_name = ? AND repository_id = ?", "ss", vm_name, repository_id);
    if (f == 0)
      error_set (ERR_NOT_FOUND, "VM %s has no backups in repository %s",
                 vm_name, repository_id);
    if (f != 1)
      return -1;
  }
  else {
    if (db_int (mc, &contexts, "SELECT count(*) FROM vm_backup_contexts WHERE vm_name = ?",
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
    if (db_text (mc, &ctx, "SELECT context_id FROM vm_backup_contexts WHERE vm_name = ?",
                 "s", vm_name) != 1)
      return -1;
  }
  f = latest_disk (mc, ctx, disk_index, out);
  if (f == 0)
    error_set (ERR_NOT_FOUND, "VM %s has no completed backup of disk %d",
               vm_name, disk_index);
  return f == 1 ? 0 : -1;
}

static int
mariadb_changeid_get (struct catalog *cat, const char *vm_name, int disk_index,
                      const char *repository_id, struct cat_disk *out)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_disk d = { 0 };
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, false, changeid_get_tx (mc, vm_name, disk_index, repository_id, &d),
              cat_disk_clear (&d)) == -1) {
    cat_disk_clear (&d);
    return -1;
  }
  *out = d;
  return 0;
}

/* ------------------------------------------------------------------------
 * Recovery
 */

static int
disk_files_tx (struct mariadb_catalog *mc, struct cat_disk **out, char ***repo_paths,
               size_t *n)
{
  CLEANUP_STMT struct stmt *s =
    db_prepare (mc, DISK_SELECT ", r.path" DISK_FROM
                " JOIN vm_backup_contexts c ON c.context_id = d.vm_backup_context_id"
                " JOIN backup_repositories r ON r.id = c.repository_id"
                " WHERE d.qcow2_path IS NOT NULL ORDER BY d.id", "");

  if (s == NULL)
    return -1;
  return disks_read_all (s, out, n, repo_paths);
}

static int
mariadb_disk_files (struct catalog *cat, struct cat_disk **out, char ***repo_paths,
                    size_t *n)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_disk *a = NULL;
  char **p = NULL;
  size_t count = 0;
  SCOPED_LOCK (&mc->lock);

  /* disks_read_all leaves nothing behind when it fails; a failed COMMIT
   * after it does. */
#define FREE_FILES ({ cat_disk_free_array (a, count);                    \
                      for (size_t i = 0; p && i < count; i++) free (p[i]); \
                      free (p); a = NULL; p = NULL; count = 0; })
  if (RUN_TX (mc, false, disk_files_tx (mc, &a, &p, &count), FREE_FILES) == -1) {
    FREE_FILES;
    return -1;
  }
#undef FREE_FILES
  *out = a;
  *repo_paths = p;
  *n = count;
  return 0;
}

static int
running_disks_tx (struct mariadb_catalog *mc, struct cat_disk **out, size_t *n)
{
  CLEANUP_STMT struct stmt *s =
    db_prepare (mc, DISK_SELECT DISK_FROM
                " JOIN backup_jobs j ON j.id = d.backup_job_id"
                " WHERE d.status = 'running' AND j.status = 'running' ORDER BY d.id", "");

  if (s == NULL)
    return -1;
  return disks_read_all (s, out, n, NULL);
}

static int
mariadb_running_disks (struct catalog *cat, struct cat_disk **out, size_t *n)
{
  struct mariadb_catalog *mc = MC (cat);
  struct cat_disk *a = NULL;
  size_t count = 0;
  SCOPED_LOCK (&mc->lock);

  if (RUN_TX (mc, false, running_disks_tx (mc, &a, &count),
              (cat_disk_free_array (a, count), a = NULL, count = 0)) == -1) {
    cat_disk_free_array (a, count);
    return -1;
  }
  *out = a;
  *n = count;
  return 0;
}

/* The disk ?1 and every disk based on it, recursively. */
#define LOST_DISKS \
  "WITH RECURSIVE lost (id) AS (" \
  "  SELECT id FROM backup_disks WHERE id = ?1" \
  "  UNION" \
  "  SELECT c.id FROM backup_disks c JOIN lost ON c.parent_disk_id = lost.id) "

struct lost_job {
  char *id, *status, *ctx;
};

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

static int
lost_jobs_read (struct mariadb_catalog *mc, int64_t disk_id, struct lost_job **out,
                size_t *n)
{
  CLEANUP_STMT struct stmt *s =
    db_prepare (mc, LOST_DISKS "SELECT DISTINCT j.id, j.status, j.vm_backup_context_id"
                " FROM backup_jobs j JOIN backup_disks d ON d.backup_job_id = j.id"
                " WHERE d.id IN (SELECT id FROM lost) ORDER BY j.id", "I", disk_id);
  struct lost_job *a = NULL;
  size_t count = 0, cap = 0;
  int r;

  if (s == NULL)
    return -1;
  while ((r = db_step (s)) == 1) {
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
  }
  if (r == -1) {
    lost_jobs_free (a, count);
    return -1;
  }
  *out = a;
  *n = count;
  return 0;
}

/* As sqlite.c's disk_lost_tx; the disks built on the lost one are read
 * first and updated one by one (MariaDB has no WITH ... UPDATE). */
static int
disk_lost_tx (struct mariadb_catalog *mc, int64_t disk_id, const char *reason,
              const char *now)
{
  struct lost_job *jobs = NULL;
  CLEANUP_FREE char *child_msg = NULL, *job_msg = NULL;
  CLEANUP_FREE int64_t *ids = NULL;
  size_t n_jobs = 0, n_ids = 0, cap = 0;
  int64_t one;
  int f, r = -1;

  if ((f = db_int (mc, &one, "SELECT 1 FROM backup_disks WHERE id = ?", "I", disk_id)) != 1) {
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
  {
    CLEANUP_STMT struct stmt *s =
      db_prepare (mc, LOST_DISKS "SELECT id FROM lost WHERE id <> ?1 ORDER BY id",
                  "I", disk_id);
    if (s == NULL)
      return -1;
    while ((f = db_step (s)) == 1) {
      int64_t *slot = array_push ((void **) &ids, n_ids, &cap, sizeof *ids);
      if (slot == NULL)
        return -1;
      *slot = strtoll (s->vals[0], NULL, 10);
      n_ids++;
    }
    if (f == -1)
      return -1;
  }
  if (lost_jobs_read (mc, disk_id, &jobs, &n_jobs) == -1)
    return -1;

  if (db_exec (mc, "UPDATE backup_disks SET status = 'failed', error = ?,"
               " qcow2_path = NULL, nbd_export = NULL,"
               " completed_at = coalesce (completed_at, ?) WHERE id = ?",
               "ssI", reason, now, disk_id) == -1)
    goto out;
  for (size_t i = 0; i < n_ids; i++)
    if (db_exec (mc, "UPDATE backup_disks SET status = 'failed', error = ?,"
                 " qcow2_path = NULL, nbd_export = NULL,"
                 " completed_at = coalesce (completed_at, ?) WHERE id = ?",
                 "ssI", child_msg, now, ids[i]) == -1)
      goto out;

  for (size_t i = 0; i < n_jobs; i++) {
    const struct lost_job *j = &jobs[i];
    bool was_running = strcmp (j->status, "running") == 0 ||
                       strcmp (j->status, "finishing") == 0;

    if (!was_running && strcmp (j->status, "completed") != 0)
      continue;
    if (db_exec (mc, "UPDATE backup_jobs SET status = 'failed', error = ?,"
                 " completed_at = coalesce (completed_at, ?) WHERE id = ?",
                 "sss", job_msg, now, j->id) == -1)
      goto out;
    if (was_running) {
      if (db_exec (mc, "UPDATE backup_disks SET status = 'failed', error = 'job failed',"
                   " nbd_export = NULL, completed_at = ?"
                   " WHERE backup_job_id = ? AND status IN ('pending', 'running')",
                   "ss", now, j->id) == -1 ||
          db_exec (mc, "UPDATE vm_backup_contexts SET failed_backups = failed_backups + 1,"
                   " updated_at = ? WHERE context_id = ?", "ss", now, j->ctx) == -1)
        goto out;
    }
    if (context_refresh_last (mc, j->ctx, now) == -1)
      goto out;
  }
  r = 0;

 out:
  lost_jobs_free (jobs, n_jobs);
  return r;
}

static int
mariadb_disk_lost (struct catalog *cat, int64_t disk_id, const char *reason)
{
  struct mariadb_catalog *mc = MC (cat);
  char now[32];

  id_now (now, sizeof now);
  SCOPED_LOCK (&mc->lock);
  return RUN_TX (mc, true, disk_lost_tx (mc, disk_id, reason ? reason : "file lost", now),
                 (void) 0);
}

/* ------------------------------------------------------------------------
 * Opening, migrating, closing
 */

/* Run a migration's SQL, several statements, checking each result. */
static int
run_script (struct mariadb_catalog *mc, const char *version, const char *sql)
{
  int status;

  if (mysql_set_server_option (mc->db, MYSQL_OPTION_MULTI_STATEMENTS_ON) != 0) {
    db_error (mc, "multi-statements on");
    return -1;
  }
  status = mysql_real_query (mc->db, sql, strlen (sql));
  while (status == 0) {
    MYSQL_RES *res = mysql_store_result (mc->db);
    if (res)
      mysql_free_result (res);
    status = mysql_next_result (mc->db);
    if (status == -1) {
      status = 0;
      break;
    }
  }
  if (status != 0) {
    error_set (ERR_INTERNAL, "catalog: migration %s failed: %s", version,
               mysql_error (mc->db));
    if (errno_lost (mysql_errno (mc->db)))
      return -1;
  }
  if (mysql_set_server_option (mc->db, MYSQL_OPTION_MULTI_STATEMENTS_OFF) != 0 &&
      status == 0) {
    db_error (mc, "multi-statements off");
    return -1;
  }
  return status == 0 ? 0 : -1;
}

/* Apply each mysql migration not yet recorded, in order.  DDL commits by
 * itself in MariaDB, so a migration is not one transaction: the runner
 * holds a named lock (two hubs starting at once take turns), runs the
 * migration's statements, which are all re-runnable, and records its
 * version last.  A migration stopped halfway is run again, whole, by the
 * next start. */
static int
migrate (struct mariadb_catalog *mc)
{
  int64_t got;
  int r = -1;

  if (db_int (mc, &got, "SELECT GET_LOCK('" MIGRATE_LOCK "', 60)", "") != 1)
    return -1;
  if (got != 1) {
    error_set (ERR_UNAVAILABLE, "catalog: another process is migrating the database");
    return -1;
  }
  if (db_query (mc, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version VARCHAR(255) NOT NULL PRIMARY KEY,"
                " applied_at VARCHAR(32) NOT NULL)"
                " ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin")
      == -1)
    goto out;
  for (const struct catalog_migration *m = catalog_migrations; m->version; m++) {
    char now[32];
    int64_t one;
    int f;

    if (strcmp (m->dialect, DIALECT) != 0)
      continue;
    f = db_int (mc, &one, "SELECT 1 FROM schema_migrations WHERE version = ?", "s",
                m->version);
    if (f == -1)
      goto out;
    if (f == 1)
      continue;
    log_info ("catalog: applying migration %s", m->version);
    if (run_script (mc, m->version, m->sql) == -1)
      goto out;
    id_now (now, sizeof now);
    if (db_exec (mc, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                 "ss", m->version, now) == -1)
      goto out;
  }
  {
    CLEANUP_STMT struct stmt *s =
      db_prepare (mc, "SELECT version FROM schema_migrations ORDER BY version", "");
    int f;

    if (s == NULL)
      goto out;
    while ((f = db_step (s)) == 1) {
      const char *v = s->vals[0];
      bool known = false;

      for (const struct catalog_migration *m = catalog_migrations; m->version; m++)
        known |= v && strcmp (m->dialect, DIALECT) == 0 && strcmp (m->version, v) == 0;
      if (!known)
        log_warn ("catalog: the database has migration %s, which this strata does not"
                  " know: it was made by a newer version", v ? v : "?");
    }
    if (f == -1)
      goto out;
  }
  r = 0;

 out:
  if (mc->db)
    mysql_query (mc->db, "DO RELEASE_LOCK('" MIGRATE_LOCK "')");
  return r;
}

/* Percent-decode s[0..len) into a new string; NULL on a bad escape or a
 * %00. */
static char *
url_decode (const char *s, size_t len)
{
  char *out = malloc (len + 1), *o = out;

  if (out == NULL)
    return NULL;
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '%') {
      char hex[3];
      unsigned v;

      if (i + 2 >= len || !isxdigit ((unsigned char) s[i + 1]) ||
          !isxdigit ((unsigned char) s[i + 2])) {
        free (out);
        return NULL;
      }
      hex[0] = s[i + 1];
      hex[1] = s[i + 2];
      hex[2] = '\0';
      v = (unsigned) strtoul (hex, NULL, 16);
      if (v == 0) {
        free (out);
        return NULL;
      }
      *o++ = (char) v;
      i += 2;
    }
    else
      *o++ = s[i];
  }
  *o = '\0';
  return out;
}

/* Parse "[USER[:PASS]@]HOST[:PORT]/DB[?socket=PATH]" (after the scheme)
 * into mc.  Errors never quote the URL: it may hold a password. */
static int
parse_url (struct mariadb_catalog *mc, const char *rest)
{
  const char *at, *slash, *q, *host, *hend, *colon;
  char *end;

  slash = strchr (rest, '/');
  if (slash == NULL) {
    error_set (ERR_INVALID, "catalog URL names no database; expected"
               " mysql://USER@HOST[:PORT]/DATABASE[?socket=PATH]");
    return -1;
  }
  at = memrchr (rest, '@', slash - rest);
  host = rest;
  if (at) {
    const char *pc = memchr (rest, ':', at - rest);
    mc->user = url_decode (rest, (pc ? pc : at) - rest);
    if (pc)
      mc->password = url_decode (pc + 1, at - pc - 1);
    if (mc->user == NULL || (pc && mc->password == NULL)) {
      error_set (ERR_INVALID, "catalog URL: bad %%-escape in the user or password");
      return -1;
    }
    host = at + 1;
  }
  hend = slash;
  if (*host == '[') {
    const char *rb = memchr (host, ']', slash - host);
    if (rb == NULL) {
      error_set (ERR_INVALID, "catalog URL: '[' without ']' in the host");
      return -1;
    }
    mc->host = strndup (host + 1, rb - host - 1);
    colon = rb + 1 < slash && rb[1] == ':' ? rb + 1 : NULL;
    if (!colon && rb + 1 != slash) {
      error_set (ERR_INVALID, "catalog URL: junk after the host");
      return -1;
    }
  }
  else {
    colon = memchr (host, ':', slash - host);
    mc->host = strndup (host, (colon ? colon : slash) - host);
  }
  if (mc->host == NULL) {
    oom_error ();
    return -1;
  }
  if (*mc->host == '\0') {
    free (mc->host);
    mc->host = strdup ("localhost");
  }
  if (colon) {
    unsigned long p;
    errno = 0;
    p = strtoul (colon + 1, &end, 10);
    if (end != hend || colon + 1 == hend || errno || p == 0 || p > 65535) {
      error_set (ERR_INVALID, "catalog URL: the port must be a number from 1 to 65535");
      return -1;
    }
    mc->port = (unsigned) p;
  }
  q = strchr (slash + 1, '?');
  mc->dbname = url_decode (slash + 1, (q ? q : slash + 1 + strlen (slash + 1)) - slash - 1);
  if (mc->dbname == NULL || *mc->dbname == '\0' || strchr (mc->dbname, '/')) {
    error_set (ERR_INVALID, "catalog URL names no database; expected"
               " mysql://USER@HOST[:PORT]/DATABASE[?socket=PATH]");
    return -1;
  }
  if (q) {
    if (strncmp (q + 1, "socket=", 7) != 0 || strchr (q + 1, '&')) {
      error_set (ERR_INVALID, "catalog URL: the only option is ?socket=PATH");
      return -1;
    }
    mc->socket = url_decode (q + 8, strlen (q + 8));
    if (mc->socket == NULL || *mc->socket != '/') {
      error_set (ERR_INVALID, "catalog URL: socket= needs an absolute path");
      return -1;
    }
  }
  return 0;
}

/* Read the password: the first line of password_file, else the
 * environment's STRATA_DB_PASSWORD, else what the URL held. */
static int
read_password (struct mariadb_catalog *mc, const char *password_file)
{
  const char *env = getenv ("STRATA_DB_PASSWORD");

  if (password_file) {
    FILE *fp = fopen (password_file, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;

    if (fp == NULL) {
      error_set_errno (ERR_INVALID, errno, "database password file %s", password_file);
      return -1;
    }
    len = getline (&line, &cap, fp);
    fclose (fp);
    if (len < 0) {
      free (line);
      error_set (ERR_INVALID, "database password file %s is empty", password_file);
      return -1;
    }
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      line[--len] = '\0';
    free (mc->password);
    mc->password = line;
  }
  else if (env && *env) {
    free (mc->password);
    if ((mc->password = strdup (env)) == NULL) {
      oom_error ();
      return -1;
    }
  }
  return 0;
}

static void
mariadb_free (struct mariadb_catalog *mc)
{
  if (mc->db)
    mysql_close (mc->db);
  pthread_mutex_destroy (&mc->lock);
  free (mc->host);
  free (mc->user);
  if (mc->password) {
    explicit_bzero (mc->password, strlen (mc->password));
    free (mc->password);
  }
  free (mc->dbname);
  free (mc->socket);
  free (mc);
}

/* Open the database named by rest (the URL after "mysql://"), migrate it,
 * and return the catalog. */
struct catalog *
catalog_mariadb_open (const char *rest, const char *password_file, bool do_migrate)
{
  struct mariadb_catalog *mc = calloc (1, sizeof *mc);

  if (mc == NULL) {
    oom_error ();
    return NULL;
  }
  mc->base.ops = &mariadb_ops;
  pthread_mutex_init (&mc->lock, NULL);
  if (parse_url (mc, rest) == -1 || read_password (mc, password_file) == -1 ||
      db_connect (mc) == -1 || (do_migrate && migrate (mc) == -1)) {
    error_prefix ("opening catalog %s on %s", mc->dbname ? mc->dbname : "?",
                  mc->socket ? mc->socket : mc->host ? mc->host : "?");
    mariadb_free (mc);
    return NULL;
  }
  return &mc->base;
}

static void
mariadb_close (struct catalog *cat)
{
  mariadb_free (MC (cat));
}

/* ------------------------------------------------------------------------
 * Raw access for maintenance tools (catalog-int.h)
 */

static int
mariadb_raw_migrate (struct catalog *cat)
{
  struct mariadb_catalog *mc = MC (cat);
  SCOPED_LOCK (&mc->lock);

  return migrate (mc);
}

static int
mariadb_raw_exec (struct catalog *cat, const char *sql, const char *types, va_list ap)
{
  struct mariadb_catalog *mc = MC (cat);
  SCOPED_LOCK (&mc->lock);
  CLEANUP_STMT struct stmt *st = stmt_prepare_v (mc, sql, types, ap);

  if (st == NULL || stmt_execute (st) == -1)
    return -1;
  return (int) mysql_stmt_affected_rows (st->s);
}

static int
mariadb_raw_query (struct catalog *cat, const char *sql, const char *types, va_list ap,
                   catalog_row_fn fn, void *opaque)
{
  struct mariadb_catalog *mc = MC (cat);
  SCOPED_LOCK (&mc->lock);
  CLEANUP_STMT struct stmt *st = stmt_prepare_v (mc, sql, types, ap);
  int r;

  if (st == NULL)
    return -1;
  while ((r = db_step (st)) == 1)
    if (fn (opaque, (int) st->ncols, st->vals) == -1)
      return -1;
  return r;
}

static int
mariadb_raw_tx (struct catalog *cat, enum catalog_tx what)
{
  struct mariadb_catalog *mc = MC (cat);
  SCOPED_LOCK (&mc->lock);

  switch (what) {
  case CATALOG_TX_BEGIN:
    if (tx_begin (mc, true) == -1) {
      tx_rollback (mc);
      return -1;
    }
    return 0;
  case CATALOG_TX_COMMIT: return tx_commit (mc);
  default: tx_rollback (mc); return 0;
  }
}

static const struct catalog_ops mariadb_ops = {
  .name = "mariadb",
  .close = mariadb_close,
  .repo_insert = mariadb_repo_insert,
  .repo_get = mariadb_repo_get,
  .repo_list = mariadb_repo_list,
  .repo_delete = mariadb_repo_delete,
  .vm_put = mariadb_vm_put,
  .vm_get = mariadb_vm_get,
  .vm_list = mariadb_vm_list,
  .vm_delete = mariadb_vm_delete,
  .context_get = mariadb_context_get,
  .context_find = mariadb_context_find,
  .context_list = mariadb_context_list,
  .context_delete = mariadb_context_delete,
  .backup_plan = mariadb_backup_plan,
  .backup_insert = mariadb_backup_insert,
  .backup_get = mariadb_backup_get,
  .backup_list = mariadb_backup_list,
  .disk_complete = mariadb_disk_complete,
  .backup_end = mariadb_backup_end,
  .backup_delete = mariadb_backup_delete,
  .backup_finish = mariadb_backup_finish,
  .backup_delete_plan = mariadb_backup_delete_plan,
  .changeid_get = mariadb_changeid_get,
  .disk_files = mariadb_disk_files,
  .running_disks = mariadb_running_disks,
  .disk_lost = mariadb_disk_lost,
  .raw_exec = mariadb_raw_exec,
  .raw_query = mariadb_raw_query,
  .raw_tx = mariadb_raw_tx,
  .raw_migrate = mariadb_raw_migrate,
};
