/* cli/rebuild.c - `strata rebuild-catalog`: a lost catalog made again from
 * the manifests next to the backup files (integrity/manifest.h).
 *
 * Only the facts of each manifest are read (mf_open checks the whole file's
 * checksum first).  A repository is a folder with ctx-ID/diskN/JOB.qcow2
 * files (storage/repo.h); its id, name and type come from its
 * strata-repository.json, else from DATA-DIR/repositories.json, else from
 * the manifests' repository_id.  The files of one backup_id make one job,
 * rebuilt only when every disk index of its job_disks has a manifest; jobs
 * are inserted parents first, and among the jobs ready at a time the oldest
 * first, so that the newest point of every disk gets the highest row id,
 * which is the catalog's rule for "the latest point" (catalog_backup_plan).
 *
 * Safety: the command takes the hub's own lock on DATA-DIR/run/hub.lock
 * for its whole run (no hub may run on the folder, and none can start
 * meanwhile), refuses a catalog that holds any backup job, and never
 * deletes or changes a file in a repository.  What it cannot use it reports
 * with the reason.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "catalog/catalog.h"
#include "cli/cli.h"
#include "integrity/manifest.h"
#include "util/array.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/json.h"
#include "util/id.h"

#define RB_REPO_FILE "strata-repository.json"
#define RB_REPO_LIST "repositories.json"

struct rb_repo {
  char *id, *name, *type, *path, *created_at;
  const char *origin;          /* where id, name and type came from */
};

/* One backup file with a readable manifest. */
struct rb_disk {
  size_t repo;
  char *rel;                   /* relative to the repository */
  json_t *facts;               /* a reference of our own */
  const char *backup_id;       /* in facts */
  int disk_index;
  int64_t row_id;              /* backup_disks.id once inserted */
};

enum rb_state { RB_PENDING, RB_PLACED, RB_SKIPPED };

struct rb_job {
  const char *id;              /* in its disks' facts */
  size_t repo;
  size_t *disks;               /* indexes into the disks array, by disk_index */
  size_t n_disks, cap_disks;
  json_t *facts;               /* borrowed: the newest written_at */
  enum rb_state state;
  bool inserted;
};

struct rb_skip {
  char *file, *reason;
};

struct rb {
  const char *data_dir;
  bool dry_run;
  struct rb_repo *repos; size_t n_repos, cap_repos;
  struct rb_disk *disks; size_t n_disks, cap_disks;
  struct rb_job *jobs; size_t n_jobs, cap_jobs;
  size_t *order; size_t n_order;   /* jobs to insert, parents first */
  struct rb_skip *skips; size_t n_skips, cap_skips;
};

static void
rb_clear (struct rb *rb)
{
  for (size_t i = 0; i < rb->n_repos; i++) {
    struct rb_repo *r = &rb->repos[i];
    free (r->id); free (r->name); free (r->type); free (r->path); free (r->created_at);
  }
  for (size_t i = 0; i < rb->n_disks; i++) {
    free (rb->disks[i].rel);
    json_decref (rb->disks[i].facts);
  }
  for (size_t i = 0; i < rb->n_jobs; i++)
    free (rb->jobs[i].disks);
  for (size_t i = 0; i < rb->n_skips; i++) {
    free (rb->skips[i].file);
    free (rb->skips[i].reason);
  }
  free (rb->repos); free (rb->disks); free (rb->jobs); free (rb->order); free (rb->skips);
}

static const char *
fact_str (const json_t *facts, const char *key)
{
  return json_string_value (json_object_get (facts, key));
}

/* An integer fact, or def when absent or null. */
static int64_t
fact_int (const json_t *facts, const char *key, int64_t def)
{
  json_t *v = json_object_get (facts, key);
  return json_is_integer (v) ? (int64_t) json_integer_value (v) : def;
}

/* Record a file that is not rebuilt, and why. */
static int
skip (struct rb *rb, const char *repo_path, const char *rel, const char *fmt, ...)
  __attribute__((format (printf, 4, 5)));

