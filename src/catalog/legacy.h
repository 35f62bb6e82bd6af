/* catalog/legacy.h - `strata migrate-legacy`: upgrade a catalog that still
 * has the legacy flat backup_jobs layout (per-disk jobs with disk_id,
 * change_id and repository_path beside their parent rows, no contexts) to
 * the context architecture.  See catalog/legacy.c and docs/SCHEMA.md. */
#ifndef STRATA_CATALOG_LEGACY_H
#define STRATA_CATALOG_LEGACY_H

#include <stdbool.h>
#include <stdio.h>

/* Migrate the catalog at url (password as for catalog_open_auth), printing
 * the evidence to out.  With dry_run nothing is written.  Returns 0 (also
 * when there was nothing to do) or -1 with the error set; on -1 the
 * catalog is as it was. */
int legacy_migrate (const char *url, const char *password_file, bool dry_run, FILE *out);

/* The subcommand: strata migrate-legacy --db URL [--db-password-file FILE]
 * [--dry-run].  Returns the exit status. */
int legacy_command (int argc, char **argv);

#endif
