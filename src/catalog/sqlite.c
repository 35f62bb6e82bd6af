/* catalog/sqlite.c - the SQLite driver of the catalog core (core.c).
 *
 * A catalog is one sqlite3 connection (opened NOMUTEX: the core's mutex
 * already serializes every use of it) in WAL mode with synchronous=FULL
 * (a COMMIT is on disk before the hub acknowledges anything) and foreign
 * keys on.  A write transaction is BEGIN IMMEDIATE, which takes the
 * database's write lock before the first read, against other processes
 * using the same file as well; a read is BEGIN DEFERRED, one snapshot.
 *
 * ERRORS
 *
 * An SQLite failure is turned into the thread's error at once: constraint
 * violations become ERR_CONFLICT, a database still locked after the busy
 * timeout ERR_UNAVAILABLE (and the transaction may run once more: nothing
 * was applied), a full disk ERR_NO_SPACE, the rest ERR_INTERNAL.  ROLLBACK
 * comes after and never overwrites that error.
 *
 * MIGRATIONS
 *
 * DDL is transactional here: each migration runs in one write transaction
 * with its schema_migrations row.  A CHECK changes only by rebuilding its
 * table (0003_finishing.sql), so foreign keys are off around the
 * migrations (dropping a table must not cascade) and PRAGMA
 * foreign_key_check runs before each COMMIT.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sqlite3.h>

#include "catalog/catalog-int.h"
#include "util/error.h"
#include "util/log.h"

#define BUSY_TIMEOUT_MS 5000

struct sqlite_catalog {
  struct catalog base;          /* first: what the core sees */
  sqlite3 *db;
  bool retry;                   /* the last error allows running the transaction again */
};

struct sqlite_stmt {
  struct db_stmt base;          /* first */
  struct sqlite_catalog *sc;
  sqlite3_stmt *s;
};

static const struct catalog_driver sqlite_driver;

#define SC(cat) ((struct sqlite_catalog *) (cat))
#define ST(st) ((struct sqlite_stmt *) (st))

/* Record the connection's last error (result code rc) as the thread's
 * error, in the category it calls for.  sql names the statement for
 * internal errors; a constraint message already says which table and
 * column. */
