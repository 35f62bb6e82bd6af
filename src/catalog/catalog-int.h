/* catalog/catalog-int.h - what the catalog's files share; not for use
 * outside src/catalog/.
 *
 * The catalog is one SQL core (core.c and its domain files, which share
 * core-int.h: every domain operation, written once, in SQL that SQLite
 * and MariaDB both accept) over a small driver
 * interface (struct catalog_driver), which sqlite.c and mariadb.c
 * implement: statements with bound parameters, a row's columns as text,
 * transactions with the catalog's write lock, the answer to "may this
 * transaction run again?", and the dialect's way to run a migration.
 */
#ifndef STRATA_CATALOG_CATALOG_INT_H
#define STRATA_CATALOG_CATALOG_INT_H

#include <pthread.h>
#include <stdarg.h>

#include "catalog/catalog.h"
#include "util/error.h"

/* Migration files, embedded at build time by tools/embed-migrations.sh from
 * src/catalog/migrations/DIALECT/NNNN_name.sql, sorted by version; the table
 * ends with an all-NULL entry.  DIALECT is a driver's name. */
struct catalog_migration {
  const char *dialect, *version, *sql;
};
extern const struct catalog_migration catalog_migrations[];

/* Raw access to the database, for maintenance tools only (strata
 * migrate-legacy); the hub never uses it.  Statements take parameters as
 * the core's own helpers do: one character of types per "?" or "?N"
 * (s: const char *, NULL binds NULL; I: int64_t; o: int64_t, negative binds
 * NULL).  A query calls fn once per row with the columns as strings (NULL
 * for SQL NULL), which fn must copy; fn returns 0, or -1 to stop with its
 * error set. */
typedef int (*catalog_row_fn) (void *opaque, int ncols, char **vals);
enum catalog_tx { CATALOG_TX_BEGIN, CATALOG_TX_COMMIT, CATALOG_TX_ROLLBACK };

/* Open without applying migrations. */
struct catalog *catalog_open_raw (const char *url, const char *password_file);
/* Apply the pending migrations now. */
int catalog_raw_migrate (struct catalog *cat);
/* Rows changed, or -1. */
int catalog_raw_exec (struct catalog *cat, const char *sql, const char *types, ...);
int catalog_raw_query (struct catalog *cat, catalog_row_fn fn, void *opaque,
                       const char *sql, const char *types, ...);
/* Begin a write transaction (with the backend's write lock), commit it or
 * roll it back. */
int catalog_raw_tx (struct catalog *cat, enum catalog_tx what);

/* --- The driver interface --------------------------------------------- */

/* One bound parameter, parsed by the core from its type characters:
 *   s  const char *  (NULL binds NULL)
 *   e  const char *  (NULL binds '', for NOT NULL DEFAULT '' columns)
 *   i  int
 *   I  int64_t
 *   o  int64_t       (negative binds NULL: the "absent" of catalog.h)
 * text tells which of s and v holds the value. */
struct db_arg {
  bool text, null;
  const char *s;
  int64_t v;
};
#define DB_MAX_ARGS 16

/* A prepared statement: each driver's own struct embeds this first. */
struct db_stmt {
  const struct catalog_driver *drv;
};

/* A driver.  Every function that fails sets the thread's error in the
 * category the database's error calls for (a constraint: ERR_CONFLICT; a
 * lock not granted, a lost server: ERR_UNAVAILABLE; a full disk:
 * ERR_NO_SPACE) and remembers whether the failure allows running the
 * transaction again (see again).  The core holds cat->lock around every
 * call. */
struct catalog_driver {
  const char *name;             /* "sqlite", "mariadb": the backend and
                                 * its migrations folder */

  /* Prepare sql, in which "?N" names argument N (1-based) and "?" the
   * next one, with args bound.  NULL on error. */
  struct db_stmt *(*prepare) (struct catalog *, const char *sql,
                              const struct db_arg *args, size_t nargs);
  /* Run the statement (the first time) and move to its next row: 1 for a
   * row, 0 when done, -1 on error.  A driver keeps a statement's rows
   * while another statement runs (the core reads a job's disks while
   * stepping through jobs). */
  int (*step) (struct db_stmt *);
  /* Column col of the current row as text in *val (NULL for SQL NULL),
   * valid until the next step; -1 when memory ran out. */
  int (*column) (struct db_stmt *, int col, const char **val);
  int (*ncols) (struct db_stmt *);
  /* After the last step: the rows the statement changed (an UPDATE counts
   * the rows it matched), and the id an INSERT gave its row. */
  int64_t (*changes) (struct db_stmt *);
  int64_t (*last_insert_id) (struct db_stmt *);
  void (*finalize) (struct db_stmt *);

  /* Begin a transaction: for write, with the catalog-wide write lock taken
   * before the first read, so that what it checks still holds when it
   * writes, against every other process; else a read of one snapshot. */
  int (*begin) (struct catalog *, bool write);
  /* Commit; on failure, roll back and fail. */
  int (*commit) (struct catalog *);
  /* Roll back after a failure, keeping the error that caused it. */
  void (*rollback) (struct catalog *);
  /* After attempt (0, 1, ...) of a transaction failed: true when it may
   * run once more from its start (nothing was applied; the driver has
   * reconnected if it had to). */
  bool (*again) (struct catalog *, int attempt);

  /* Migrations: the schema_migrations table's DDL; whether a migration
   * runs in one write transaction with its schema_migrations row (DDL is
   * transactional) or, if not, must be re-runnable; what to do around the
   * whole run (take a lock, switch foreign keys off) and after it; and
   * running one migration's SQL, a script of several statements. */
  const char *migrations_ddl;
  bool ddl_in_tx;
  int (*migrate_enter) (struct catalog *);
  void (*migrate_leave) (struct catalog *);
  int (*script) (struct catalog *, const struct catalog_migration *);

  void (*close) (struct catalog *);
};

/* Every driver's catalog embeds this first. */
struct catalog {
  const struct catalog_driver *drv;
  pthread_mutex_t lock;         /* held for each whole operation */
};

/* Set the thread's error and return -1: "return catalog_fail (...);" */
int catalog_fail (enum error_category cat, const char *fmt, ...)
  __attribute__((format (printf, 2, 3)));
/* Set the thread's error for memory that ran out. */
void catalog_oom (void);

/* Set up and tear down the part of a catalog that the core owns. */
void catalog_base_init (struct catalog *cat, const struct catalog_driver *drv);
void catalog_base_destroy (struct catalog *cat);
/* Apply the pending migrations of cat's dialect (the caller holds no lock). */
int catalog_migrate (struct catalog *cat);

/* Driver constructors: open the database named by the part of the URL
 * after the scheme, migrate it unless told not to, return the embedded
 * struct catalog. */
struct catalog *catalog_sqlite_open (const char *path, bool migrate);
/* rest: "[USER[:PASS]@]HOST[:PORT]/DB[?socket=PATH]"; password_file may be
 * NULL (then $STRATA_DB_PASSWORD, then the URL's password). */
struct catalog *catalog_mariadb_open (const char *rest, const char *password_file,
                                      bool migrate);

#endif
