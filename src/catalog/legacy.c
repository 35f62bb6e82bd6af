/* catalog/legacy.c - the migration of a legacy flat catalog to contexts,
 * jobs and backup_disks (the seed's Phase 1).  `strata migrate-legacy`
 * (cli/migrate.c) drives it and prints the report it returns.
 *
 * THE LEGACY LAYOUT
 *
 * backup_jobs (id, vm_name, repository_id, disk_id, change_id,
 * repository_path, bytes_transferred, status, created_at, completed_at
 * [, backup_type]): a parent row per backup run (disk_id NULL) and a row per
 * disk (disk_id set) that the old code matched to its parent by time.  A
 * multi-disk run's parent row carries a placeholder repository_path such as
 * "/multi-disk-parent": it names no file, and a parent row's path is never
 * read.
 *
 * backup_repositories, in either of two shapes: the legacy system's own
 * (id, name, repository_type local/nfs/cifs, enabled, config JSON,
 * is_immutable, immutable_config, min_retention_days, sizes, timestamps),
 * whose folder is config.path for local and config.mount_point for nfs and
 * cifs (a mounted share is a folder to the hub); or a plain (id [, name],
 * path).
 *
 * WHAT IT BECOMES
 *
 * - every repository a strata repository with its id, name, type and
 *   folder.  strata has no disabled or immutable repository and no minimum
 *   retention: such a repository is migrated as a plain one and the report
 *   says so (its backups are restore points all the same);
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
 *   before it was created, else "full" (a label: no chain depends on it);
 * - a pending row never ran, so it is no point in time.  It becomes a
 *   cancelled job (and, for a per-disk row, a failed disk without a file)
 *   whose error says why, counted as the hub counts a cancel: whoever
 *   queued it finds it ended, not vanished, and nothing builds on it.
 *
 * Rows that cannot be placed stay behind, each reported with its reason: an
 * unknown repository, a path outside the repository's root, a row still
 * running (it may have half a file: the old system should end it), a
 * timestamp or id that is not one.  A repository whose folder cannot be
 * known (config JSON missing or unparseable, no path or mount_point, a
 * relative folder, an unknown type) and rows the schema refuses (an
 * unknown status, negative bytes, ...) fail the whole migration, naming the
 * row: nothing is migrated.
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
 *    backup_jobs and changes nothing.  Before 1, a catalog that already
 *    holds a table strata would create (another system's vm_disks, say) is
 *    refused: step 2 would clash with it and the undo would drop it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

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
  bool pending;                 /* never ran: migrated as cancelled */
  char *why;                    /* not placed: the reason */
  int ctx;                      /* index into contexts */
  char *rel;                    /* qcow2 path relative to the repository */
  int64_t disk_row;             /* backup_disks.id */
  int64_t parent;               /* parent_disk_id or -1 */
  const char *type;             /* the job's backup_type */
};

/* A legacy repository: its columns as read (NULL when absent or NULL).
 * What it becomes is rep->repos[i], of the same index. */
struct lrepo {
  char *id, *name, *type, *path, *config, *enabled, *immutable, *retention, *created_at;
  char created[32];
};

/* The plan fills the report as it decides: its repositories and contexts
 * are rep->repos and rep->contexts (a row's ctx indexes the latter). */
struct plan {
  struct legacy_report *rep;
  struct lrow *rows;
  size_t n_rows, cap_rows;
  struct lrepo *repos;
  size_t n_repos, cap_repos;
  size_t cap_ctxs;
  bool has_type;
  char now[32];                 /* when this run migrates */
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
    struct lrepo *r = &p->repos[i];
    free (r->id); free (r->name); free (r->type); free (r->path); free (r->config);
    free (r->enabled); free (r->immutable); free (r->retention); free (r->created_at);
  }
  free (p->rows);
  free (p->repos);
  memset (p, 0, sizeof *p);
}

static char *
dup_or_null (const char *s)
{
  return s ? strdup (s) : NULL;
}

static int
no_memory (void)
{
  error_set_errno (ERR_INTERNAL, ENOMEM, "migrate-legacy");
  return -1;
}