static void
db_error (struct sqlite_catalog *sc, int rc, const char *sql)
{
  const char *msg = sqlite3_errmsg (sc->db);

  sc->retry = false;
  switch (rc & 0xff) {
  case SQLITE_CONSTRAINT:
    error_set (ERR_CONFLICT, "catalog: %s", msg);
    break;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    sc->retry = true;
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

/* ------------------------------------------------------------------------
 * Statements
 */

static void
sqlite_finalize (struct db_stmt *st)
{
  sqlite3_finalize (ST (st)->s);
  free (st);
}

/* SQLite reads "?N" itself: bind argument i at parameter i + 1. */
static struct db_stmt *
sqlite_prepare (struct catalog *cat, const char *sql, const struct db_arg *args,
                size_t nargs)
{
  struct sqlite_catalog *sc = SC (cat);
  struct sqlite_stmt *st = calloc (1, sizeof *st);
  int rc;

  if (st == NULL) {
    catalog_oom ();
    return NULL;
  }
  st->base.drv = &sqlite_driver;
  st->sc = sc;
  rc = sqlite3_prepare_v2 (sc->db, sql, -1, &st->s, NULL);
  if (rc != SQLITE_OK) {
    db_error (sc, rc, sql);
    sqlite_finalize (&st->base);
    return NULL;
  }
  if ((size_t) sqlite3_bind_parameter_count (st->s) != nargs) {
    error_set (ERR_INTERNAL, "catalog: statement has %d parameters, %zu given (in \"%.80s\")",
               sqlite3_bind_parameter_count (st->s), nargs, sql);
    sqlite_finalize (&st->base);
    return NULL;
  }
  for (size_t i = 0; i < nargs; i++) {
    const struct db_arg *a = &args[i];
    int col = (int) i + 1;

    rc = a->null ? sqlite3_bind_null (st->s, col)
       : a->text ? sqlite3_bind_text (st->s, col, a->s, -1, SQLITE_TRANSIENT)
       : sqlite3_bind_int64 (st->s, col, a->v);
    if (rc != SQLITE_OK) {
      db_error (sc, rc, sql);
      sqlite_finalize (&st->base);
      return NULL;
    }
  }
  return &st->base;
}

static int
sqlite_step (struct db_stmt *st)
{
  int rc = sqlite3_step (ST (st)->s);

  if (rc == SQLITE_ROW)
    return 1;
  if (rc == SQLITE_DONE)
    return 0;
  db_error (ST (st)->sc, rc, sqlite3_sql (ST (st)->s));
  return -1;
}

static int
sqlite_column (struct db_stmt *st, int col, const char **val)
{
  sqlite3_stmt *s = ST (st)->s;

  *val = (const char *) sqlite3_column_text (s, col);
  return *val == NULL && sqlite3_column_type (s, col) != SQLITE_NULL ? -1 : 0;
}

static int
sqlite_ncols (struct db_stmt *st)
{
  return sqlite3_column_count (ST (st)->s);
}

static int64_t
sqlite_changes (struct db_stmt *st)
{
  return sqlite3_changes (ST (st)->sc->db);
}

static int64_t
sqlite_last_insert_id (struct db_stmt *st)
{
  return sqlite3_last_insert_rowid (ST (st)->sc->db);
}

/* Run constant SQL of one or more statements (transaction control,
 * PRAGMAs, migrations). */
static int
sqlite_run (struct sqlite_catalog *sc, const char *sql)
{
  char *errmsg = NULL;
  int rc = sqlite3_exec (sc->db, sql, NULL, NULL, &errmsg);

  sqlite3_free (errmsg);
  if (rc != SQLITE_OK) {
    db_error (sc, rc, sql);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Transactions
 */

static int
sqlite_begin (struct catalog *cat, bool write)
{
  SC (cat)->retry = false;
  return sqlite_run (SC (cat), write ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED");
}

static void
sqlite_rollback (struct catalog *cat)
{
  struct sqlite_catalog *sc = SC (cat);

  if (sqlite3_get_autocommit (sc->db))
    return;                     /* none open, or SQLite rolled back by itself */
  if (sqlite3_exec (sc->db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
    log_warn ("catalog: ROLLBACK failed: %s", sqlite3_errmsg (sc->db));
}

static int
sqlite_commit (struct catalog *cat)
{
  if (sqlite_run (SC (cat), "COMMIT") == -1) {
    sqlite_rollback (cat);
    return -1;
  }
  return 0;
}

/* Once more after a database that stayed locked through the busy timeout:
 * the attempt applied nothing. */
static bool
sqlite_again (struct catalog *cat, int attempt)
{
  struct sqlite_catalog *sc = SC (cat);
  bool again = attempt == 0 && sc->retry;

  if (again)
    log_warn ("%s; trying once more", error_message ());
  sc->retry = false;
  return again;
}

/* ------------------------------------------------------------------------
 * Migrations
 */

/* PRAGMA foreign_keys is a no-op inside a transaction: switch it around
 * the whole run. */
static int
sqlite_migrate_enter (struct catalog *cat)
{
  return sqlite_run (SC (cat), "PRAGMA foreign_keys = OFF");
}

static void
sqlite_migrate_leave (struct catalog *cat)
{
  if (sqlite_run (SC (cat), "PRAGMA foreign_keys = ON") == -1)
    log_warn ("catalog: %s", error_message ());
}

/* Run a migration's script, then check every foreign key, since they were
 * off while it ran. */
static int
sqlite_script (struct catalog *cat, const struct catalog_migration *m)
{
  struct sqlite_catalog *sc = SC (cat);
  sqlite3_stmt *s = NULL;
  int rc;

  if (sqlite_run (sc, m->sql) == -1) {
    error_prefix ("catalog: migration %s failed", m->version);
    return -1;
  }
  rc = sqlite3_prepare_v2 (sc->db, "PRAGMA foreign_key_check", -1, &s, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_step (s);
  sqlite3_finalize (s);
  if (rc == SQLITE_ROW)
    error_set (ERR_INTERNAL, "catalog: migration %s leaves a dangling foreign key",
               m->version);
  else if (rc != SQLITE_DONE)
    db_error (sc, rc, "PRAGMA foreign_key_check");
  return rc == SQLITE_DONE ? 0 : -1;
}

/* ------------------------------------------------------------------------
 * Opening and closing
 */

/* Set up a new connection: busy timeout, WAL (checked: it is refused on
 * some file systems), synchronous=FULL, foreign keys (checked). */
static int
sqlite_setup (struct sqlite_catalog *sc)
{
  static const struct { const char *sql, *want; } pragmas[] = {
    { "PRAGMA journal_mode = WAL", "wal" },
    { "PRAGMA synchronous = FULL", NULL },
    { "PRAGMA foreign_keys = ON", NULL },
    { "PRAGMA foreign_keys", "1" },
  };

  sqlite3_extended_result_codes (sc->db, 1);
  if (sqlite3_busy_timeout (sc->db, BUSY_TIMEOUT_MS) != SQLITE_OK) {
    db_error (sc, sqlite3_errcode (sc->db), "busy_timeout");
    return -1;
  }
  for (size_t i = 0; i < sizeof pragmas / sizeof *pragmas; i++) {
    sqlite3_stmt *s = NULL;
    const char *got = NULL;
    int rc = sqlite3_prepare_v2 (sc->db, pragmas[i].sql, -1, &s, NULL);
    bool bad;

    if (rc == SQLITE_OK && (rc = sqlite3_step (s)) == SQLITE_ROW)
      got = (const char *) sqlite3_column_text (s, 0);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      db_error (sc, rc, pragmas[i].sql);
      sqlite3_finalize (s);
      return -1;
    }
    bad = pragmas[i].want && (got == NULL || strcasecmp (got, pragmas[i].want) != 0);
    if (bad)
      error_set (ERR_INTERNAL, "catalog: \"%s\" gave \"%s\", not \"%s\"",
                 pragmas[i].sql, got ? got : "", pragmas[i].want);
    sqlite3_finalize (s);
    if (bad)
      return -1;
  }
  return 0;
}

static void
sqlite_close (struct catalog *cat)
{
  struct sqlite_catalog *sc = SC (cat);

  /* Every statement is finalized by the operation that made it, so close
   * cannot find one still open. */
  if (sqlite3_close (sc->db) != SQLITE_OK)
    log_warn ("catalog: close: %s", sqlite3_errmsg (sc->db));
  catalog_base_destroy (cat);
  free (sc);
}

/* Open (creating if need be) the database file at path, configure and
 * migrate it.  Returns the catalog (freed by catalog_close) or NULL. */
struct catalog *
catalog_sqlite_open (const char *path, bool migrate)
{
  struct sqlite_catalog *sc = calloc (1, sizeof *sc);
  int rc;

  if (sc == NULL) {
    catalog_oom ();
    return NULL;
  }
  catalog_base_init (&sc->base, &sqlite_driver);
  rc = sqlite3_open_v2 (path, &sc->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL);
  if (rc != SQLITE_OK) {
    error_set (ERR_UNAVAILABLE, "catalog: cannot open %s: %s", path,
               sc->db ? sqlite3_errmsg (sc->db) : sqlite3_errstr (rc));
    sqlite_close (&sc->base);
    return NULL;
  }
  if (sqlite_setup (sc) == -1 || (migrate && catalog_migrate (&sc->base) == -1)) {
    error_prefix ("opening catalog %s", path);
    sqlite_close (&sc->base);
    return NULL;
  }
  return &sc->base;
}

static const struct catalog_driver sqlite_driver = {
  .name = "sqlite",
  .prepare = sqlite_prepare,
  .step = sqlite_step,
  .column = sqlite_column,
  .ncols = sqlite_ncols,
  .changes = sqlite_changes,
  .last_insert_id = sqlite_last_insert_id,
  .finalize = sqlite_finalize,
  .begin = sqlite_begin,
  .commit = sqlite_commit,
  .rollback = sqlite_rollback,
  .again = sqlite_again,
  .migrations_ddl = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version TEXT NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL)",
  .ddl_in_tx = true,
  .migrate_enter = sqlite_migrate_enter,
  .migrate_leave = sqlite_migrate_leave,
  .script = sqlite_script,
  .close = sqlite_close,
};