static int
skip (struct rb *rb, const char *repo_path, const char *rel, const char *fmt, ...)
{
  struct rb_skip *s;
  va_list ap;
  int r;

  s = array_push ((void **) &rb->skips, rb->n_skips, &rb->cap_skips, sizeof *s);
  if (s == NULL)
    return -1;
  va_start (ap, fmt);
  r = vasprintf (&s->reason, fmt, ap);
  va_end (ap);
  if (r == -1 || asprintf (&s->file, "%s%s%s", repo_path, rel ? "/" : "", rel ? rel : "") == -1) {
    if (r != -1)
      free (s->reason);
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  rb->n_skips++;
  return 0;
}

/* --- Repositories -------------------------------------------------------- */

static char *
xstrdup_or_null (const char *s)
{
  return s ? strdup (s) : NULL;
}

/* Add the folder path (once: folders are compared resolved).  id, name and
 * type may be NULL (known later from strata-repository.json or the
 * manifests). */
static int
add_repo (struct rb *rb, const char *path, const char *id, const char *name,
          const char *type, const char *origin)
{
  CLEANUP_FREE char *real = realpath (path, NULL);
  struct rb_repo *r;

  if (real == NULL)
    return skip (rb, path, NULL, "repository folder not readable: %s (from %s)",
                 strerror (errno), origin);
  for (size_t i = 0; i < rb->n_repos; i++)
    if (strcmp (rb->repos[i].path, real) == 0) {
      if (rb->repos[i].id == NULL && id) {
        rb->repos[i].id = strdup (id);
        rb->repos[i].name = xstrdup_or_null (name);
        rb->repos[i].type = xstrdup_or_null (type);
        rb->repos[i].origin = origin;
      }
      return 0;
    }
  r = array_push ((void **) &rb->repos, rb->n_repos, &rb->cap_repos, sizeof *r);
  if (r == NULL)
    return -1;
  r->path = real;
  real = NULL;
  r->id = xstrdup_or_null (id);
  r->name = xstrdup_or_null (name);
  r->type = xstrdup_or_null (type);
  r->origin = origin;
  rb->n_repos++;
  return 0;
}

/* The repositories of DATA-DIR/repositories.json, as the hub last wrote it. */
static int
add_listed_repos (struct rb *rb)
{
  CLEANUP_FREE char *path = NULL;
  CLEANUP_JSON json_t *list = NULL;
  json_error_t jerr;
  size_t i;
  json_t *e;

  if (asprintf (&path, "%s/%s", rb->data_dir, RB_REPO_LIST) == -1) {
    path = NULL;
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  if (access (path, F_OK) == -1)
    return 0;
  list = json_load_file (path, 0, &jerr);
  if (!json_is_array (list))
    return skip (rb, path, NULL, "not a JSON array of repositories (%s); its folders are "
                 "not searched (name them with --repository)",
                 list ? "not an array" : jerr.text);
  json_array_foreach (list, i, e) {
    const char *p = fact_str (e, "path");
    if (p == NULL || p[0] != '/') {
      if (skip (rb, path, NULL, "entry %zu has no absolute \"path\"", i) == -1)
        return -1;
      continue;
    }
    if (add_repo (rb, p, fact_str (e, "id"), fact_str (e, "name"), fact_str (e, "type"),
                  RB_REPO_LIST) == -1)
      return -1;
  }
  return 0;
}

/* Read the repository's own identity file, which wins over what was
 * known of it. */
static int
read_repo_file (struct rb *rb, struct rb_repo *r)
{
  CLEANUP_FREE char *path = NULL;
  CLEANUP_JSON json_t *j = NULL;
  json_error_t jerr;
  const char *id;

  if (asprintf (&path, "%s/%s", r->path, RB_REPO_FILE) == -1) {
    path = NULL;
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  if (access (path, F_OK) == -1)
    return 0;
  j = json_load_file (path, 0, &jerr);
  id = fact_str (j, "id");
  if (id == NULL || !id_valid (id))
    return skip (rb, path, NULL, "unreadable (%s); the repository's id is taken from "
                 "elsewhere", j ? "no valid \"id\"" : jerr.text);
  free (r->id); free (r->name); free (r->type); free (r->created_at);
  r->id = strdup (id);
  r->name = xstrdup_or_null (fact_str (j, "name"));
  r->type = xstrdup_or_null (fact_str (j, "type"));
  r->created_at = xstrdup_or_null (fact_str (j, "created_at"));
  r->origin = RB_REPO_FILE;
  return 0;
}

/* --- Scanning ------------------------------------------------------------ */

static bool
ends_with (const char *s, const char *suffix)
{
  size_t n = strlen (s), m = strlen (suffix);
  return n >= m && strcmp (s + n - m, suffix) == 0;
}

static bool
is_disk_dir (const char *name, int *index)
{
  char *end;
  long v;

  if (strncmp (name, "disk", 4) != 0 || name[4] < '0' || name[4] > '9')
    return false;
  v = strtol (name + 4, &end, 10);
  if (*end != '\0' || v < 0 || v > INT_MAX)
    return false;
  *index = (int) v;
  return true;
}

static int
only_dirs (const struct dirent *de)
{
  return de->d_name[0] != '.';
}

/* Read one image's manifest and keep its facts, or say why not. */
static int
read_image (struct rb *rb, size_t repo, const char *ctx, int disk_index, const char *name)
{
  const struct rb_repo *r = &rb->repos[repo];
  CLEANUP_FREE char *rel = NULL;
  CLEANUP_FREE char *img = NULL;
  CLEANUP_FREE char *mpath = NULL;
  struct mf_reader *m;
  json_t *facts;
  const char *bid, *fctx;
  struct rb_disk *d;
  size_t n = strlen (name) - strlen (".qcow2");

  if (asprintf (&rel, "%s/disk%d/%s", ctx, disk_index, name) == -1 ||
      asprintf (&img, "%s/%s", r->path, rel) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  mpath = mf_path_for (img);
  if (mpath == NULL)
    return -1;
  if (access (mpath, F_OK) == -1)
    return skip (rb, r->path, rel, "no manifest");
  m = mf_open (mpath);
  if (m == NULL)
    return skip (rb, r->path, rel, "unreadable manifest: %s", error_message ());
  facts = json_incref (mf_facts (m));
  mf_close (m);
  bid = fact_str (facts, "backup_id");
  fctx = fact_str (facts, "context_id");
  if (bid == NULL || fctx == NULL || fact_str (facts, "vm_name") == NULL ||
      strlen (bid) != n || strncmp (bid, name, n) != 0 || strcmp (fctx, ctx) != 0 ||
      fact_int (facts, "disk_index", -1) != disk_index ||
      !json_is_array (json_object_get (facts, "job_disks"))) {
    json_decref (facts);
    return skip (rb, r->path, rel, "the manifest's facts do not match the file (backup_id, "
                 "context_id, vm_name, disk_index, job_disks)");
  }
  d = array_push ((void **) &rb->disks, rb->n_disks, &rb->cap_disks, sizeof *d);
  if (d == NULL) {
    json_decref (facts);
    return -1;
  }
  d->repo = repo;
  d->rel = rel;
  rel = NULL;
  d->facts = facts;
  d->backup_id = bid;
  d->disk_index = disk_index;
  rb->n_disks++;
  return 0;
}

/* Every file of one disk folder: images are read, manifests without their
 * image and anything else are reported. */
static int
scan_disk_dir (struct rb *rb, size_t repo, const char *ctx, const char *dname)
{
  CLEANUP_FREE char *dir = NULL;
  struct dirent **names = NULL;
  int n, index, ret = 0;

  if (!is_disk_dir (dname, &index) ||
      asprintf (&dir, "%s/%s/%s", rb->repos[repo].path, ctx, dname) == -1)
    return 0;
  n = scandir (dir, &names, only_dirs, alphasort);
  if (n < 0)
    return skip (rb, dir, NULL, "cannot read the folder: %s", strerror (errno));
  for (int i = 0; i < n; i++) {
    const char *f = names[i]->d_name;
    CLEANUP_FREE char *rel = NULL;

    if (ret == 0 && asprintf (&rel, "%s/%s/%s", ctx, dname, f) == -1) {
      rel = NULL;
      error_set_errno (ERR_INTERNAL, errno, "out of memory");
      ret = -1;
    }
    if (ret == 0) {
      if (ends_with (f, ".qcow2"))
        ret = read_image (rb, repo, ctx, index, f);
      else if (ends_with (f, ".qcow2" MF_SUFFIX)) {
        CLEANUP_FREE char *img = NULL;
        if (asprintf (&img, "%s/%.*s", dir, (int) (strlen (f) - strlen (MF_SUFFIX)), f) != -1 &&
            access (img, F_OK) == -1)
          ret = skip (rb, rb->repos[repo].path, rel, "a manifest whose image file is missing");
      }
      else if (ends_with (f, MF_SUFFIX ".part"))
        ret = skip (rb, rb->repos[repo].path, rel, "the manifest of a disk that never "
                    "completed");
      else
        ret = skip (rb, rb->repos[repo].path, rel, "not a backup file");
    }
    free (names[i]);
  }
  free (names);
  return ret;
}

static int
scan_repo (struct rb *rb, size_t repo)
{
  struct dirent **ctxs = NULL;
  int n, ret = 0;

  n = scandir (rb->repos[repo].path, &ctxs, only_dirs, alphasort);
  if (n < 0)
    return skip (rb, rb->repos[repo].path, NULL, "cannot read the repository folder: %s",
                 strerror (errno));
  for (int i = 0; i < n; i++) {
    const char *c = ctxs[i]->d_name;
    CLEANUP_FREE char *cdir = NULL;
    struct dirent **disks = NULL;
    int m;

    if (ret == 0 && strncmp (c, "ctx-", 4) == 0 && id_valid (c) &&
        asprintf (&cdir, "%s/%s", rb->repos[repo].path, c) != -1 &&
        (m = scandir (cdir, &disks, only_dirs, alphasort)) >= 0) {
      for (int k = 0; k < m; k++) {
        if (ret == 0)
          ret = scan_disk_dir (rb, repo, c, disks[k]->d_name);
        free (disks[k]);
      }
      free (disks);
    }
    free (ctxs[i]);
  }
  free (ctxs);
  return ret;
}

/* --- Planning ------------------------------------------------------------ */

static struct rb_job *
find_job (struct rb *rb, size_t repo, const char *id)
{
  for (size_t i = 0; i < rb->n_jobs; i++)
    if (rb->jobs[i].repo == repo && strcmp (rb->jobs[i].id, id) == 0)
      return &rb->jobs[i];
  return NULL;
}

static struct rb_disk *
job_disk (struct rb *rb, const struct rb_job *j, int disk_index)
{
  for (size_t i = 0; i < j->n_disks; i++)
    if (rb->disks[j->disks[i]].disk_index == disk_index)
      return &rb->disks[j->disks[i]];
  return NULL;
}

/* Mark a job's files skipped, all with one reason. */
static int
skip_job (struct rb *rb, struct rb_job *j, const char *why)
{
  j->state = RB_SKIPPED;
  for (size_t i = 0; i < j->n_disks; i++) {
    const struct rb_disk *d = &rb->disks[j->disks[i]];
    if (skip (rb, rb->repos[d->repo].path, d->rel, "%s", why) == -1)
      return -1;
  }
  return 0;
}

/* Group the disks by job; drop jobs with a missing disk. */
static int
group_jobs (struct rb *rb)
{
  for (size_t i = 0; i < rb->n_disks; i++) {
    struct rb_disk *d = &rb->disks[i];
    struct rb_job *j = find_job (rb, d->repo, d->backup_id);
    size_t *slot;

    if (j == NULL) {
      j = array_push ((void **) &rb->jobs, rb->n_jobs, &rb->cap_jobs, sizeof *j);
      if (j == NULL)
        return -1;
      j->id = d->backup_id;
      j->repo = d->repo;
      rb->n_jobs++;
    }
    slot = array_push ((void **) &j->disks, j->n_disks, &j->cap_disks, sizeof *slot);
    if (slot == NULL)
      return -1;
    /* Kept in disk_index order, as the catalog's rows are. */
    for (*slot = i; slot > j->disks && rb->disks[slot[-1]].disk_index > d->disk_index; slot--) {
      slot[0] = slot[-1];
      slot[-1] = i;
    }
    j->n_disks++;
    /* Merges rewrite facts: the newest manifest says what the job is now. */
    if (j->facts == NULL ||
        strcmp (fact_str (d->facts, "written_at") ? fact_str (d->facts, "written_at") : "",
                fact_str (j->facts, "written_at") ? fact_str (j->facts, "written_at") : "") > 0)
      j->facts = d->facts;
  }
  for (size_t i = 0; i < rb->n_jobs; i++) {
    struct rb_job *j = &rb->jobs[i];
    json_t *want = json_object_get (j->facts, "job_disks"), *v;
    size_t k;

    if (json_array_size (want) == 0 &&
        skip_job (rb, j, "job incomplete: its manifests name no disks") == -1)
      return -1;
    json_array_foreach (want, k, v) {
      char why[128];
      if (j->state != RB_PENDING ||
          (json_is_integer (v) && job_disk (rb, j, (int) json_integer_value (v))))
        continue;
      snprintf (why, sizeof why, "job incomplete: disk %" PRId64 " has no readable manifest",
                json_is_integer (v) ? (int64_t) json_integer_value (v) : INT64_C (-1));
      if (skip_job (rb, j, why) == -1)
        return -1;
    }
  }
  return 0;
}

/* The job a disk is based on, or NULL for a full.  *missing is set when the
 * manifest names a parent that is not rebuilt (not found or skipped). */
static struct rb_job *
parent_job (struct rb *rb, const struct rb_job *j, const struct rb_disk *d, bool *missing)
{
  const char *pid = fact_str (d->facts, "parent_backup_id");
  struct rb_job *p;

  *missing = false;
  if (pid == NULL)
    return NULL;
  p = find_job (rb, j->repo, pid);
  if (p == NULL || p->state == RB_SKIPPED || job_disk (rb, p, d->disk_index) == NULL ||
      strcmp (fact_str (p->facts, "context_id"), fact_str (j->facts, "context_id")) != 0) {
    *missing = true;
    return NULL;
  }
  return p;
}

static int
cmp_created (const struct rb_job *a, const struct rb_job *b)
{
  const char *x = fact_str (a->facts, "job_created_at"), *y = fact_str (b->facts, "job_created_at");
  int c = strcmp (x ? x : "", y ? y : "");
  return c ? c : strcmp (a->id, b->id);
}

/* Order the jobs parents first (the oldest ready job next); a job whose
 * parent is not rebuilt is skipped, and so, in turn, are its children. */
static int
order_jobs (struct rb *rb)
{
  bool progress = true;

  rb->order = calloc (rb->n_jobs + 1, sizeof *rb->order);
  if (rb->order == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  while (progress) {
    struct rb_job *best = NULL;
    progress = false;
    for (size_t i = 0; i < rb->n_jobs; i++) {
      struct rb_job *j = &rb->jobs[i];
      bool ready = true, missing;
      if (j->state != RB_PENDING)
        continue;
      for (size_t k = 0; k < j->n_disks && ready; k++) {
        const struct rb_disk *d = &rb->disks[j->disks[k]];
        struct rb_job *p = parent_job (rb, j, d, &missing);
        if (missing) {
          char why[512];
          snprintf (why, sizeof why, "parent missing: backup %s disk %d is not rebuilt",
                    fact_str (d->facts, "parent_backup_id"), d->disk_index);
          if (skip_job (rb, j, why) == -1)
            return -1;
          progress = true;
          ready = false;
        }
        else if (p && p->state != RB_PLACED)
          ready = false;
      }
      if (ready && (best == NULL || cmp_created (j, best) < 0))
        best = j;
    }
    if (best) {
      best->state = RB_PLACED;
      rb->order[rb->n_order++] = best - rb->jobs;
      progress = true;
    }
  }
  /* Left pending: parents in a circle, which only a damaged repository has. */
  for (size_t i = 0; i < rb->n_jobs; i++)
    if (rb->jobs[i].state == RB_PENDING &&
        skip_job (rb, &rb->jobs[i], "parent missing: its parents form a circle") == -1)
      return -1;
  return 0;
}

/* --- Inserting ----------------------------------------------------------- */

/* The context of a job as rebuilt: every job of it that is placed counts
 * as run and successful; the newest by completed_at is its last backup. */
static void
context_of (struct rb *rb, const struct rb_job *j, struct cat_context *c)
{
  const char *ctx = fact_str (j->facts, "context_id");
  const struct rb_job *last = NULL;
  const char *last_at = NULL, *first_at = NULL;

  memset (c, 0, sizeof *c);
  c->context_id = (char *) ctx;
  c->vm_name = (char *) fact_str (j->facts, "vm_name");
  c->repository_id = rb->repos[j->repo].id;
  for (size_t i = 0; i < rb->n_order; i++) {
    const struct rb_job *o = &rb->jobs[rb->order[i]];
    const char *at = NULL, *created = fact_str (o->facts, "job_created_at");
    if (o->repo != j->repo || strcmp (fact_str (o->facts, "context_id"), ctx) != 0)
      continue;
    c->total_backups_run++;
    c->successful_backups++;
    for (size_t k = 0; k < o->n_disks; k++) {
      const char *t = fact_str (rb->disks[o->disks[k]].facts, "completed_at");
      if (t && (at == NULL || strcmp (t, at) > 0))
        at = t;
    }
    if (at && (last_at == NULL || strcmp (at, last_at) > 0)) {
      last_at = at;
      last = o;
    }
    if (created && (first_at == NULL || strcmp (created, first_at) < 0))
      first_at = created;
  }
  if (last) {
    c->last_backup_id = (char *) last->id;
    c->last_backup_at = (char *) last_at;
    backup_type_parse (fact_str (last->facts, "job_backup_type"), &c->last_backup_type);
  }
  c->created_at = (char *) first_at;
  c->updated_at = (char *) last_at;
}

/* Insert one job with its disks through catalog_rebuild_insert (the only
 * call of it: the catalog's contract lives here). */
static int
insert_job (struct rb *rb, struct catalog *cat, struct rb_job *j)
{
  const struct rb_repo *r = &rb->repos[j->repo];
  struct cat_repository repo = { .id = r->id, .name = r->name ? r->name : r->id,
                                 .type = r->type ? r->type : "local", .path = r->path,
                                 .created_at = r->created_at };
  struct cat_context ctx;
  CLEANUP_FREE struct cat_disk *disks = calloc (j->n_disks, sizeof *disks);
  struct cat_job job = { 0 };
  char now[32];
  const char *completed = NULL;

  if (disks == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  id_now (now, sizeof now);
  if (repo.created_at == NULL)
    repo.created_at = now;
  context_of (rb, j, &ctx);
  if (ctx.created_at == NULL)
    ctx.created_at = now;
  if (ctx.updated_at == NULL)
    ctx.updated_at = now;
  for (size_t i = 0; i < j->n_disks; i++) {
    struct rb_disk *d = &rb->disks[j->disks[i]];
    struct cat_disk *c = &disks[i];
    const char *t = fact_str (d->facts, "completed_at");
    bool missing;
    struct rb_job *p = parent_job (rb, j, d, &missing);

    c->backup_job_id = (char *) j->id;
    c->context_id = ctx.context_id;
    c->disk_index = d->disk_index;
    c->vmware_disk_key = fact_int (d->facts, "vmware_disk_key", -1);
    c->unit_number = fact_int (d->facts, "unit_number", -1);
    c->size_bytes = fact_int (d->facts, "size_bytes", 0);
    if (backup_type_parse (fact_str (d->facts, "backup_type"), &c->backup_type) == -1)
      c->backup_type = p ? BACKUP_INCREMENTAL : BACKUP_FULL;
    c->disk_change_id = (char *) fact_str (d->facts, "change_id");
    c->qcow2_path = d->rel;
    c->parent_disk_id = p ? job_disk (rb, p, d->disk_index)->row_id : -1;
    if (p && c->parent_disk_id <= 0) {
      error_set (ERR_CONFLICT, "its parent %s was not inserted", p->id);
      return -1;
    }
    c->bytes_transferred = fact_int (d->facts, "bytes_transferred", 0);
    c->status = DISK_COMPLETED;
    c->created_at = (char *) (fact_str (d->facts, "created_at") ?: now);
    c->completed_at = (char *) (t ?: now);
    c->full_reason = (char *) fact_str (d->facts, "full_reason");
    if (t && (completed == NULL || strcmp (t, completed) > 0))
      completed = t;
  }
  job.id = (char *) j->id;
  job.context_id = ctx.context_id;
  job.vm_name = ctx.vm_name;
  job.repository_id = r->id;
  if (backup_type_parse (fact_str (j->facts, "job_backup_type"), &job.backup_type) == -1)
    job.backup_type = BACKUP_FULL;
  job.status = JOB_COMPLETED;
  job.created_at = (char *) (fact_str (j->facts, "job_created_at") ?: now);
  job.completed_at = (char *) (completed ?: now);
  if (job_driver_parse (fact_str (j->facts, "job_driver"), &job.driver) == -1)
    job.driver = DRIVER_AGENT;
  job.n_disks = j->n_disks;
  job.disks = disks;

  if (catalog_rebuild_insert (cat, &repo, &ctx, &job) == -1)
    return -1;
  for (size_t i = 0; i < j->n_disks; i++)
    rb->disks[j->disks[i]].row_id = disks[i].id;
  return 0;
}

/* --- Report -------------------------------------------------------------- */

static json_t *
report_json (struct rb *rb, int failed_inserts)
{
  json_t *o = json_object (), *repos = json_array (), *ctxs = json_array ();
  json_t *jobs = json_array (), *disks = json_array (), *skips = json_array ();

  for (size_t i = 0; i < rb->n_repos; i++) {
    const struct rb_repo *r = &rb->repos[i];
    json_array_append_new (repos, json_pack ("{s:s?,s:s?,s:s?,s:s,s:s}", "id", r->id,
                                             "name", r->name, "type", r->type,
                                             "path", r->path, "from", r->origin));
  }
  for (size_t i = 0; i < rb->n_order; i++) {
    const struct rb_job *j = &rb->jobs[rb->order[i]];
    const char *cid = fact_str (j->facts, "context_id");
    struct cat_context c;
    bool seen = false;

    if (!rb->dry_run && !j->inserted)
      continue;
    for (size_t k = 0; k < i && !seen; k++) {
      const struct rb_job *prev = &rb->jobs[rb->order[k]];
      seen = prev->repo == j->repo &&
             strcmp (fact_str (prev->facts, "context_id"), cid) == 0 &&
             (rb->dry_run || prev->inserted);
    }
    if (!seen) {
      context_of (rb, j, &c);
      json_array_append_new (ctxs, json_pack ("{s:s,s:s,s:s,s:I,s:s?}", "context_id", cid,
                                              "vm_name", c.vm_name, "repository_id",
                                              c.repository_id ? c.repository_id : "",
                                              "jobs", (json_int_t) c.successful_backups,
                                              "last_backup_id", c.last_backup_id));
    }
    json_t *idx = json_array ();
    for (size_t k = 0; k < j->n_disks; k++) {
      const struct rb_disk *d = &rb->disks[j->disks[k]];
      json_array_append_new (idx, json_integer (d->disk_index));
      json_array_append_new (disks, json_pack ("{s:s,s:i,s:s?,s:s?,s:s?,s:s}",
                                               "backup_id", j->id, "disk_index", d->disk_index,
                                               "backup_type", fact_str (d->facts, "backup_type"),
                                               "parent_backup_id",
                                               fact_str (d->facts, "parent_backup_id"),
                                               "change_id", fact_str (d->facts, "change_id"),
                                               "qcow2_path", d->rel));
    }
    json_array_append_new (jobs, json_pack ("{s:s,s:s,s:s,s:s?,s:s?,s:o}", "backup_id", j->id,
                                            "context_id", cid, "vm_name",
                                            fact_str (j->facts, "vm_name"), "backup_type",
                                            fact_str (j->facts, "job_backup_type"),
                                            "created_at", fact_str (j->facts, "job_created_at"),
                                            "disks", idx));
  }
  for (size_t i = 0; i < rb->n_skips; i++)
    json_array_append_new (skips, json_pack ("{s:s,s:s}", "file", rb->skips[i].file,
                                             "reason", rb->skips[i].reason));
  json_object_set_new (o, "dry_run", json_boolean (rb->dry_run));
  json_object_set_new (o, "repositories", repos);
  json_object_set_new (o, "contexts", ctxs);
  json_object_set_new (o, "jobs", jobs);
  json_object_set_new (o, "disks", disks);
  json_object_set_new (o, "skipped", skips);
  json_object_set_new (o, "failed_inserts", json_integer (failed_inserts));
  return o;
}

static void
print_text (FILE *out, json_t *rep)
{
  size_t i;
  json_t *e;

  fprintf (out, "repositories: %zu\n", json_array_size (json_object_get (rep, "repositories")));
  json_array_foreach (json_object_get (rep, "repositories"), i, e)
    fprintf (out, "  %s \"%s\" %s: %s (%s)\n", fact_str (e, "id") ?: "?",
             fact_str (e, "name") ?: "?", fact_str (e, "type") ?: "?", fact_str (e, "path"),
             fact_str (e, "from"));
  fprintf (out, "contexts rebuilt: %zu\n", json_array_size (json_object_get (rep, "contexts")));
  json_array_foreach (json_object_get (rep, "contexts"), i, e)
    fprintf (out, "  %s: vm %s, repository %s, %" PRId64 " jobs, last %s\n",
             fact_str (e, "context_id"), fact_str (e, "vm_name"),
             fact_str (e, "repository_id"), fact_int (e, "jobs", 0),
             fact_str (e, "last_backup_id") ?: "-");
  fprintf (out, "jobs rebuilt: %zu\n", json_array_size (json_object_get (rep, "jobs")));
  json_array_foreach (json_object_get (rep, "jobs"), i, e)
    fprintf (out, "  %s: vm %s, %s, %zu disk(s), created %s\n", fact_str (e, "backup_id"),
             fact_str (e, "vm_name"), fact_str (e, "backup_type") ?: "?",
             json_array_size (json_object_get (e, "disks")), fact_str (e, "created_at") ?: "-");
  fprintf (out, "disks rebuilt: %zu\n", json_array_size (json_object_get (rep, "disks")));
  json_array_foreach (json_object_get (rep, "disks"), i, e)
    fprintf (out, "  %s disk %" PRId64 ": %s, parent %s, change id %s\n",
             fact_str (e, "backup_id"), fact_int (e, "disk_index", -1),
             fact_str (e, "backup_type") ?: "?", fact_str (e, "parent_backup_id") ?: "-",
             fact_str (e, "change_id") ?: "-");
  fprintf (out, "files skipped: %zu\n", json_array_size (json_object_get (rep, "skipped")));
  json_array_foreach (json_object_get (rep, "skipped"), i, e)
    fprintf (out, "  %s: %s\n", fact_str (e, "file"), fact_str (e, "reason"));
  if (json_is_true (json_object_get (rep, "dry_run")))
    fprintf (out, "dry run: nothing was written\n");
  else if (fact_int (rep, "failed_inserts", 0) > 0)
    fprintf (out, "committed, except %" PRId64 " job(s) the catalog refused (see above)\n",
             fact_int (rep, "failed_inserts", 0));
  else
    fprintf (out, "committed; no file was changed or deleted\n");
}

/* --- Guards -------------------------------------------------------------- */

/* Take the hub's lock on the data folder, and keep it: *fd holds it until
 * the command ends.  A dry run only probes (it creates nothing). */
static int
lock_data_dir (const char *data_dir, bool dry_run, int *fd)
{
  CLEANUP_FREE char *run = NULL;
  CLEANUP_FREE char *path = NULL;
  char pid[32];
  ssize_t n;

  if (asprintf (&run, "%s/run", data_dir) == -1 || asprintf (&path, "%s/hub.lock", run) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  if (!dry_run && mkdir (run, 0700) == -1 && errno != EEXIST) {
    error_set_errno (ERR_INVALID, errno, "creating %s", run);
    return -1;
  }
  *fd = open (path, (dry_run ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC, 0600);
  if (*fd == -1) {
    if (dry_run && errno == ENOENT)
      return 0;
    error_set_errno (ERR_INVALID, errno, "opening %s", path);
    return -1;
  }
  if (flock (*fd, LOCK_EX | LOCK_NB) == -1) {
    n = pread (*fd, pid, sizeof pid - 1, 0);
    pid[n > 0 ? n : 0] = '\0';
    pid[strcspn (pid, "\n")] = '\0';
    error_set (ERR_CONFLICT, "a hub is running on %s (pid %s, it holds %s): stop it first",
               data_dir, *pid ? pid : "unknown", path);
    return -1;
  }
  return 0;
}

/* A dry run opens no catalog that does not exist yet (opening one makes
 * it).  True when url names an SQLite file that is not there. */
static bool
sqlite_absent (const char *url)
{
  const char *p = strncmp (url, "sqlite://", 9) == 0 ? url + 9 : NULL;
  return p && access (p, F_OK) == -1;
}

/* The catalog must hold no backup job: a rebuild adds to an empty one only. */
static int
check_empty (struct catalog *cat, const char *url)
{
  struct cat_job_filter f = { .limit = 1 };
  CLEANUP_CAT_JOB_LIST struct cat_job_list jobs = { 0 };
  int64_t total = 0;

  if (catalog_backup_list (cat, &f, &jobs.v, &jobs.n, &total) == -1)
    return -1;
  if (total > 0) {
    error_set (ERR_CONFLICT, "the catalog %s already holds %" PRId64 " backup job(s); "
               "rebuild-catalog only fills a new, empty catalog (move the old one aside "
               "first)", url, total);
    return -1;
  }
  return 0;
}

int
cli_rebuild_catalog (int argc, char **argv)
{
  static const struct option opts[] = {
    { "data-dir", required_argument, NULL, 'D' },
    { "db", required_argument, NULL, 'd' },
    { "db-password-file", required_argument, NULL, 'p' },
    { "repository", required_argument, NULL, 'r' },
    { "dry-run", no_argument, NULL, 'n' },
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *data_dir = NULL, *url = NULL, *password_file = NULL;
  CLEANUP_FREE char *real_dir = NULL;
  CLEANUP_FREE char *default_url = NULL;
  CLEANUP_FREE char *default_repo = NULL;
  CLEANUP_FREE const char **extra = calloc (argc + 1, sizeof *extra);
  CLEANUP_FD int lock_fd = -1;
  CLEANUP_JSON json_t *rep = NULL;
  struct catalog *cat = NULL;
  struct rb rb = { 0 };
  size_t n_extra = 0;
  bool json = false;
  int c, failed = 0, status = 1;

  if (extra == NULL) {
    fprintf (stderr, "strata rebuild-catalog: out of memory\n");
    return 1;
  }
  optind = 1;
  opterr = 0;
  while ((c = getopt_long (argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'D': data_dir = optarg; break;
    case 'd': url = optarg; break;
    case 'p': password_file = optarg; break;
    case 'r': extra[n_extra++] = optarg; break;
    case 'n': rb.dry_run = true; break;
    case 'j': json = true; break;
    case 'h':
      printf ("Usage: strata rebuild-catalog --data-dir DIR [--db URL] [--db-password-file FILE]\n"
              "         [--repository DIR]... [--dry-run] [--json]\n"
              "Rebuild a lost catalog from the manifests next to the backup files: the\n"
              "repositories (DIR/repository, the folders of DIR/repositories.json and each\n"
              "--repository), their contexts, and every completed job whose disks all have a\n"
              "readable manifest, with change ids and parents.  Files it cannot use are\n"
              "listed with the reason; nothing is ever deleted.  The hub must be stopped,\n"
              "and the catalog (default sqlite://DIR/catalog.db) must hold no backup.\n"
              "The VM inventory and policies are not in the manifests: add them again.\n"
              "Exit status: 0 on success, 1 on failure or refusal (a hub runs, the catalog\n"
              "has backups, a job the catalog refused), 2 on a usage error.\n");
      return 0;
    default:
      fprintf (stderr, "strata rebuild-catalog: unknown or incomplete option '%s'\n",
               argv[optind - 1]);
      return 2;
    }
  }
  if (optind < argc || data_dir == NULL) {
    fprintf (stderr, "strata rebuild-catalog: %s (see strata rebuild-catalog --help)\n",
             data_dir ? "unexpected argument" : "--data-dir DIR is required");
    return 2;
  }
  real_dir = realpath (data_dir, NULL);
  if (real_dir == NULL) {
    fprintf (stderr, "strata rebuild-catalog: data folder %s: %s\n", data_dir,
             strerror (errno));
    return 1;
  }
  rb.data_dir = real_dir;
  if (url == NULL) {
    if (asprintf (&default_url, "sqlite://%s/catalog.db", real_dir) == -1) {
      default_url = NULL;
      fprintf (stderr, "strata rebuild-catalog: out of memory\n");
      return 1;
    }
    url = default_url;
  }

  if (lock_data_dir (real_dir, rb.dry_run, &lock_fd) == -1)
    goto out;
  if (!(rb.dry_run && sqlite_absent (url))) {
    cat = catalog_open_auth (url, password_file);
    if (cat == NULL || check_empty (cat, url) == -1)
      goto out;
  }

  if (asprintf (&default_repo, "%s/repository", real_dir) == -1) {
    default_repo = NULL;
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    goto out;
  }
  if ((access (default_repo, F_OK) == 0 &&
       add_repo (&rb, default_repo, NULL, NULL, NULL, "the data folder") == -1) ||
      add_listed_repos (&rb) == -1)
    goto out;
  for (size_t i = 0; i < n_extra; i++)
    if (add_repo (&rb, extra[i], NULL, NULL, NULL, "--repository") == -1)
      goto out;
  for (size_t i = 0; i < rb.n_repos; i++) {
    size_t before = rb.n_disks;
    if (read_repo_file (&rb, &rb.repos[i]) == -1 || scan_repo (&rb, i) == -1)
      goto out;
    /* No identity file and no list naming it: the manifests know the id. */
    if (rb.repos[i].id == NULL && rb.n_disks > before) {
      const char *id = fact_str (rb.disks[before].facts, "repository_id");
      if (id && id_valid (id)) {
        rb.repos[i].id = strdup (id);
        rb.repos[i].origin = "the manifests";
      }
    }
    if (rb.repos[i].id == NULL) {
      for (size_t k = before; k < rb.n_disks; k++)
        if (skip (&rb, rb.repos[i].path, rb.disks[k].rel, "the repository's id is unknown "
                  "(no %s, no repository_id in the manifest)", RB_REPO_FILE) == -1)
          goto out;
      rb.repos[i].origin = "unknown";
      while (rb.n_disks > before) {
        rb.n_disks--;
        free (rb.disks[rb.n_disks].rel);
        json_decref (rb.disks[rb.n_disks].facts);
      }
    }
  }
  if (group_jobs (&rb) == -1 || order_jobs (&rb) == -1)
    goto out;

  for (size_t i = 0; i < rb.n_order && !rb.dry_run; i++) {
    struct rb_job *j = &rb.jobs[rb.order[i]];
    if (insert_job (&rb, cat, j) == 0)
      j->inserted = true;
    else {
      char why[1200];
      snprintf (why, sizeof why, "the catalog refused the job: %s", error_message ());
      failed++;
      if (skip_job (&rb, j, why) == -1)
        goto out;
    }
  }
  rep = report_json (&rb, failed);
  if (json) {
    json_dumpf (rep, stdout, STRATA_JSON_PRETTY);
    fputc ('\n', stdout);
  }
  else
    print_text (stdout, rep);
  status = failed ? 1 : 0;
  error_clear ();

 out:
  if (status == 1 && error_category () != ERR_NONE)
    fprintf (stderr, "strata rebuild-catalog: %s\n", error_message ());
  catalog_close (cat);
  rb_clear (&rb);
  return status;
}
