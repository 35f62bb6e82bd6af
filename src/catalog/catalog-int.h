/* catalog/catalog-int.h - what the catalog's backends share; not for use
 * outside src/catalog/. */
#ifndef STRATA_CATALOG_CATALOG_INT_H
#define STRATA_CATALOG_CATALOG_INT_H

#include "catalog/catalog.h"

/* Migration files, embedded at build time by tools/embed-migrations.sh from
 * src/catalog/migrations/DIALECT/NNNN_name.sql, sorted by version; the table
 * ends with an all-NULL entry. */
struct catalog_migration {
  const char *dialect, *version, *sql;
};
extern const struct catalog_migration catalog_migrations[];

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
  int (*changeid_get) (struct catalog *, const char *, int, const char *, struct cat_disk *);

  int (*disk_files) (struct catalog *, struct cat_disk **, char ***, size_t *);
  int (*running_disks) (struct catalog *, struct cat_disk **, size_t *);
  int (*disk_lost) (struct catalog *, int64_t, const char *);
};

/* Every backend's struct embeds this first. */
struct catalog {
  const struct catalog_ops *ops;
};

/* Backend constructors: open the database named by the part of the URL
 * after the scheme, migrate it, return the embedded struct catalog. */
struct catalog *catalog_sqlite_open (const char *path);

#endif
