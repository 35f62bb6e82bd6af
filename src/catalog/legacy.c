/* catalog/legacy.c - `strata migrate-legacy`: the seed's Phase 1 migration,
 * from the legacy flat backup_jobs table to contexts, jobs and backup_disks.
 *
 * THE LEGACY LAYOUT
 *
 * backup_jobs (id, vm_name, repository_id, disk_id, change_id,
 * repository_path, bytes_transferred, status, created_at, completed_at
 * [, backup_type]): a parent row per backup run (disk_id NULL) and a row per
 * disk (disk_id set) that the old code matched to its parent by time; and
 * backup_repositories (id, path).  No contexts.
 *
 * WHAT IT BECOMES
 *
 * - one context per (vm_name, repository_id);
 * - every row a job of its context, under its own id (a per-disk row is a
 *   job of one disk: it is never matched to a parent by time);
 * - every per-disk row also a backup_disks row that keeps its change id, its
 *   QCOW2 path (relative to the repository root, as strata keeps paths),
 *   its bytes and its status;
 * - per context and disk index, the rows in completion order (completed_at,
 *   then created_at, then id) get increasing backup_disks ids, and each
 *   completed row after the first is an incremental whose parent_disk_id is
 *   the completed row before it: the chain is explicit from then on, and
 *   "the latest completed disk" (the highest id) is the last one completed.
 *   A failed row keeps no file and is never a parent;
 * - a parent row's backup_type is the legacy column's when there is one;
 *   without it, "incremental" when a disk of its context had completed
 *   before it was created, else "full" (a label: no chain depends on it).
 *
 * Rows that cannot be placed stay behind, each reported with its reason: an
 * unknown repository, a path outside the repository's root, a row still
 * running, a timestamp or id that is not one.  Rows the schema refuses
 * (an unknown status, negative bytes, ...) fail the whole migration.
 *
 * ONE TRANSACTION, ON BOTH BACKENDS
 *
 * 1. backup_jobs and backup_repositories are renamed legacy_backup_jobs and
 *    legacy_backup_repositories (one statement on MariaDB, one transaction
 *    on SQLite), 2. the strata schema is created by the ordinary migrations,
 *    3. every row is written in ONE transaction.  MariaDB commits DDL by
 *    itself, so 1 and 2 cannot be in that transaction: when 3 fails (it
 *    rolls back whole), the new tables, still empty, are dropped and the
 *    legacy tables renamed back, so the catalog is exactly as it was.  If the
 *    process dies between 1 and the COMMIT of 3, the next run finds the
 *    legacy tables renamed and the new ones empty, and finishes the job.
 *    The legacy rows stay in legacy_backup_jobs: a second run sees no legacy
 *    backup_jobs and changes nothing.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/catalog-int.h"
#include "catalog/legacy.h"
#include "util/array.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

struct lrow {
  char *id, *vm_name, *repository_id, *change_id, *path, *status;
  char *created_at, *completed_at, *backup_type;
  int64_t disk_id, bytes;       /* disk_id -1 for a parent row */
  char created[32], completed[32];
  bool has_completed;
  char *why;                    /* not placed: the reason */
  int ctx;                      /* index into contexts */
  char *rel;                    /* qcow2 path relative to the repository */
  int64_t disk_row;             /* backup_disks.id */
  int64_t parent;               /* parent_disk_id or -1 */
  const char *type;             /* the job's backup_type */
};

struct lrepo {
  char *id, *path;
};

struct lctx {
  char *vm, *repo, *id;
  const char *created_at;
  int64_t jobs, ok, failed;
  int64_t last_row;             /* the row holding the highest completed disk id */
};

struct plan {
  struct lrow *rows;
  size_t n_rows, cap_rows;
  struct lrepo *repos;
  size_t n_repos, cap_repos;
  struct lctx *ctxs;
  size_t n_ctxs, cap_ctxs;
  bool has_type;
};

