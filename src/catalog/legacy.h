/* catalog/legacy.h - the migration of a catalog that still has the legacy
 * flat backup_jobs layout (per-disk jobs with disk_id, change_id and
 * repository_path beside their parent rows, no contexts) to the context
 * architecture.  The command line that drives it is cli/migrate.c; the
 * rules are in catalog/legacy.c and docs/SCHEMA.md. */
#ifndef STRATA_CATALOG_LEGACY_H
#define STRATA_CATALOG_LEGACY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct legacy_options {
  const char *url;              /* the catalog, as for catalog_open_auth */
  const char *password_file;    /* or NULL */
  bool dry_run;                 /* plan and report, write nothing */
};

/* A repository as it is (or would be) migrated. */
struct legacy_repo {
  char *id, *name;
  char *type;                   /* local, nfs or cifs */
  char *folder;                 /* the strata repository path */
  char *origin;                 /* where folder came from, for the evidence */
  bool disabled;                /* enabled = 0 in the legacy catalog */
  bool immutable;               /* is_immutable = 1 in the legacy catalog */
  char *min_retention_days;     /* the legacy figure, or NULL */
};

/* A context created, with the jobs it received. */
struct legacy_context {
  char *id, *vm, *repo;
  int64_t jobs, ok, failed;
};

/* One disk of one context: how its rows were chained. */
struct legacy_chain {
  char *vm;
  int64_t disk;
  size_t rows, full, incremental, failed;
  char *last_change_id, *last_job;    /* NULL when nothing completed */
};

/* A legacy row named in the evidence, and what became of it. */
struct legacy_row {
  char *id, *why;
};

enum legacy_outcome {
  LEGACY_NOTHING_TO_DO,         /* no legacy backup_jobs table */
  LEGACY_ALREADY_MIGRATED,      /* a previous run committed */
  LEGACY_PLANNED,               /* dry run: the plan, nothing written */
  LEGACY_MIGRATED,              /* committed */
};

/* What a run did or, with dry_run, would do.  Owned by the caller, who
 * clears it with legacy_report_clear. */
struct legacy_report {
  enum legacy_outcome outcome;
  bool resumed;                 /* finished an interrupted run */
  const char *source;           /* the legacy jobs table read */
  size_t rows, parents;         /* legacy job rows, of which parent rows */
  size_t jobs, disks;           /* jobs linked, backup_disks rows written */
  char *kept_aside;             /* the legacy tables, renamed: "legacy_backup_jobs, ..." */
  size_t placeholders;          /* parent rows whose repository_path was set */
  char *placeholder_example;    /* one such path, e.g. /multi-disk-parent */
  struct legacy_repo *repos;
  size_t n_repos;
  struct legacy_context *contexts;
  size_t n_contexts;
  struct legacy_chain *chains;
  size_t n_chains;
  struct legacy_row *cancelled;       /* pending rows, migrated as cancelled */
  size_t n_cancelled;
  struct legacy_row *not_placed;      /* rows left behind, with the reason */
  size_t n_not_placed;
};

/* Migrate the catalog named by opts, filling *report (zeroed first).
 * Returns 0 (also when there was nothing to do) or -1 with the error set,
 * naming the row at fault; on -1 the catalog is as it was and *report
 * holds nothing to print. */
int legacy_migrate (const struct legacy_options *opts, struct legacy_report *report);
void legacy_report_clear (struct legacy_report *report);

/* The folder of a legacy repository of type (local, nfs or cifs) from its
 * config JSON: "path" for local, "mount_point" for nfs and cifs (the hub
 * sees a mounted share as a folder).  Returns 0 with *folder (caller
 * frees) and, in *origin (caller frees), a line saying where it came from;
 * or -1 with ERR_INVALID set when the JSON does not parse, is not an
 * object, lacks the key or names no absolute folder. */
int legacy_repo_folder (const char *type, const char *config, char **folder, char **origin);

#endif
