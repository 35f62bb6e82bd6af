/* catalog/catalog-int.h - what the catalog's backends share; not for use
 * outside src/catalog/. */
#ifndef STRATA_CATALOG_CATALOG_INT_H
#define STRATA_CATALOG_CATALOG_INT_H

#include <stdarg.h>

#include "catalog/catalog.h"

/* Migration files, embedded at build time by tools/embed-migrations.sh from
 * src/catalog/migrations/DIALECT/NNNN_name.sql, sorted by version; the table
 * ends with an all-NULL entry. */
struct catalog_migration {
  const char *dialect, *version, *sql;
};
extern const struct catalog_migration catalog_migrations[];

/* Raw access to the database, for maintenance tools only (strata
 * migrate-legacy); the hub never uses it.  Statements take parameters as
 * the backends' own helpers do: one character of types per "?" or "?N"
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

/* One backend.  Each member has the meaning and contract of the public
 * catalog_* function of the same name (catalog/catalog.h). */
struct catalog_ops {
  const char *name;
  void (*close) (struct catalog *cat);

  int (*repo_insert) (struct catalog *, const struct cat_repository *);
  int (*repo_get) (struct catalog *, const char *, struct cat_repository *);
  int (*repo_list) (struct catalog *, struct cat_repository **, size_t *);
  int (*repo_delete) (struct catalog *, const char *);

  int (*vm_put) (struct catalog *, const struct cat_vm *, bool *);
  int (*vm_get) (struct catalog *, const char *, struct cat_vm *);
  int (*vm_list) (struct catalog *, struct cat_vm **, size_t *);
  int (*vm_delete) (struct catalog *, const char *);

  int (*context_get) (struct catalog *, const char *, struct cat_context *);
  int (*context_find) (struct catalog *, const char *, const char *, struct cat_context *);
  int (*context_list) (struct catalog *, const char *, struct cat_context **, size_t *);
  int (*context_delete) (struct catalog *, const char *, bool, struct cat_disk **, size_t *);

  int (*backup_plan) (struct catalog *, const char *, const char *, size_t,
                      const int *, struct cat_disk *, bool *);
  int (*backup_insert) (struct catalog *, struct cat_job *, const struct cat_vm *);
  int (*backup_get) (struct catalog *, const char *, struct cat_job *);
  int (*backup_list) (struct catalog *, const struct cat_job_filter *,
                      struct cat_job **, size_t *, int64_t *);
  int (*disk_complete) (struct catalog *, const char *, int, const char *, int64_t,
                        const char *, struct cat_job *);
  int (*backup_end) (struct catalog *, const char *, const char *, int, const char *,
                     struct cat_disk **, size_t *);
  int (*backup_delete) (struct catalog *, const char *, bool, struct cat_disk **, size_t *);
  int (*backup_finish) (struct catalog *, const char *, struct cat_job *);
  int (*backup_delete_plan) (struct catalog *, const char *, bool, char ***);
  int (*changeid_get) (struct catalog *, const char *, int, const char *, struct cat_disk *);

  int (*disk_files) (struct catalog *, struct cat_disk **, char ***, size_t *);
  int (*running_disks) (struct catalog *, struct cat_disk **, size_t *);
  int (*disk_lost) (struct catalog *, int64_t, const char *);

  /* Raw access for maintenance (catalog/legacy.c), see catalog_raw_*. */
  int (*raw_exec) (struct catalog *, const char *sql, const char *types, va_list ap);
  int (*raw_query) (struct catalog *, const char *sql, const char *types, va_list ap,
                    catalog_row_fn fn, void *opaque);
  int (*raw_tx) (struct catalog *, enum catalog_tx what);
  int (*raw_migrate) (struct catalog *);
};

/* Every backend's struct embeds this first. */
struct catalog {
  const struct catalog_ops *ops;
};

/* Backend constructors: open the database named by the part of the URL
 * after the scheme, migrate it, return the embedded struct catalog. */
struct catalog *catalog_sqlite_open (const char *path, bool migrate);
/* rest: "[USER[:PASS]@]HOST[:PORT]/DB[?socket=PATH]"; password_file may be
 * NULL (then $STRATA_DB_PASSWORD, then the URL's password). */
struct catalog *catalog_mariadb_open (const char *rest, const char *password_file,
                                      bool migrate);

#endif