/* Whether a legacy row completed: only those are restore points. */
static bool
is_completed (const struct lrow *r)
{
  return r->status && strcmp (r->status, "completed") == 0;
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

/* One legacy repository, in the column order of repos_select. */
static int
read_repo (void *opaque, int ncols, char **vals)
{
  struct plan *p = opaque;
  struct lrepo *r = array_push ((void **) &p->repos, p->n_repos, &p->cap_repos, sizeof *r);
  char **f[] = { &r->id, &r->name, &r->type, &r->path, &r->config, &r->enabled,
                 &r->immutable, &r->retention, &r->created_at };

  if (r == NULL)
    return -1;
  p->n_repos++;
  for (size_t i = 0; i < sizeof f / sizeof f[0] && (int) i < ncols; i++)
    if (vals[i] && (*f[i] = strdup (vals[i])) == NULL)
      return no_memory ();
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
    return no_memory ();
  }
  return 0;
}

/* The path of r relative to the repository root, or NULL (r->why set)
 * when it lies outside. */
static int
place_path (struct lrow *r, const struct legacy_repo *repo)
{
  const char *rel = r->path;
  const char *root = repo->folder;
  size_t rootlen = strlen (root);

  if (rel == NULL || *rel == '\0')
    return set_why (r, "no repository_path");
  if (*rel == '/') {
    if (strncmp (rel, root, rootlen) != 0 || rel[rootlen] != '/')
      return set_why (r, "repository_path %s is outside the repository's root", r->path);
    rel += rootlen;
    while (*rel == '/')
      rel++;
  }
  if (*rel == '\0' || strcmp (rel, "..") == 0 || strncmp (rel, "../", 3) == 0 ||
      strstr (rel, "/../") || (strlen (rel) >= 3 && strcmp (rel + strlen (rel) - 3, "/..") == 0))
    return set_why (r, "repository_path %s is outside the repository's root", r->path);
  if ((r->rel = strdup (rel)) == NULL)
    return no_memory ();
  return 0;
}

/* A repository folder as strata keeps one: absolute, no "." or ".."
 * component, not the root; trailing slashes dropped.  The folder is not
 * looked at: a share may well be unmounted while the catalog is migrated.
 * Returns the folder (caller frees) or NULL with ERR_INVALID set. */
static char *
folder_check (const char *s, const char *what)
{
  size_t len = s ? strlen (s) : 0;

  while (len > 1 && s[len - 1] == '/')
    len--;
  if (len == 0 || s[0] != '/') {
    error_set (ERR_INVALID, "%s \"%s\" is not an absolute folder", what, s ? s : "");
    return NULL;
  }
  if (len == 1) {
    error_set (ERR_INVALID, "%s is the root folder /", what);
    return NULL;
  }
  for (const char *c = s; c < s + len; c++)
    if (c[0] == '/' && c[1] == '.' &&
        (c + 2 == s + len || c[2] == '/' || (c[2] == '.' && (c + 3 == s + len || c[3] == '/')))) {
      error_set (ERR_INVALID, "%s \"%s\" has a \".\" or \"..\" component", what, s);
      return NULL;
    }
  char *ret = strndup (s, len);
  if (ret == NULL)
    no_memory ();
  return ret;
}

/* The string member key of obj, or NULL. */
static const char *
json_member (json_t *obj, const char *key)
{
  return json_string_value (json_object_get (obj, key));
}

int
legacy_repo_folder (const char *type, const char *config, char **folder, char **origin)
{
  CLEANUP_JSON json_t *j = NULL;
  json_error_t jerr;
  const char *key, *value, *server;
  enum repo_type t;
  json_t *v;
  int n;

  *folder = *origin = NULL;
  if (repo_type_parse (type, &t) == -1) {
    char words[64];

    repo_type_words (words, sizeof words);
    error_set (ERR_INVALID, "repository_type \"%s\" is none of %s",
               type ? type : "(NULL)", words);
    return -1;
  }
  if (config == NULL || config[0] == '\0')
    return catalog_fail (ERR_INVALID, "no config JSON: the folder of the %s repository is"
                         " unknown", type);
  j = json_loads (config, JSON_REJECT_DUPLICATES, &jerr);
  if (j == NULL)
    return catalog_fail (ERR_INVALID, "config is not JSON (%s, at character %d)", jerr.text,
                         jerr.position);
  if (!json_is_object (j))
    return catalog_fail (ERR_INVALID, "config is JSON but not an object");
  key = t == REPO_LOCAL ? "path" : "mount_point";
  v = json_object_get (j, key);
  value = json_string_value (v);
  if (value == NULL || strlen (value) != json_string_length (v))
    return catalog_fail (ERR_INVALID, "config has no \"%s\" string, where a %s repository's"
                         " folder is", key, type);
  *folder = folder_check (value, t == REPO_LOCAL ? "config path" : "config mount_point");
  if (*folder == NULL)
    return -1;
  server = json_member (j, "server");
  if (t == REPO_NFS && server && json_member (j, "export_path"))
    n = asprintf (origin, "config mount_point, where nfs %s:%s is mounted", server,
                  json_member (j, "export_path"));
  else if (t == REPO_CIFS && server && json_member (j, "share"))
    n = asprintf (origin, "config mount_point, where cifs //%s/%s is mounted", server,
                  json_member (j, "share"));
  else
    n = asprintf (origin, "config %s", key);
  if (n == -1) {
    *origin = NULL;
    free (*folder);
    *folder = NULL;
    return no_memory ();
  }
  return 0;
}

