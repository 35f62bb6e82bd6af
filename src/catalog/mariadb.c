/* catalog/mariadb.c - the MariaDB driver of the catalog core (core.c),
 * over libmariadb.
 *
 * CONNECTION
 *
 * A catalog is one connection.  The session runs with sql_mode
 * STRICT_ALL_TABLES, utf8mb4 and the collation utf8mb4_nopad_bin (byte
 * order, case and trailing blanks count, as in SQLite), REPEATABLE READ,
 * and CLIENT_FOUND_ROWS so that an UPDATE reports the rows it matched, as
 * sqlite3_changes does.  Statements are server-side prepared statements:
 * values are always bound, never spliced into SQL.  "?N" in the core's SQL
 * names parameter N, as in SQLite; mariadb_prepare rewrites it into plain
 * "?" and binds the value at each place.  A statement's rows are all
 * fetched to the client when it runs, so that the core may run other
 * statements while it reads them.
 *
 * TRANSACTIONS AND LOCKS
 *
 * SQLite's BEGIN IMMEDIATE takes the database's one write lock before the
 * first read.  The same here: a write transaction starts by locking the one
 * row of catalog_lock (SELECT ... FOR UPDATE), so that the writers of every
 * hub sharing the database take turns.  The row is locked before the
 * transaction's snapshot is taken (the first plain read), so the checks see
 * every earlier commit.  Reads run in START TRANSACTION READ ONLY, WITH
 * CONSISTENT SNAPSHOT.
 *
 * LOST CONNECTIONS, DEADLOCKS
 *
 * When the server goes away, or InnoDB picks the transaction as a deadlock
 * victim, before COMMIT was sent, the server has rolled the transaction
 * back: mariadb_again reconnects if need be and lets the core run it once
 * more from the start.  If the connection is lost while COMMIT is on its
 * way (then nobody knows whether it was applied), the operation fails with
 * ERR_UNAVAILABLE and is not retried: a client never hears "done" for
 * something that was not committed, and InnoDB never applies half a
 * transaction.
 *
 * MIGRATIONS
 *
 * DDL commits by itself in MariaDB, so a migration is not one transaction:
 * the core runs them under a named lock (two hubs starting at once take
 * turns), each migration's statements re-runnable, its version recorded
 * last.  A migration stopped halfway is run again, whole, by the next
 * start.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mysql.h>
#include <errmsg.h>
#include <mysqld_error.h>

#include "catalog/catalog-int.h"
#include "util/error.h"
#include "util/log.h"

#define LOCK_WAIT_S 10          /* innodb_lock_wait_timeout, like SQLite's busy timeout */
#define CONNECT_TIMEOUT_S 10
#define IO_TIMEOUT_S 60
#define MIGRATE_LOCK "strata-catalog-migrate"
#define MAX_PLACES 64

struct mariadb_catalog {
  struct catalog base;          /* first: what the core sees */
  MYSQL *db;                    /* NULL after a failed reconnect */
  char *host, *user, *password, *dbname, *socket;
  unsigned port;
  bool in_tx;                   /* between START TRANSACTION and its end */
  bool retry;                   /* the last error allows running the transaction again */
  bool lost;                    /* ... and the connection is gone */
};

/* One prepared statement with its parameters and, after each fetch, the
 * current row's values as strings (NULL for SQL NULL). */