static void
plan_free (struct plan *p)
{
  for (size_t i = 0; i < p->n_rows; i++) {
    struct lrow *r = &p->rows[i];
    free (r->id); free (r->vm_name); free (r->repository_id); free (r->change_id);
    free (r->path); free (r->status); free (r->created_at); free (r->completed_at);
    free (r->backup_type); free (r->why); free (r->rel);
  }
  for (size_t i = 0; i < p->n_repos; i++) {
    free (p->repos[i].id);
    free (p->repos[i].path);
  }
  for (size_t i = 0; i < p->n_ctxs; i++) {
    free (p->ctxs[i].vm);
    free (p->ctxs[i].repo);
    free (p->ctxs[i].id);
  }
  free (p->rows);
  free (p->repos);
  free (p->ctxs);
}

static char *
dup_or_null (const char *s)
{
  return s ? strdup (s) : NULL;
}

/* ------------------------------------------------------------------------
 * Looking at the database
 */

static int
one_row (void *opaque, int ncols, char **vals)
{
  *(int *) opaque = 1;
  return 0;
}

static bool mariadb_dialect (struct catalog *cat)
{
  return strcmp (catalog_backend_name (cat), "mariadb") == 0;
}

/* 1 if the table exists, 0 if not, -1 on error. */
static int
table_exists (struct catalog *cat, const char *table)
{
  int found = 0;

  if (catalog_raw_query (cat, one_row, &found, mariadb_dialect (cat)
                         ? "SELECT 1 FROM information_schema.tables"
                           " WHERE table_schema = DATABASE() AND table_name = ?"
                         : "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                         "s", table) == -1)
    return -1;
  return found;
}

static int
column_exists (struct catalog *cat, const char *table, const char *column)
{
  int found = 0;

  if (catalog_raw_query (cat, one_row, &found, mariadb_dialect (cat)
                         ? "SELECT 1 FROM information_schema.columns"
                           " WHERE table_schema = DATABASE() AND table_name = ?"
                           " AND column_name = ?"
                         : "SELECT 1 FROM pragma_table_info(?) WHERE name = ?",
                         "ss", table, column) == -1)
    return -1;
  return found;
}

static int
read_int (void *opaque, int ncols, char **vals)
{
  *(int64_t *) opaque = vals[0] ? strtoll (vals[0], NULL, 10) : -1;
  return 0;
}

static int64_t
count_rows (struct catalog *cat, const char *table)
{
  char sql[128];
  int64_t n = -1;

  snprintf (sql, sizeof sql, "SELECT count(*) FROM %s", table);
  if (catalog_raw_query (cat, read_int, &n, sql, "") == -1)
    return -1;
  return n;
}

static int
read_repo (void *opaque, int ncols, char **vals)
{
  struct plan *p = opaque;
  struct lrepo *r = array_push ((void **) &p->repos, p->n_repos, &p->cap_repos, sizeof *r);

  if (r == NULL)
    return -1;
  p->n_repos++;
  r->id = dup_or_null (vals[0]);
  r->path = dup_or_null (vals[1]);
  return 0;
}

static int
read_row (void *opaque, int ncols, char **vals)
{
  struct plan *p = opaque;
  struct lrow *r = array_push ((void **) &p->rows, p->n_rows, &p->cap_rows, sizeof *r);

  if (r == NULL)
    return -1;
  p->n_rows++;
  r->id = dup_or_null (vals[0]);
  r->vm_name = dup_or_null (vals[1]);
  r->repository_id = dup_or_null (vals[2]);
  r->disk_id = vals[3] ? strtoll (vals[3], NULL, 10) : -1;
  if (vals[3] && r->disk_id < 0)
    r->disk_id = -2;            /* a negative disk_id: not placed */
  r->change_id = dup_or_null (vals[4]);
  r->path = dup_or_null (vals[5]);
  r->bytes = vals[6] ? strtoll (vals[6], NULL, 10) : 0;
  r->status = dup_or_null (vals[7]);
  r->created_at = dup_or_null (vals[8]);
  r->completed_at = dup_or_null (vals[9]);
  r->backup_type = ncols > 10 ? dup_or_null (vals[10]) : NULL;
  r->parent = -1;
  r->ctx = -1;
  return 0;
}

/* ------------------------------------------------------------------------
 * Planning
 */

/* "YYYY-MM-DD HH:MM:SS[.f...]" or "YYYY-MM-DDTHH:MM:SS[.f...][Z]" into the
 * catalog's "YYYY-MM-DDTHH:MM:SS.mmmZ".  false when s is neither. */
static bool
norm_time (const char *s, char out[32])
{
  char ms[4] = "000";
  size_t i;

  if (s == NULL || strlen (s) < 19)
    return false;
  for (i = 0; i < 19; i++) {
    bool digit = s[i] >= '0' && s[i] <= '9';
    if (i == 4 || i == 7 ? s[i] != '-' : i == 10 ? (s[i] != ' ' && s[i] != 'T')
        : i == 13 || i == 16 ? s[i] != ':' : !digit)
      return false;
  }
  if (s[19] == '.') {
    for (i = 20; s[i] >= '0' && s[i] <= '9'; i++)
      if (i < 23)
        ms[i - 20] = s[i];
  }
  else
    i = 19;
  if (s[i] == 'Z')
    i++;
  if (s[i] != '\0')
    return false;
  snprintf (out, 32, "%.10sT%.8s.%sZ", s, s + 11, ms);
  return true;
}

static int __attribute__((format (printf, 2, 3)))
set_why (struct lrow *r, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (r->why)
    return 0;
  va_start (ap, fmt);
  n = vasprintf (&r->why, fmt, ap);
  va_end (ap);
  if (n == -1) {
    r->why = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "migrate-legacy");
    return -1;
  }
  return 0;
}

/* The path of r relative to the repository root, or NULL (r->why set)
 * when it lies outside. */
static int
place_path (struct lrow *r, const struct lrepo *repo)
{
  const char *rel = r->path;
  size_t rootlen = strlen (repo->path);

  while (rootlen > 1 && repo->path[rootlen - 1] == '/')
    rootlen--;
  if (rel == NULL || *rel == '\0')
    return set_why (r, "no repository_path");
  if (*rel == '/') {
    if (strncmp (rel, repo->path, rootlen) != 0 || rel[rootlen] != '/')
      return set_why (r, "repository_path %s is outside the repository's root", r->path);
    rel += rootlen;
    while (*rel == '/')
      rel++;
  }
  if (*rel == '\0' || strcmp (rel, "..") == 0 || strncmp (rel, "../", 3) == 0 ||
      strstr (rel, "/../") || (strlen (rel) >= 3 && strcmp (rel + strlen (rel) - 3, "/..") == 0))
    return set_why (r, "repository_path %s is outside the repository's root", r->path);
  if ((r->rel = strdup (rel)) == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "migrate-legacy");
    return -1;
  }
  return 0;
}