/* "0"/"false" and "1"/"true", as SQLite or MariaDB may hold a flag. */
static bool
flag_is (const char *v, bool want)
{
  if (v == NULL)
    return false;
  if (want)
    return strcmp (v, "1") == 0 || strcasecmp (v, "true") == 0;
  return strcmp (v, "0") == 0 || strcasecmp (v, "false") == 0;
}

/* Decide what every repository becomes.  Any that cannot be placed fails
 * the whole run, naming it: its backups would otherwise be left behind. */
static int
plan_repos (struct plan *p)
{
  if ((p->rep->repos = calloc (p->n_repos + 1, sizeof *p->rep->repos)) == NULL)
    return no_memory ();
  p->rep->n_repos = p->n_repos;
  for (size_t i = 0; i < p->n_repos; i++) {
    struct lrepo *r = &p->repos[i];
    struct legacy_repo *pub = &p->rep->repos[i];

    if (r->id == NULL || !id_valid (r->id))
      return catalog_fail (ERR_INVALID, "legacy repository id \"%s\" is not a valid strata id",
                           r->id ? r->id : "(NULL)");
    if (r->config || r->path == NULL) {
      if (legacy_repo_folder (r->type ? r->type : "local", r->config, &pub->folder,
                              &pub->origin) == -1) {
        error_prefix ("legacy repository %s", r->id);
        return -1;
      }
    }
    else {
      if (r->type && strcmp (r->type, "local") != 0)
        return catalog_fail (ERR_INVALID, "legacy repository %s: repository_type \"%s\" with"
                             " a path column: only local folders have one", r->id, r->type);
      if ((pub->folder = folder_check (r->path, "path")) == NULL) {
        error_prefix ("legacy repository %s", r->id);
        return -1;
      }
      if ((pub->origin = strdup ("path column")) == NULL)
        return no_memory ();
    }
    pub->id = strdup (r->id);
    pub->name = strdup (r->name && r->name[0] ? r->name : r->id);
    pub->type = strdup (r->type ? r->type : "local");
    if (pub->id == NULL || pub->name == NULL || pub->type == NULL ||
        (r->retention && (pub->min_retention_days = strdup (r->retention)) == NULL))
      return no_memory ();
    pub->disabled = flag_is (r->enabled, false);
    pub->immutable = flag_is (r->immutable, true);
    if (!norm_time (r->created_at, r->created))
      memcpy (r->created, p->now, sizeof r->created);
  }
  return 0;
}

/* Check that legacy row r can be placed and settle its times, status and
 * file: 0, with r->why set when it stays behind; -1 on error. */