struct stmt {
  struct db_stmt base;          /* first */
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

static const struct catalog_driver mariadb_driver;

#define MC(cat) ((struct mariadb_catalog *) (cat))
#define ST(st) ((struct stmt *) (st))

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

/* ------------------------------------------------------------------------
 * Statements
 */

static void
stmt_free_row (struct stmt *st)
{
  for (unsigned i = 0; st->vals && i < st->ncols; i++) {
    free (st->vals[i]);
    st->vals[i] = NULL;
  }
}

static void
mariadb_finalize (struct db_stmt *base)
{
  struct stmt *st = ST (base);

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

/* Copy sql into st->sql with "?N" (argument N, 1-based) and "?" (the next
 * one) rewritten into "?", and put the argument of each place in
 * place_arg.  The number of places, or -1. */
static int
rewrite_places (struct stmt *st, const char *sql, size_t nargs, size_t *place_arg)
{
  size_t nplaces = 0, next = 0;
  bool quoted = false;
  char *out = st->sql = malloc (strlen (sql) + 1);

  if (out == NULL) {
    catalog_oom ();
    return -1;
  }
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
      place_arg[nplaces] = strtoul (p + 1, &end, 10) - 1;
      p = end - 1;
    }
    else
      place_arg[nplaces] = next++;
    if (place_arg[nplaces] >= nargs || ++nplaces == MAX_PLACES)
      return catalog_fail (ERR_INTERNAL, "catalog: statement parameters do not match"
                           " (in \"%.80s\")", sql);
  }
  *out = '\0';
  if (nplaces == 0 && nargs > 0)
    return catalog_fail (ERR_INTERNAL, "catalog: statement has no parameters, %zu given"
                         " (in \"%.80s\")", nargs, sql);
  return (int) nplaces;
}

/* Prepare sql on the server and bind args at their places.  The strings
 * are bound by pointer: they live in the core's frame until the statement
 * has run. */