/* Completion order: completed rows by completed_at, then created_at, id. */
static const struct plan *sort_plan;
static int
cmp_completion (const void *a, const void *b)
{
  const struct lrow *x = &sort_plan->rows[*(const size_t *) a];
  const struct lrow *y = &sort_plan->rows[*(const size_t *) b];
  int c;

  if (x->has_completed != y->has_completed)
    return x->has_completed ? -1 : 1;
  if (x->has_completed && (c = strcmp (x->completed, y->completed)) != 0)
    return c;
  if ((c = strcmp (x->created, y->created)) != 0)
    return c;
  return strcmp (x->id, y->id);
}

static int
plan_rows (struct plan *p)
{
  CLEANUP_FREE size_t *order = NULL;
  size_t n_disks = 0;
  int64_t next_id = 1;

  for (size_t i = 0; i < p->n_rows; i++) {
    struct lrow *r = &p->rows[i];
    const struct lrepo *repo = NULL;

    if (r->id == NULL || !id_valid (r->id)) {
      if (set_why (r, "id \"%s\" is not a valid strata id", r->id) == -1)
        return -1;
      continue;
    }
    if (r->vm_name == NULL || id_check_vm_name (r->vm_name) == -1) {
      if (set_why (r, "vm_name \"%s\" is not a valid VM name", r->vm_name) == -1)
        return -1;
      continue;
    }
    for (size_t k = 0; r->repository_id && k < p->n_repos; k++)
      if (p->repos[k].id && strcmp (p->repos[k].id, r->repository_id) == 0)
        repo = &p->repos[k];
    if (repo == NULL || repo->path == NULL || repo->path[0] != '/') {
      if (set_why (r, "repository \"%s\" is not in backup_repositories (with an absolute"
                   " path)", r->repository_id) == -1)
        return -1;
      continue;
    }
    if (!norm_time (r->created_at, r->created)) {
      if (set_why (r, "created_at \"%s\" is not a timestamp", r->created_at) == -1)
        return -1;
      continue;
    }
    r->has_completed = r->completed_at != NULL;
    if (r->has_completed && !norm_time (r->completed_at, r->completed)) {
      if (set_why (r, "completed_at \"%s\" is not a timestamp", r->completed_at) == -1)
        return -1;
      continue;
    }
    if (r->status && (strcmp (r->status, "running") == 0 ||
                      strcmp (r->status, "pending") == 0)) {
      if (set_why (r, "still %s in the legacy catalog (finish or fail it with the old"
                   " system first)", r->status) == -1)
        return -1;
      continue;
    }
    if (r->disk_id == -2) {
      if (set_why (r, "negative disk_id") == -1)
        return -1;
      continue;
    }
    if (r->disk_id >= 0) {
      if (r->status && strcmp (r->status, "completed") == 0 && place_path (r, repo) == -1)
        return -1;
      if (r->why)
        continue;
      n_disks++;
    }
    /* Its context. */
    for (size_t k = 0; k < p->n_ctxs; k++)
      if (strcmp (p->ctxs[k].vm, r->vm_name) == 0 &&
          strcmp (p->ctxs[k].repo, r->repository_id) == 0)
        r->ctx = (int) k;
    if (r->ctx < 0) {
      struct lctx *c = array_push ((void **) &p->ctxs, p->n_ctxs, &p->cap_ctxs, sizeof *c);
      if (c == NULL)
        return -1;
      c->vm = strdup (r->vm_name);
      c->repo = strdup (r->repository_id);
      c->id = id_new ("ctx-backup", r->vm_name);
      c->last_row = -1;
      if (c->vm == NULL || c->repo == NULL || c->id == NULL) {
        error_set_errno (ERR_INTERNAL, ENOMEM, "migrate-legacy");
        return -1;
      }
      r->ctx = (int) p->n_ctxs++;
    }
    {
      struct lctx *c = &p->ctxs[r->ctx];
      c->jobs++;
      if (c->created_at == NULL || strcmp (r->created, c->created_at) < 0)
        c->created_at = r->created;
      if (r->status && strcmp (r->status, "completed") == 0)
        c->ok++;
      else if (r->status && (strcmp (r->status, "failed") == 0 ||
                             strcmp (r->status, "cancelled") == 0))
        c->failed++;
    }
  }

  /* The per-disk rows in completion order: their ids, their chains. */
  order = calloc (n_disks ? n_disks : 1, sizeof *order);
  if (order == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "migrate-legacy");
    return -1;
  }
  n_disks = 0;
  for (size_t i = 0; i < p->n_rows; i++)
    if (!p->rows[i].why && p->rows[i].disk_id >= 0)
      order[n_disks++] = i;
  sort_plan = p;
  qsort (order, n_disks, sizeof *order, cmp_completion);
  for (size_t k = 0; k < n_disks; k++) {
    struct lrow *r = &p->rows[order[k]];
    bool completed = r->status && strcmp (r->status, "completed") == 0;
    int64_t last = -1;

    r->disk_row = next_id++;
    /* The last completed row of the same context and disk index. */
    for (size_t m = 0; m < k; m++) {
      const struct lrow *o = &p->rows[order[m]];
      if (o->ctx == r->ctx && o->disk_id == r->disk_id && o->status &&
          strcmp (o->status, "completed") == 0)
        last = o->disk_row;
    }
    r->parent = last;
    r->type = last >= 0 ? "incremental" : "full";
    if (completed)
      p->ctxs[r->ctx].last_row = (int64_t) order[k];
  }
  /* Parent rows: the legacy type, or the label rule (see the top). */
  for (size_t i = 0; i < p->n_rows; i++) {
    struct lrow *r = &p->rows[i];
    bool before = false;

    if (r->why || r->disk_id >= 0)
      continue;
    if (p->has_type && r->backup_type) {
      r->type = r->backup_type;
      continue;
    }
    for (size_t k = 0; k < n_disks; k++) {
      const struct lrow *o = &p->rows[order[k]];
      before |= o->ctx == r->ctx && o->has_completed && o->status &&
                strcmp (o->status, "completed") == 0 && strcmp (o->completed, r->created) < 0;
    }
    r->type = before ? "incremental" : "full";
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Writing
 */

static int
write_all (struct catalog *cat, const struct plan *p)
{
  char now[32];

  id_now (now, sizeof now);
  for (size_t i = 0; i < p->n_repos; i++)
    if (p->repos[i].id && p->repos[i].path &&
        catalog_raw_exec (cat, "INSERT INTO backup_repositories (id, name, type, path,"
                          " created_at) VALUES (?, ?, 'local', ?, ?)", "ssss",
                          p->repos[i].id, p->repos[i].id, p->repos[i].path, now) == -1) {
      error_prefix ("repository %s", p->repos[i].id);
      return -1;
    }
  for (size_t i = 0; i < p->n_ctxs; i++) {
    const struct lctx *c = &p->ctxs[i];
    const struct lrow *last = c->last_row >= 0 ? &p->rows[c->last_row] : NULL;

    if (catalog_raw_exec (cat, "INSERT INTO vm_backup_contexts (context_id, vm_name,"
                          " repository_id, total_backups_run, successful_backups,"
                          " failed_backups, last_backup_id, last_backup_type,"
                          " last_backup_at, created_at, updated_at)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", "sssIIIsssss",
                          c->id, c->vm, c->repo, c->jobs, c->ok, c->failed,
                          last ? last->id : NULL, last ? last->type : NULL,
                          last ? last->completed : NULL, c->created_at, now) == -1) {
      error_prefix ("context of VM %s", c->vm);
      return -1;
    }
  }
  for (size_t i = 0; i < p->n_rows; i++) {
    const struct lrow *r = &p->rows[i];

    if (r->why)
      continue;
    if (catalog_raw_exec (cat, "INSERT INTO backup_jobs (id, vm_backup_context_id,"
                          " vm_name, repository_id, backup_type, status, error,"
                          " created_at, completed_at, driver)"
                          " VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, 'agent')", "ssssssss",
                          r->id, p->ctxs[r->ctx].id, r->vm_name, r->repository_id,
                          r->type, r->status, r->created,
                          r->has_completed ? r->completed : NULL) == -1) {
      error_prefix ("legacy row %s", r->id);
      return -1;
    }
  }
  /* Disks in id order: every parent is written before its children. */
  for (int64_t want = 1; ; want++) {
    const struct lrow *r = NULL;
    bool completed;

    for (size_t i = 0; i < p->n_rows && !r; i++)
      if (!p->rows[i].why && p->rows[i].disk_id >= 0 && p->rows[i].disk_row == want)
        r = &p->rows[i];
    if (r == NULL)
      break;
    completed = r->status && strcmp (r->status, "completed") == 0;
    if (catalog_raw_exec (cat, "INSERT INTO backup_disks (id, vm_backup_context_id,"
                          " backup_job_id, disk_index, size_bytes, backup_type,"
                          " disk_change_id, qcow2_path, parent_disk_id, bytes_transferred,"
                          " status, error, created_at, completed_at)"
                          " VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          "IssIsssoIsss" "s", r->disk_row, p->ctxs[r->ctx].id, r->id,
                          r->disk_id, r->type, r->change_id, completed ? r->rel : NULL,
                          r->parent, r->bytes,
                          r->status && strcmp (r->status, "cancelled") == 0 ? "failed"
                          : r->status,
                          completed ? NULL : "not completed in the legacy catalog",
                          r->created, r->has_completed ? r->completed : NULL) == -1) {
      error_prefix ("legacy row %s (disk %" PRId64 ")", r->id, r->disk_id);
      return -1;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * The evidence
 */

static void
report (FILE *out, const struct plan *p, const char *source, bool dry_run)
{
  size_t parents = 0, disks = 0, jobs = 0, skipped = 0;

  for (size_t i = 0; i < p->n_rows; i++) {
    const struct lrow *r = &p->rows[i];
    if (r->disk_id >= 0 || r->disk_id == -2) {
      if (!r->why)
        disks++;
    }
    else
      parents++;
    if (r->why)
      skipped++;
    else
      jobs++;
  }
  fprintf (out, "legacy table %s: %zu rows (%zu parent, %zu per-disk), %zu repositories\n",
           source, p->n_rows, parents, p->n_rows - parents, p->n_repos);
  fprintf (out, "contexts created: %zu\n", p->n_ctxs);
  for (size_t i = 0; i < p->n_ctxs; i++) {
    const struct lctx *c = &p->ctxs[i];
    fprintf (out, "  %s: vm %s, repository %s, %" PRId64 " jobs (%" PRId64 " completed,"
             " %" PRId64 " failed)\n", c->id, c->vm, c->repo, c->jobs, c->ok, c->failed);
  }
  fprintf (out, "jobs linked: %zu\n", jobs);
  fprintf (out, "disks migrated: %zu\n", disks);
  for (size_t i = 0; i < p->n_ctxs; i++)
    for (int64_t idx = 0; ; idx++) {
      size_t n = 0, full = 0, inc = 0, failed = 0;
      const struct lrow *last = NULL;
      bool more = false;

      for (size_t k = 0; k < p->n_rows; k++) {
        const struct lrow *r = &p->rows[k];
        if (r->why || r->ctx != (int) i || r->disk_id < 0)
          continue;
        more |= r->disk_id > idx;
        if (r->disk_id != idx)
          continue;
        n++;
        if (r->status && strcmp (r->status, "completed") == 0) {
          full += strcmp (r->type, "full") == 0;
          inc += strcmp (r->type, "incremental") == 0;
          if (last == NULL || r->disk_row > last->disk_row)
            last = r;
        }
        else
          failed++;
      }
      if (n)
        fprintf (out, "  %s disk %" PRId64 ": %zu rows, chain of %zu (%zu full, %zu"
                 " incremental), %zu failed; last change id %s (%s)\n",
                 p->ctxs[i].vm, idx, n, full + inc, full, inc, failed,
                 last && last->change_id ? last->change_id : "-", last ? last->id : "-");
      if (!more)
        break;
    }
  fprintf (out, "rows not placed: %zu\n", skipped);
  for (size_t i = 0; i < p->n_rows; i++)
    if (p->rows[i].why)
      fprintf (out, "  %s: %s\n", p->rows[i].id ? p->rows[i].id : "(no id)", p->rows[i].why);
  if (dry_run)
    fprintf (out, "dry run: nothing was written\n");
}

/* ------------------------------------------------------------------------
 * The migration
 */

static const char *const strata_tables[] = {
  "backup_disks", "backup_jobs", "vm_backup_contexts", "vm_disks", "vms",
  "backup_repositories", "catalog_lock", "schema_migrations", NULL
};

static int
rename_legacy (struct catalog *cat, bool back, bool with_repos)
{
  if (mariadb_dialect (cat))
    return catalog_raw_exec (cat, back
      ? (with_repos ? "RENAME TABLE legacy_backup_jobs TO backup_jobs,"
                      " legacy_backup_repositories TO backup_repositories"
                    : "RENAME TABLE legacy_backup_jobs TO backup_jobs")
      : (with_repos ? "RENAME TABLE backup_jobs TO legacy_backup_jobs,"
                      " backup_repositories TO legacy_backup_repositories"
                    : "RENAME TABLE backup_jobs TO legacy_backup_jobs"), "") == -1 ? -1 : 0;
  if (catalog_raw_tx (cat, CATALOG_TX_BEGIN) == -1)
    return -1;
  if (catalog_raw_exec (cat, back ? "ALTER TABLE legacy_backup_jobs RENAME TO backup_jobs"
                        : "ALTER TABLE backup_jobs RENAME TO legacy_backup_jobs", "") == -1 ||
      (with_repos &&
       catalog_raw_exec (cat, back
                         ? "ALTER TABLE legacy_backup_repositories RENAME TO backup_repositories"
                         : "ALTER TABLE backup_repositories RENAME TO legacy_backup_repositories",
                         "") == -1)) {
    catalog_raw_tx (cat, CATALOG_TX_ROLLBACK);
    return -1;
  }
  return catalog_raw_tx (cat, CATALOG_TX_COMMIT);
}

/* After a failed data transaction: drop the new tables, which it left
 * empty, and give the legacy tables their names back. */
static void
undo (struct catalog *cat, bool with_repos)
{
  struct error_saved saved;

  error_save (&saved);
  if (count_rows (cat, "vm_backup_contexts") > 0 || count_rows (cat, "backup_jobs") > 0) {
    log_error ("migrate-legacy: the new tables are not empty; leaving them and"
               " legacy_backup_jobs for inspection");
    error_restore (&saved);
    return;
  }
  if (!mariadb_dialect (cat))
    catalog_raw_exec (cat, "PRAGMA foreign_keys = OFF", "");
  for (const char *const *t = strata_tables; *t; t++) {
    char sql[128];
    snprintf (sql, sizeof sql, "DROP TABLE IF EXISTS %s", *t);
    if (catalog_raw_exec (cat, sql, "") == -1)
      log_error ("migrate-legacy: undo: %s", error_message ());
  }
  if (!mariadb_dialect (cat))
    catalog_raw_exec (cat, "PRAGMA foreign_keys = ON", "");
  if (rename_legacy (cat, true, with_repos) == -1)
    log_error ("migrate-legacy: undo: %s", error_message ());
  error_restore (&saved);
}

int
legacy_migrate (const char *url, const char *password_file, bool dry_run, FILE *out)
{
  struct catalog *cat = catalog_open_raw (url, password_file);
  struct plan p = { 0 };
  const char *source, *repos_table;
  bool fresh, with_repos;
  int f, r = -1;
  char sql[512];

  if (cat == NULL)
    return -1;
  /* Where are we? */
  if ((f = table_exists (cat, "backup_jobs")) == -1)
    goto out;
  fresh = f == 1 && (f = column_exists (cat, "backup_jobs", "disk_id")) == 1;
  if (f == -1)
    goto out;
  if (fresh) {
    source = "backup_jobs";
    repos_table = "backup_repositories";
  }
  else {
    if ((f = table_exists (cat, "legacy_backup_jobs")) == -1)
      goto out;
    if (f == 0) {
      fprintf (out, "nothing to do: the catalog has no legacy backup_jobs table\n"
               "contexts created: 0\njobs linked: 0\ndisks migrated: 0\nrows not placed: 0\n");
      r = 0;
      goto out;
    }
    if ((f = table_exists (cat, "vm_backup_contexts")) == -1)
      goto out;
    if (f == 1 && (count_rows (cat, "vm_backup_contexts") != 0 ||
                   count_rows (cat, "backup_jobs") != 0)) {
      fprintf (out, "nothing to do: already migrated (the legacy rows are kept in"
               " legacy_backup_jobs)\n"
               "contexts created: 0\njobs linked: 0\ndisks migrated: 0\nrows not placed: 0\n");
      r = 0;
      goto out;
    }
    /* Renamed, but the data never committed: finish it. */
    fprintf (out, "resuming an interrupted migration\n");
    source = "legacy_backup_jobs";
    repos_table = "legacy_backup_repositories";
  }
  if ((f = table_exists (cat, repos_table)) == -1)
    goto out;
  with_repos = f == 1;
  if (with_repos) {
    snprintf (sql, sizeof sql, "SELECT id, path FROM %s ORDER BY id", repos_table);
    if (catalog_raw_query (cat, read_repo, &p, sql, "") == -1)
      goto out;
  }
  if ((f = column_exists (cat, source, "backup_type")) == -1)
    goto out;
  p.has_type = f == 1;
  snprintf (sql, sizeof sql, "SELECT id, vm_name, repository_id, disk_id, change_id,"
            " repository_path, bytes_transferred, status, created_at, completed_at%s"
            " FROM %s ORDER BY id", p.has_type ? ", backup_type" : "", source);
  if (catalog_raw_query (cat, read_row, &p, sql, "") == -1 || plan_rows (&p) == -1)
    goto out;
  if (dry_run) {
    report (out, &p, source, true);
    r = 0;
    goto out;
  }

  if (fresh && rename_legacy (cat, false, with_repos) == -1) {
    error_prefix ("renaming the legacy tables");
    goto out;
  }
  if (catalog_raw_migrate (cat) == -1) {
    error_prefix ("creating the strata schema");
    undo (cat, with_repos);
    goto out;
  }
  if (catalog_raw_tx (cat, CATALOG_TX_BEGIN) == -1) {
    undo (cat, with_repos);
    goto out;
  }
  if (write_all (cat, &p) == -1) {
    catalog_raw_tx (cat, CATALOG_TX_ROLLBACK);
    undo (cat, with_repos);
    error_prefix ("nothing was migrated");
    goto out;
  }
  if (getenv ("STRATA_LEGACY_FAIL_BEFORE_COMMIT")) {
    /* For the tests: a failure at the last moment. */
    catalog_raw_tx (cat, CATALOG_TX_ROLLBACK);
    undo (cat, with_repos);
    error_set (ERR_INTERNAL, "failing before COMMIT as STRATA_LEGACY_FAIL_BEFORE_COMMIT"
               " asks; nothing was migrated");
    goto out;
  }
  if (catalog_raw_tx (cat, CATALOG_TX_COMMIT) == -1) {
    undo (cat, with_repos);
    error_prefix ("nothing was migrated");
    goto out;
  }
  report (out, &p, source, false);
  fprintf (out, "committed; the legacy rows stay in legacy_backup_jobs\n");
  r = 0;

 out:
  plan_free (&p);
  catalog_close (cat);
  return r;
}

int
legacy_command (int argc, char **argv)
{
  static const struct option opts[] = {
    { "db", required_argument, NULL, 'd' },
    { "db-password-file", required_argument, NULL, 'p' },
    { "dry-run", no_argument, NULL, 'n' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *db = NULL, *pwfile = NULL;
  bool dry_run = false;
  int c;

  optind = 1;
  opterr = 0;
  while ((c = getopt_long (argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'd': db = optarg; break;
    case 'p': pwfile = optarg; break;
    case 'n': dry_run = true; break;
    case 'h':
      printf ("Usage: strata migrate-legacy --db URL [--db-password-file FILE] [--dry-run]\n"
              "Upgrade a catalog with the legacy flat backup_jobs table (per-disk rows\n"
              "with disk_id, change_id, repository_path) to contexts, jobs and\n"
              "backup_disks, in one transaction, and print what was done.  A second\n"
              "run changes nothing.  Stop every hub on the catalog first.\n"
              "URL: sqlite:///path.db or mysql://USER@HOST[:PORT]/DB[?socket=PATH]\n"
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
  if (optind < argc || db == NULL) {
    fprintf (stderr, "strata migrate-legacy: %s (see strata migrate-legacy --help)\n",
             db ? "unexpected argument" : "--db URL is required");
    return 2;
  }
  if (legacy_migrate (db, pwfile, dry_run, stdout) == -1) {
    fprintf (stderr, "strata migrate-legacy: %s\n", error_message ());
    return 1;
  }
  return 0;
}