static int
place_row (const struct plan *p, struct lrow *r)
{
  const struct legacy_repo *repo = NULL;

  if (r->id == NULL || !id_valid (r->id))
    return set_why (r, "id \"%s\" is not a valid strata id", r->id);
  if (r->vm_name == NULL || id_check_vm_name (r->vm_name) == -1)
    return set_why (r, "vm_name \"%s\" is not a valid VM name", r->vm_name);
  for (size_t k = 0; r->repository_id && k < p->rep->n_repos; k++)
    if (strcmp (p->rep->repos[k].id, r->repository_id) == 0)
      repo = &p->rep->repos[k];
  if (repo == NULL)
    return set_why (r, "repository \"%s\" is not in backup_repositories", r->repository_id);
  if (!norm_time (r->created_at, r->created))
    return set_why (r, "created_at \"%s\" is not a timestamp", r->created_at);
  r->has_completed = r->completed_at != NULL;
  if (r->has_completed && !norm_time (r->completed_at, r->completed))
    return set_why (r, "completed_at \"%s\" is not a timestamp", r->completed_at);
  if (r->status && strcmp (r->status, "running") == 0)
    return set_why (r, "still running in the legacy catalog (finish or fail it with the"
                    " old system first)");
  if (r->status && strcmp (r->status, "pending") == 0) {
    /* Never ran: a cancelled job, ended now (see the top). */
    free (r->status);
    if ((r->status = strdup ("cancelled")) == NULL)
      return no_memory ();
    r->pending = true;
    r->has_completed = false;
  }
  if (r->disk_id == -2)
    return set_why (r, "negative disk_id");
  if (r->disk_id >= 0 && is_completed (r))
    return place_path (r, repo);
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
  struct legacy_report *rep = p->rep;
  CLEANUP_FREE size_t *order = NULL;
  size_t n_disks = 0;
  int64_t next_id = 1;

  for (size_t i = 0; i < p->n_rows; i++) {
    struct lrow *r = &p->rows[i];

    if (place_row (p, r) == -1)
      return -1;
    if (r->why)
      continue;
    n_disks += r->disk_id >= 0;
    /* Its context. */
    for (size_t k = 0; k < rep->n_contexts; k++)
      if (strcmp (rep->contexts[k].vm, r->vm_name) == 0 &&
          strcmp (rep->contexts[k].repo, r->repository_id) == 0)
        r->ctx = (int) k;
    if (r->ctx < 0) {
      struct legacy_context *c = array_push ((void **) &rep->contexts, rep->n_contexts,
                                             &p->cap_ctxs, sizeof *c);
      if (c == NULL)
        return -1;
      r->ctx = (int) rep->n_contexts++;
      c->vm = strdup (r->vm_name);
      c->repo = strdup (r->repository_id);
      c->id = id_new ("ctx-backup", r->vm_name);
      if (c->vm == NULL || c->repo == NULL || c->id == NULL)
        return no_memory ();
    }
    rep->contexts[r->ctx].jobs++;
    if (is_completed (r))
      rep->contexts[r->ctx].ok++;
    else if (r->status && (strcmp (r->status, "failed") == 0 ||
                           strcmp (r->status, "cancelled") == 0))
      rep->contexts[r->ctx].failed++;
  }

  /* The per-disk rows in completion order: their ids, their chains. */
  order = calloc (n_disks ? n_disks : 1, sizeof *order);
  if (order == NULL)
    return no_memory ();
  n_disks = 0;
  for (size_t i = 0; i < p->n_rows; i++)
    if (!p->rows[i].why && p->rows[i].disk_id >= 0)
      order[n_disks++] = i;
  sort_plan = p;
  qsort (order, n_disks, sizeof *order, cmp_completion);
  for (size_t k = 0; k < n_disks; k++) {
    struct lrow *r = &p->rows[order[k]];
    int64_t last = -1;

    r->disk_row = next_id++;
    /* The last completed row of the same context and disk index. */
    for (size_t m = 0; m < k; m++) {
      const struct lrow *o = &p->rows[order[m]];
      if (o->ctx == r->ctx && o->disk_id == r->disk_id && is_completed (o))
        last = o->disk_row;
    }
    r->parent = last;
    r->type = last >= 0 ? "incremental" : "full";
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
      before |= o->ctx == r->ctx && o->has_completed && is_completed (o) &&
                strcmp (o->completed, r->created) < 0;
    }
    r->type = before ? "incremental" : "full";
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Writing
 */

static const char never_ran[] =
  "never ran: pending in the legacy catalog when it was migrated";

/* Every row of the plan, inside the caller's transaction. */
static int
write_all (struct catalog *cat, const struct plan *p)
{
  const char *now = p->now;

  for (size_t i = 0; i < p->n_repos; i++) {
    const struct legacy_repo *r = &p->rep->repos[i];

    if (catalog_raw_exec (cat, "INSERT INTO backup_repositories (id, name, type, path,"
                          " created_at) VALUES (?, ?, ?, ?, ?)", "sssss", r->id,
                          r->name, r->type, r->folder, p->repos[i].created) == -1) {
      error_prefix ("legacy repository %s", r->id);
      return -1;
    }
  }
  for (size_t i = 0; i < p->rep->n_contexts; i++) {
    const struct legacy_context *c = &p->rep->contexts[i];
    const struct lrow *last = NULL;
    const char *created = NULL;

    /* Created with its first row; its last backup is the job of its
     * latest completed disk (the highest backup_disks id). */
    for (size_t k = 0; k < p->n_rows; k++) {
      const struct lrow *r = &p->rows[k];

      if (r->ctx != (int) i)
        continue;
      if (created == NULL || strcmp (r->created, created) < 0)
        created = r->created;
      if (r->disk_id >= 0 && is_completed (r) &&
          (last == NULL || r->disk_row > last->disk_row))
        last = r;
    }

    if (catalog_raw_exec (cat, "INSERT INTO vm_backup_contexts (context_id, vm_name,"
                          " repository_id, total_backups_run, successful_backups,"
                          " failed_backups, last_backup_id, last_backup_type,"
                          " last_backup_at, created_at, updated_at)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", "sssIIIsssss",
                          c->id, c->vm, c->repo, c->jobs, c->ok, c->failed,
                          last ? last->id : NULL, last ? last->type : NULL,
                          last ? last->completed : NULL, created, now) == -1) {
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
                          " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'agent')", "sssssssss",
                          r->id, p->rep->contexts[r->ctx].id, r->vm_name, r->repository_id,
                          r->type, r->status, r->pending ? never_ran : NULL, r->created,
                          r->has_completed ? r->completed : r->pending ? p->now : NULL) == -1) {
      error_prefix ("legacy row %s", r->id);
      return -1;
    }
  }
  /* Disks in id order: every parent is written before its children. */
  for (int64_t want = 1; ; want++) {
    const struct lrow *r = NULL;
    bool done;

    for (size_t i = 0; i < p->n_rows && !r; i++)
      if (!p->rows[i].why && p->rows[i].disk_id >= 0 && p->rows[i].disk_row == want)
        r = &p->rows[i];
    if (r == NULL)
      break;
    done = is_completed (r);
    if (catalog_raw_exec (cat, "INSERT INTO backup_disks (id, vm_backup_context_id,"
                          " backup_job_id, disk_index, size_bytes, backup_type,"
                          " disk_change_id, qcow2_path, parent_disk_id, bytes_transferred,"
                          " status, error, created_at, completed_at)"
                          " VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          "IssIsssoIsss" "s", r->disk_row, p->rep->contexts[r->ctx].id,
                          r->id, r->disk_id, r->type, r->change_id, done ? r->rel : NULL,
                          r->parent, r->bytes,
                          r->status && strcmp (r->status, "cancelled") == 0 ? "failed"
                          : r->status,
                          done ? NULL : r->pending ? never_ran
                          : "not completed in the legacy catalog", r->created,
                          r->has_completed ? r->completed : r->pending ? p->now : NULL) == -1) {
      error_prefix ("legacy row %s (disk %" PRId64 ")", r->id, r->disk_id);
      return -1;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * The report
 */

void
legacy_report_clear (struct legacy_report *rep)
{
  for (size_t i = 0; i < rep->n_repos; i++) {
    struct legacy_repo *r = &rep->repos[i];
    free (r->id); free (r->name); free (r->type); free (r->folder); free (r->origin);
    free (r->min_retention_days);
  }
  for (size_t i = 0; i < rep->n_contexts; i++) {
    free (rep->contexts[i].id);
    free (rep->contexts[i].vm);
    free (rep->contexts[i].repo);
  }
  for (size_t i = 0; i < rep->n_chains; i++) {
    free (rep->chains[i].vm);
    free (rep->chains[i].last_change_id);
    free (rep->chains[i].last_job);
  }
  for (size_t i = 0; i < rep->n_cancelled; i++) {
    free (rep->cancelled[i].id);
    free (rep->cancelled[i].why);
  }
  for (size_t i = 0; i < rep->n_not_placed; i++) {
    free (rep->not_placed[i].id);
    free (rep->not_placed[i].why);
  }
  free (rep->repos);
  free (rep->contexts);
  free (rep->chains);
  free (rep->cancelled);
  free (rep->not_placed);
  free (rep->placeholder_example);
  free (rep->kept_aside);
  memset (rep, 0, sizeof *rep);
}

/* Append a row note (copies of id and why) to *arr. */
static int
note_row (struct legacy_row **arr, size_t *n, size_t *cap, const char *id, const char *why)
{
  struct legacy_row *x = array_push ((void **) arr, *n, cap, sizeof *x);

  if (x == NULL)
    return -1;
  (*n)++;
  x->id = strdup (id ? id : "(no id)");
  x->why = strdup (why);
  return x->id && x->why ? 0 : no_memory ();
}

/* One disk's chain, for the report: its rows and the last completed. */
static int
note_chain (struct legacy_report *rep, size_t *cap, const struct plan *p, size_t ctx,
            const char *vm, int64_t idx)
{
  const struct lrow *last = NULL;
  struct legacy_chain ch = { .disk = idx };
  struct legacy_chain *x;

  for (size_t k = 0; k < p->n_rows; k++) {
    const struct lrow *r = &p->rows[k];
    if (r->why || r->ctx != (int) ctx || r->disk_id != idx)
      continue;
    ch.rows++;
    if (is_completed (r)) {
      ch.full += strcmp (r->type, "full") == 0;
      ch.incremental += strcmp (r->type, "incremental") == 0;
      if (last == NULL || r->disk_row > last->disk_row)
        last = r;
    }
    else
      ch.failed++;
  }
  if (ch.rows == 0)
    return 0;
  if ((x = array_push ((void **) &rep->chains, rep->n_chains, cap, sizeof *x)) == NULL)
    return -1;
  rep->n_chains++;
  *x = ch;
  x->vm = strdup (vm);
  x->last_change_id = dup_or_null (last ? last->change_id : NULL);
  x->last_job = dup_or_null (last ? last->id : NULL);
  if (x->vm == NULL || (last && last->change_id && x->last_change_id == NULL) ||
      (last && x->last_job == NULL))
    return no_memory ();
  return 0;
}

/* Complete the report with what the plan's rows came to (copies): the
 * counts, the chains, the rows cancelled and the rows not placed. */
static int
build_report (const struct plan *p)
{
  struct legacy_report *rep = p->rep;
  size_t cap_chains = 0, cap_cancelled = 0, cap_not_placed = 0;

  rep->rows = p->n_rows;
  for (size_t i = 0; i < p->n_rows; i++) {
    const struct lrow *r = &p->rows[i];

    if (r->disk_id == -1) {
      rep->parents++;
      if (r->path && r->path[0]) {
        rep->placeholders++;
        if (rep->placeholder_example == NULL &&
            (rep->placeholder_example = strdup (r->path)) == NULL)
          return no_memory ();
      }
    }
    if (r->why) {
      if (note_row (&rep->not_placed, &rep->n_not_placed, &cap_not_placed, r->id,
                    r->why) == -1)
        return -1;
      continue;
    }
    rep->jobs++;
    rep->disks += r->disk_id >= 0;
    if (r->pending && note_row (&rep->cancelled, &rep->n_cancelled, &cap_cancelled, r->id,
                                never_ran) == -1)
      return -1;
  }
  for (size_t i = 0; i < rep->n_contexts; i++) {
    int64_t idx = -1;

    /* Its disks in index order: each time the next index above idx. */
    for (;;) {
      int64_t next = -1;
      for (size_t k = 0; k < p->n_rows; k++) {
        const struct lrow *r = &p->rows[k];
        if (!r->why && r->ctx == (int) i && r->disk_id > idx && (next < 0 || r->disk_id < next))
          next = r->disk_id;
      }
      if (next < 0)
        break;
      if (note_chain (rep, &cap_chains, p, i, rep->contexts[i].vm, next) == -1)
        return -1;
      idx = next;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * The migration
 */

/* The tables the strata schema creates.  Step 1 moves any of them that the
 * legacy catalog already has (backup_jobs and backup_repositories always,
 * another system's vm_disks or schema_migrations at times) aside under the
 * prefix legacy_, so that step 2 never meets a table it did not make and
 * the undo never drops one. */
static const char *const strata_tables[] = {   /* children first: the undo drops in order */
  "file_intents", "backup_disks", "backup_jobs", "vm_backup_contexts", "vm_disks", "vms",
  "policies", "backup_repositories", "catalog_lock", "tasks", "schema_migrations", NULL
};

/* Which of strata_tables are aside (legacy_NAME exists; aside) or, before
 * step 1, in the way (NAME exists; !aside): a bit per table.  -1 on error. */
static int
tables_present (struct catalog *cat, bool aside)
{
  int mask = 0;

  for (int i = 0; strata_tables[i]; i++) {
    char name[64];
    int f;

    snprintf (name, sizeof name, "%s%s", aside ? "legacy_" : "", strata_tables[i]);
    if ((f = table_exists (cat, name)) == -1)
      return -1;
    if (f)
      mask |= 1 << i;
  }
  return mask;
}

/* Move the tables of mask aside (NAME to legacy_NAME) or, with back, back
 * again, all at once: one RENAME TABLE on MariaDB, one transaction on
 * SQLite. */
static int
move_tables (struct catalog *cat, int mask, bool back)
{
  bool maria = mariadb_dialect (cat);
  char sql[1024] = "RENAME TABLE";
  const char *sep = " ";

  if (!maria && catalog_raw_tx (cat, CATALOG_TX_BEGIN) == -1)
    return -1;
  for (int i = 0; strata_tables[i]; i++) {
    const char *t = strata_tables[i];
    size_t len = strlen (sql);

    if (!(mask & (1 << i)))
      continue;
    if (maria) {
      snprintf (sql + len, sizeof sql - len, back ? "%slegacy_%s TO %s" : "%s%s TO legacy_%s",
                sep, t, t);
      sep = ", ";
      continue;
    }
    snprintf (sql, sizeof sql, back ? "ALTER TABLE legacy_%s RENAME TO %s"
              : "ALTER TABLE %s RENAME TO legacy_%s", t, t);
    if (catalog_raw_exec (cat, sql, "") == -1) {
      catalog_raw_tx (cat, CATALOG_TX_ROLLBACK);
      return -1;
    }
  }
  if (maria)
    return catalog_raw_exec (cat, sql, "") == -1 ? -1 : 0;
  return catalog_raw_tx (cat, CATALOG_TX_COMMIT);
}

/* "legacy_a, legacy_b" for the evidence (caller frees), or NULL. */
static char *
aside_names (int mask)
{
  char buf[512] = "";

  for (int i = 0; strata_tables[i]; i++)
    if (mask & (1 << i)) {
      size_t len = strlen (buf);
      snprintf (buf + len, sizeof buf - len, "%slegacy_%s", len ? ", " : "", strata_tables[i]);
    }
  return strdup (buf);
}

/* After a failed data transaction: drop the new tables, which it left
 * empty, and give the legacy tables (mask, see move_tables) their names
 * back. */
static void
undo (struct catalog *cat, int mask)
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
  if (move_tables (cat, mask, true) == -1)
    log_error ("migrate-legacy: undo: %s", error_message ());
  error_restore (&saved);
}

/* The SELECT of a legacy repositories table in either shape: every column
 * read_repo takes, NULL where the table has none.  Returns 0 or -1. */
static int
repos_select (struct catalog *cat, const char *table, char *sql, size_t len)
{
  static const char *const cols[] = {
    "id", "name", "repository_type", "path", "config", "enabled", "is_immutable",
    "min_retention_days", "created_at", NULL
  };
  size_t used = snprintf (sql, len, "SELECT");

  for (int i = 0; cols[i]; i++) {
    int f = column_exists (cat, table, cols[i]);
    if (f == -1)
      return -1;
    used += snprintf (sql + used, len - used, "%s %s", i ? "," : "", f ? cols[i] : "NULL");
  }
  snprintf (sql + used, len - used, " FROM %s ORDER BY id", table);
  return 0;
}

/* Read and plan; with the report's counts filled.  Returns 0 or -1. */
static int
plan_all (struct catalog *cat, struct plan *p, const char *source, const char *repos_table)
{
  char sql[1024];
  int f;

  if ((f = table_exists (cat, repos_table)) == -1)
    return -1;
  if (f == 1 && (repos_select (cat, repos_table, sql, sizeof sql) == -1 ||
                 catalog_raw_query (cat, read_repo, p, sql, "") == -1))
    return -1;
  if ((f = column_exists (cat, source, "backup_type")) == -1)
    return -1;
  p->has_type = f == 1;
  snprintf (sql, sizeof sql, "SELECT id, vm_name, repository_id, disk_id, change_id,"
            " repository_path, bytes_transferred, status, created_at, completed_at%s"
            " FROM %s ORDER BY id", p->has_type ? ", backup_type" : "", source);
  if (catalog_raw_query (cat, read_row, p, sql, "") == -1)
    return -1;
  return plan_repos (p) == -1 || plan_rows (p) == -1 ? -1 : 0;
}

int
legacy_migrate (const struct legacy_options *opts, struct legacy_report *rep)
{
  struct catalog *cat;
  struct plan p = { .rep = rep };
  const char *repos_table;
  bool fresh;
  int f, mask, r = -1;

  memset (rep, 0, sizeof *rep);
  if ((cat = catalog_open_raw (opts->url, opts->password_file)) == NULL)
    return -1;
  id_now (p.now, sizeof p.now);
  /* Where are we? */
  if ((f = table_exists (cat, "backup_jobs")) == -1)
    goto out;
  fresh = f == 1 && (f = column_exists (cat, "backup_jobs", "disk_id")) == 1;
  if (f == -1)
    goto out;
  if (fresh) {
    int clash;
    rep->source = "backup_jobs";
    repos_table = "backup_repositories";
    if ((mask = tables_present (cat, false)) == -1 ||
        (clash = tables_present (cat, true)) == -1)
      goto out;
    if (clash & mask) {
      CLEANUP_FREE char *names = aside_names (clash & mask);
      error_set (ERR_CONFLICT, "the catalog already has %s, where the legacy tables would"
                 " be kept; nothing was changed", names ? names : "legacy_ tables");
      goto out;
    }
  }
  else {
    if ((f = table_exists (cat, "legacy_backup_jobs")) == -1)
      goto out;
    if (f == 0) {
      rep->outcome = LEGACY_NOTHING_TO_DO;
      r = 0;
      goto out;
    }
    if ((f = table_exists (cat, "vm_backup_contexts")) == -1)
      goto out;
    if (f == 1 && (count_rows (cat, "vm_backup_contexts") != 0 ||
                   count_rows (cat, "backup_jobs") != 0)) {
      rep->outcome = LEGACY_ALREADY_MIGRATED;
      r = 0;
      goto out;
    }
    /* Moved aside, but the data never committed: finish it. */
    rep->resumed = true;
    rep->source = "legacy_backup_jobs";
    repos_table = "legacy_backup_repositories";
    if ((mask = tables_present (cat, true)) == -1)
      goto out;
  }
  if ((rep->kept_aside = aside_names (mask)) == NULL) {
    no_memory ();
    goto out;
  }
  if (plan_all (cat, &p, rep->source, repos_table) == -1 || build_report (&p) == -1)
    goto out;
  if (opts->dry_run) {
    rep->outcome = LEGACY_PLANNED;
    r = 0;
    goto out;
  }

  if (fresh && move_tables (cat, mask, false) == -1) {
    error_prefix ("renaming the legacy tables");
    goto out;
  }
  if (catalog_raw_migrate (cat) == -1) {
    error_prefix ("creating the strata schema");
    undo (cat, mask);
    goto out;
  }
  if (catalog_raw_tx (cat, CATALOG_TX_BEGIN) == -1) {
    undo (cat, mask);
    goto out;
  }
  if (write_all (cat, &p) == -1) {
    catalog_raw_tx (cat, CATALOG_TX_ROLLBACK);
    undo (cat, mask);
    error_prefix ("nothing was migrated");
    goto out;
  }
  if (getenv ("STRATA_LEGACY_FAIL_BEFORE_COMMIT")) {
    /* For the tests: a failure at the last moment. */
    catalog_raw_tx (cat, CATALOG_TX_ROLLBACK);
    undo (cat, mask);
    error_set (ERR_INTERNAL, "failing before COMMIT as STRATA_LEGACY_FAIL_BEFORE_COMMIT"
               " asks; nothing was migrated");
    goto out;
  }
  if (catalog_raw_tx (cat, CATALOG_TX_COMMIT) == -1) {
    undo (cat, mask);
    error_prefix ("nothing was migrated");
    goto out;
  }
  rep->outcome = LEGACY_MIGRATED;
  r = 0;

 out:
  if (r == -1)
    legacy_report_clear (rep);
  plan_free (&p);
  catalog_close (cat);
  return r;
}
