/* cli/cli.h - command-line front-ends of strata that are neither the hub
 * (`strata serve`, hub/) nor the agent (`strata backup`, `strata restore`,
 * agent/): they parse argv, call a subsystem's C API and print its answer.
 * Each returns the exit status; main.c only dispatches to them. */
#ifndef STRATA_CLI_CLI_H
#define STRATA_CLI_CLI_H

/* strata migrate-legacy --db URL [--db-password-file FILE] [--dry-run]:
 * catalog/legacy.h's migration, and its report as evidence on stdout.
 * 0 on success or nothing to do, 1 on failure (nothing changed), 2 on a
 * usage error. */
int cli_migrate_legacy (int argc, char **argv);

/* strata rebuild-catalog --data-dir DIR [--db URL] [--db-password-file FILE]
 * [--repository DIR]... [--dry-run] [--json]: a lost catalog made again
 * from the manifests in the repositories, with its report on stdout.  0 on
 * success, 1 on failure or refusal (a hub runs on DIR, the catalog holds
 * backups), 2 on a usage error. */
int cli_rebuild_catalog (int argc, char **argv);

#endif