static struct db_stmt *
mariadb_prepare (struct catalog *cat, const char *sql, const struct db_arg *args,
                 size_t nargs)
{
  struct mariadb_catalog *mc = MC (cat);
  size_t place_arg[MAX_PLACES], nplaces;
  struct stmt *st;
  int np;

  if (mc->db == NULL) {
    error_set (ERR_UNAVAILABLE, "catalog: not connected to the MariaDB server");
    mc->retry = mc->lost = true;
    return NULL;
  }
  if ((st = calloc (1, sizeof *st)) == NULL) {
    catalog_oom ();
    return NULL;
  }
  st->base.drv = &mariadb_driver;
  st->mc = mc;
  if ((np = rewrite_places (st, sql, nargs, place_arg)) == -1)
    goto fail;
  nplaces = (size_t) np;
  st->s = mysql_stmt_init (mc->db);
  st->params = calloc (nplaces ? nplaces : 1, sizeof *st->params);
  st->ints = calloc (nplaces ? nplaces : 1, sizeof *st->ints);
  st->nulls = calloc (nplaces ? nplaces : 1, sizeof *st->nulls);
  if (st->s == NULL || st->params == NULL || st->ints == NULL || st->nulls == NULL) {
    catalog_oom ();
    goto fail;
  }
  if (mysql_stmt_prepare (st->s, st->sql, strlen (st->sql)) != 0) {
    stmt_error (mc, st->s, sql);
    goto fail;
  }
  if (mysql_stmt_param_count (st->s) != nplaces) {
    error_set (ERR_INTERNAL, "catalog: statement has %lu parameters, %zu places (in \"%.80s\")",
               mysql_stmt_param_count (st->s), nplaces, sql);
    goto fail;
  }
  for (size_t k = 0; k < nplaces; k++) {
    const struct db_arg *a = &args[place_arg[k]];
    MYSQL_BIND *b = &st->params[k];

    st->nulls[k] = a->null;
    b->is_null = &st->nulls[k];
    if (a->null)
      b->buffer_type = MYSQL_TYPE_NULL;
    else if (a->text) {
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
  if (nplaces && mysql_stmt_bind_param (st->s, st->params) != 0) {
    stmt_error (mc, st->s, sql);
    goto fail;
  }
  return &st->base;

 fail:
  mariadb_finalize (&st->base);
  return NULL;
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
    catalog_oom ();
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
      catalog_oom ();
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


/* Run st (the first time) and fetch its next row. */
static int
mariadb_step (struct db_stmt *base)
{
  struct stmt *st = ST (base);

  if (!st->executed && stmt_execute (st) == -1)
    return -1;
  if (!st->has_result)
    return 0;
  return stmt_fetch (st);
}

static int
mariadb_column (struct db_stmt *st, int col, const char **val)
{
  *val = ST (st)->vals[col];
  return 0;
}

static int
mariadb_ncols (struct db_stmt *st)
{
  return (int) ST (st)->ncols;
}

static int64_t
mariadb_changes (struct db_stmt *st)
{
  return (int64_t) mysql_stmt_affected_rows (ST (st)->s);
}

static int64_t
mariadb_last_insert_id (struct db_stmt *st)
{
  return (int64_t) mysql_stmt_insert_id (ST (st)->s);
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


/* Run sql (not prepared) for one integer: 1 and *out when there is a row,
 * 0 when none, -1 on error. */
static int
db_query_int (struct mariadb_catalog *mc, const char *sql, int64_t *out)
{
  MYSQL_RES *res;
  MYSQL_ROW row;
  int r = 0;

  if (db_query (mc, sql) == -1)
    return -1;
  if ((res = mysql_store_result (mc->db)) == NULL) {
    db_error (mc, sql);
    return -1;
  }
  if ((row = mysql_fetch_row (res)) != NULL) {
    *out = row[0] ? strtoll (row[0], NULL, 10) : -1;
    r = 1;
  }
  mysql_free_result (res);
  return r;
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
    catalog_oom ();
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
mariadb_begin (struct catalog *cat, bool write)
{
  struct mariadb_catalog *mc = MC (cat);
  int64_t one;
  int f;

  mc->retry = false;
  if (mc->db == NULL && db_connect (mc) == -1) {
    mc->retry = false;
    return -1;
  }
  if (write) {
    if (db_query (mc, "START TRANSACTION READ WRITE") == -1)
      return -1;
    mc->in_tx = true;
    f = db_query_int (mc, "SELECT id FROM catalog_lock WHERE id = 1 FOR UPDATE", &one);
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
mariadb_rollback (struct catalog *cat)
{
  struct mariadb_catalog *mc = MC (cat);

  if (!mc->in_tx || mc->db == NULL)
    return;
  mc->in_tx = false;
  if (mysql_real_query (mc->db, "ROLLBACK", 8) != 0 && !errno_lost (mysql_errno (mc->db)))
    log_warn ("catalog: ROLLBACK failed: %s", mysql_error (mc->db));
}

/* Commit.  A connection lost now leaves the outcome unknown: never retried,
 * never reported as success. */
static int
mariadb_commit (struct catalog *cat)
{
  struct mariadb_catalog *mc = MC (cat);

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
    mariadb_rollback (cat);
    return -1;
  }
  return 0;
}

/* After a failed attempt: may the transaction run again?  Once, and only
 * when the failure rolled everything back before COMMIT (a lost connection,
 * a deadlock); reconnects when the connection is gone. */
static bool
mariadb_again (struct catalog *cat, int attempt)
{
  struct mariadb_catalog *mc = MC (cat);

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


/* ------------------------------------------------------------------------
 * Migrations
 */

/* Take the named migration lock: two hubs starting at once take turns. */
static int
mariadb_migrate_enter (struct catalog *cat)
{
  int64_t got;

  if (db_query_int (MC (cat), "SELECT GET_LOCK('" MIGRATE_LOCK "', 60)", &got) != 1)
    return -1;
  if (got != 1)
    return catalog_fail (ERR_UNAVAILABLE,
                         "catalog: another process is migrating the database");
  return 0;
}

static void
mariadb_migrate_leave (struct catalog *cat)
{
  if (MC (cat)->db)
    mysql_query (MC (cat)->db, "DO RELEASE_LOCK('" MIGRATE_LOCK "')");
}

/* Run a migration's SQL, several statements, checking each result. */
static int
mariadb_script (struct catalog *cat, const struct catalog_migration *m)
{
  struct mariadb_catalog *mc = MC (cat);
  const char *version = m->version, *sql = m->sql;
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
  if (slash == NULL)
    return catalog_fail (ERR_INVALID, "catalog URL names no database; expected"
                         " mariadb://USER@HOST[:PORT]/DATABASE[?socket=PATH]");
  at = memrchr (rest, '@', slash - rest);
  host = rest;
  if (at) {
    const char *pc = memchr (rest, ':', at - rest);
    mc->user = url_decode (rest, (pc ? pc : at) - rest);
    if (pc)
      mc->password = url_decode (pc + 1, at - pc - 1);
    if (mc->user == NULL || (pc && mc->password == NULL))
      return catalog_fail (ERR_INVALID,
                           "catalog URL: bad %%-escape in the user or password");
    host = at + 1;
  }
  hend = slash;
  if (*host == '[') {
    const char *rb = memchr (host, ']', slash - host);
    if (rb == NULL)
      return catalog_fail (ERR_INVALID, "catalog URL: '[' without ']' in the host");
    mc->host = strndup (host + 1, rb - host - 1);
    colon = rb + 1 < slash && rb[1] == ':' ? rb + 1 : NULL;
    if (!colon && rb + 1 != slash)
      return catalog_fail (ERR_INVALID, "catalog URL: junk after the host");
  }
  else {
    colon = memchr (host, ':', slash - host);
    mc->host = strndup (host, (colon ? colon : slash) - host);
  }
  if (mc->host == NULL) {
    catalog_oom ();
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
    if (end != hend || colon + 1 == hend || errno || p == 0 || p > 65535)
      return catalog_fail (ERR_INVALID,
                           "catalog URL: the port must be a number from 1 to 65535");
    mc->port = (unsigned) p;
  }
  q = strchr (slash + 1, '?');
  mc->dbname = url_decode (slash + 1, (q ? q : slash + 1 + strlen (slash + 1)) - slash - 1);
  if (mc->dbname == NULL || *mc->dbname == '\0' || strchr (mc->dbname, '/'))
    return catalog_fail (ERR_INVALID, "catalog URL names no database; expected"
                         " mariadb://USER@HOST[:PORT]/DATABASE[?socket=PATH]");
  if (q) {
    if (strncmp (q + 1, "socket=", 7) != 0 || strchr (q + 1, '&'))
      return catalog_fail (ERR_INVALID, "catalog URL: the only option is ?socket=PATH");
    mc->socket = url_decode (q + 8, strlen (q + 8));
    if (mc->socket == NULL || *mc->socket != '/')
      return catalog_fail (ERR_INVALID, "catalog URL: socket= needs an absolute path");
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
      catalog_oom ();
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
  catalog_base_destroy (&mc->base);
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


/* Open the database named by rest (the URL after "mariadb://"), migrate
 * it, and return the catalog. */
struct catalog *
catalog_mariadb_open (const char *rest, const char *password_file, bool migrate)
{
  struct mariadb_catalog *mc = calloc (1, sizeof *mc);

  if (mc == NULL) {
    catalog_oom ();
    return NULL;
  }
  catalog_base_init (&mc->base, &mariadb_driver);
  if (parse_url (mc, rest) == -1 || read_password (mc, password_file) == -1 ||
      db_connect (mc) == -1 || (migrate && catalog_migrate (&mc->base) == -1)) {
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

static const struct catalog_driver mariadb_driver = {
  .name = "mariadb",
  .prepare = mariadb_prepare,
  .step = mariadb_step,
  .column = mariadb_column,
  .ncols = mariadb_ncols,
  .changes = mariadb_changes,
  .last_insert_id = mariadb_last_insert_id,
  .finalize = mariadb_finalize,
  .begin = mariadb_begin,
  .commit = mariadb_commit,
  .rollback = mariadb_rollback,
  .again = mariadb_again,
  .migrations_ddl = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version VARCHAR(255) NOT NULL PRIMARY KEY,"
                    " applied_at VARCHAR(32) NOT NULL)"
                    " ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin",
  .ddl_in_tx = false,
  .migrate_enter = mariadb_migrate_enter,
  .migrate_leave = mariadb_migrate_leave,
  .script = mariadb_script,
  .close = mariadb_close,
};
