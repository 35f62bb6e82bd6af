/* cli/migrate.c - `strata migrate-legacy`: the command line of the legacy
 * catalog migration (catalog/legacy.c), and the evidence it prints.
 *
 * The evidence is the seed's Phase 1 report, one fact a line, so that an
 * operator (and tests/integration/test-migrate-legacy.sh) can check counts
 * with grep: repositories and their folders, contexts created, jobs linked,
 * disks migrated and each disk's chain, pending jobs cancelled, parent-row
 * placeholders ignored, rows not placed with their reasons. */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>

#include "catalog/legacy.h"
#include "cli/cli.h"
#include "util/error.h"

static void
print_repos (FILE *out, const struct legacy_report *rep)
{
  fprintf (out, "repositories: %zu\n", rep->n_repos);
  for (size_t i = 0; i < rep->n_repos; i++) {
    const struct legacy_repo *r = &rep->repos[i];

    fprintf (out, "  %s \"%s\" %s: %s (%s)\n", r->id, r->name, r->type, r->folder, r->origin);
    if (r->disabled)
      fprintf (out, "    disabled in the legacy catalog (enabled = 0): strata has no disabled"
               " repository, so new backups can be started in it\n");
    if (r->immutable)
      fprintf (out, "    immutable in the legacy catalog (is_immutable = 1, min_retention_days"
               " %s): strata enforces neither immutability nor a minimum retention\n",
               r->min_retention_days ? r->min_retention_days : "not set");
  }
}

static void
print_report (FILE *out, const struct legacy_report *rep)
{
  const char *zero = "contexts created: 0\njobs linked: 0\ndisks migrated: 0\n"
                     "rows not placed: 0\n";

  if (rep->outcome == LEGACY_NOTHING_TO_DO) {
    fprintf (out, "nothing to do: the catalog has no legacy backup_jobs table\n%s", zero);
    return;
  }
  if (rep->outcome == LEGACY_ALREADY_MIGRATED) {
    fprintf (out, "nothing to do: already migrated (the legacy rows are kept in"
             " legacy_backup_jobs)\n%s", zero);
    return;
  }
  if (rep->resumed)
    fprintf (out, "resuming an interrupted migration\n");
  fprintf (out, "legacy table %s: %zu rows (%zu parent, %zu per-disk), %zu repositories\n",
           rep->source, rep->rows, rep->parents, rep->rows - rep->parents, rep->n_repos);
  print_repos (out, rep);
  fprintf (out, "contexts created: %zu\n", rep->n_contexts);
  for (size_t i = 0; i < rep->n_contexts; i++) {
    const struct legacy_context *c = &rep->contexts[i];
    fprintf (out, "  %s: vm %s, repository %s, %" PRId64 " jobs (%" PRId64 " completed,"
             " %" PRId64 " failed)\n", c->id, c->vm, c->repo, c->jobs, c->ok, c->failed);
  }
  fprintf (out, "jobs linked: %zu\n", rep->jobs);
  fprintf (out, "disks migrated: %zu\n", rep->disks);
  for (size_t i = 0; i < rep->n_chains; i++) {
    const struct legacy_chain *c = &rep->chains[i];
    fprintf (out, "  %s disk %" PRId64 ": %zu rows, chain of %zu (%zu full, %zu"
             " incremental), %zu failed; last change id %s (%s)\n",
             c->vm, c->disk, c->rows, c->full + c->incremental, c->full, c->incremental,
             c->failed, c->last_change_id ? c->last_change_id : "-",
             c->last_job ? c->last_job : "-");
  }
  fprintf (out, "pending jobs cancelled: %zu\n", rep->n_cancelled);
  for (size_t i = 0; i < rep->n_cancelled; i++)
    fprintf (out, "  %s: %s\n", rep->cancelled[i].id, rep->cancelled[i].why);
  fprintf (out, "parent rows with a placeholder repository_path: %zu%s%s%s\n",
           rep->placeholders, rep->placeholder_example ? " (e.g. " : "",
           rep->placeholder_example ? rep->placeholder_example : "",
           rep->placeholder_example ? "), not files: never read" : "");
  fprintf (out, "rows not placed: %zu\n", rep->n_not_placed);
  for (size_t i = 0; i < rep->n_not_placed; i++)
    fprintf (out, "  %s: %s\n", rep->not_placed[i].id, rep->not_placed[i].why);
  if (rep->outcome == LEGACY_PLANNED)
    fprintf (out, "dry run: nothing was written (the legacy tables would be kept as %s)\n",
             rep->kept_aside);
  else
    fprintf (out, "committed; the legacy rows stay in %s\n", rep->kept_aside);
}

int
cli_migrate_legacy (int argc, char **argv)
{
  static const struct option opts[] = {
    { "db", required_argument, NULL, 'd' },
    { "db-password-file", required_argument, NULL, 'p' },
    { "dry-run", no_argument, NULL, 'n' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct legacy_options o = { 0 };
  struct legacy_report rep;
  int c;

  optind = 1;
  opterr = 0;
  while ((c = getopt_long (argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'd': o.url = optarg; break;
    case 'p': o.password_file = optarg; break;
    case 'n': o.dry_run = true; break;
    case 'h':
      printf ("Usage: strata migrate-legacy --db URL [--db-password-file FILE] [--dry-run]\n"
              "Upgrade a catalog with the legacy flat backup_jobs table (per-disk rows\n"
              "with disk_id, change_id, repository_path) and its backup_repositories\n"
              "(local, nfs, cifs: the folder is config's path or mount_point) to\n"
              "repositories, contexts, jobs and backup_disks, in one transaction, and\n"
              "print what was done.  Pending jobs become cancelled ones.  A second run\n"
              "changes nothing.  Stop every hub and the old system first.\n"
              "URL: sqlite:///path.db or mariadb://USER@HOST[:PORT]/DB[?socket=PATH]\n"
              "(password: FILE's first line, else $STRATA_DB_PASSWORD).\n"
              "Exit status: 0 on success or nothing to do, 1 on failure (nothing\n"
              "changed), 2 on a usage error.\n");
      return 0;
    default:
      fprintf (stderr, "strata migrate-legacy: unknown or incomplete option '%s'\n",
               argv[optind - 1]);
      return 2;
    }
  }
  if (optind < argc || o.url == NULL) {
    fprintf (stderr, "strata migrate-legacy: %s (see strata migrate-legacy --help)\n",
             o.url ? "unexpected argument" : "--db URL is required");
    return 2;
  }
  if (legacy_migrate (&o, &rep) == -1) {
    fprintf (stderr, "strata migrate-legacy: %s\n", error_message ());
    return 1;
  }
  print_report (stdout, &rep);
  legacy_report_clear (&rep);
  return 0;
}
