/* hub/recovery.c - what a start does after a stop or a crash.
 *
 * Recovery relies on the ordering rule of storage/repo.h (files are made
 * before their rows and deleted after them): a file no row owns is a
 * leftover of a crash and is deleted (with its manifest; a manifest with no
 * image, or the block part of a disk that no longer runs, goes too; a
 * repository's strata-repository.json lies outside the scanned folders and
 * is never touched); a row whose file is missing means
 * data was lost outside the hub, and the row (with everything backed by it)
 * is marked failed so nothing builds on it.  Then the disks of running jobs
 * are exported again under their old names, so agents can reconnect, and
 * the hub-driven jobs that were running or finishing go back to the
 * workers.
 *
 * Several hubs may share the catalog and the repositories (hub/identity.c):
 * a start touches only what is its own.  A file no row owns is deleted only
 * when no other hub intends it (the file of another hub's start in
 * progress, an instant before its row), re-checked in the catalog right
 * before the unlink; only this hub's running jobs are exported again,
 * requeued or failed for a missing file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub/hub-int.h"
#include "integrity/manifest.h"
#include "storage/qsd.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/log.h"

/* Export every disk that should be exported now.  Called at start and by
 * the storage daemon's supervisor after a restart. */
void
hub_reexport_running (struct hub *hub)
{
  CLEANUP_CAT_DISK_LIST struct cat_disk_list disks = { 0 };

  if (catalog_running_disks (hub->cat, hub->hub_id, &disks.v, &disks.n) == -1) {
    log_error ("listing running disks: %s", error_message ());
    return;
  }
  for (size_t i = 0; i < disks.n; i++) {
    const struct cat_disk *d = &disks.v[i];
    CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
    CLEANUP_CAT_JOB struct cat_job job = { 0 };
    CLEANUP_FREE char *path = NULL;

    if (d->nbd_export == NULL || d->qcow2_path == NULL)
      continue;
    if (catalog_backup_get (hub->cat, d->backup_job_id, &job) == 0 &&
        catalog_repo_get (hub->cat, job.repository_id, &repo) == 0 &&
        (path = repo_abspath (repo.path, d->qcow2_path)) != NULL &&
        qsd_export_add (hub->qsd, d->nbd_export, path, true) == 0)
      log_info ("re-exported %s disk %d", d->backup_job_id, d->disk_index);
    else
      log_error ("re-exporting %s disk %d: %s", d->backup_job_id, d->disk_index,
                 error_message ());
  }
}

/* This hub's hub-driven jobs that were running or finishing when it
 * stopped or died: the workers run them again (a finishing one only owes
 * its bitmap commit, which is redone from the start). */
void
hub_requeue_jobs (struct hub *hub)
{
  static const enum job_status states[] = { JOB_RUNNING, JOB_FINISHING };

  for (size_t s = 0; s < sizeof states / sizeof states[0]; s++) {
    struct cat_job_filter f = { .by_status = true, .status = states[s] };
    CLEANUP_CAT_JOB_LIST struct cat_job_list jobs = { 0 };
    int64_t total;

    if (catalog_backup_list (hub->cat, &f, &jobs.v, &jobs.n, &total) == -1) {
      log_error ("listing %s jobs: %s", job_status_name (states[s]), error_message ());
      continue;
    }
    for (size_t i = 0; i < jobs.n; i++)
      if (jobs.v[i].driver == DRIVER_HUB && hub_owns (hub, jobs.v[i].owner_hub)) {
        log_info ("backup %s was %s when the hub stopped; the hub %s", jobs.v[i].id,
                  job_status_name (states[s]),
                  states[s] == JOB_RUNNING ? "copies it again" : "finishes it");
        hub_workers_queue (hub, jobs.v[i].id);
      }
  }
}

struct known_files {
  struct hub *hub;
  const struct cat_repository *repo;
  const char *repo_path;
  char **rels;            /* sorted, for bsearch */
  size_t n;
  int removed, kept;
};

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static int
remove_orphan (const char *rel, void *opaque)
{
  struct known_files *k = opaque;
  const char *key = rel;

  if (bsearch (&key, k->rels, k->n, sizeof *k->rels, cmp_str))
    return 0;
  /* Open in a QEMU process: a backup being started right now, by another
   * hub that shares the catalog and the repository (its files exist an
   * instant before its rows).  Never delete what someone is using. */
  if (repo_image_in_use (k->repo_path, rel)) {
    log_warn ("repository %s: %s belongs to no backup yet but is open in a QEMU "
              "process (a backup another hub is starting?); leaving it", k->repo_path, rel);
    return 0;
  }
  /* With a manifest, it was a completed backup.  If the catalog does not
   * even know its context, the catalog was lost (or is older than the
   * repository): never delete that.  (A context's folder is retired
   * before its rows go, so a crash in a context delete never leaves such a
   * folder; in a known context, a crash after a delete was recorded leaves
   * images the catalog no longer wants.) */
  {
    CLEANUP_FREE char *path = repo_abspath (k->repo_path, rel);
    CLEANUP_FREE char *mf = path ? mf_path_for (path) : NULL;
    CLEANUP_FREE char *ctx_id = strndup (rel, strcspn (rel, "/"));
    CLEANUP_CAT_CONTEXT struct cat_context ctx = { 0 };
    struct stat st;
    if (mf && ctx_id && stat (mf, &st) == 0 &&
        catalog_context_get (k->hub->cat, ctx_id, &ctx) == -1 &&
        error_category () == ERR_NOT_FOUND) {
      log_error ("repository %s: %s is a completed backup (it has a manifest) of a "
                 "context the catalog does not know: it is kept (was the catalog lost, "
                 "or is it older than the repository?  `strata rebuild-catalog` "
                 "rebuilds a catalog from the manifests; delete the folder by hand if "
                 "it is not wanted)", k->repo_path, rel);
      k->kept++;
      return 0;
    }
  }
  /* The listing is older than this instant: ask again, and take the path
   * under this hub's intent, in one transaction, so that no hub starts a
   * backup into that name while it goes.  A path another hub intends is
   * that hub's start in progress (or its crash, which its own next start
   * cleans up). */
  {
    CLEANUP_FREE char *other = NULL, *job = NULL;
    switch (catalog_intent_orphan (k->hub->cat, k->repo->id, rel, k->hub->hub_id, &other,
                                   &job)) {
    case CAT_FILE_ORPHAN:
      break;
    case CAT_FILE_OWNED:
      return 0;
    case CAT_FILE_INTENDED:
      log_info ("repository %s: %s belongs to no backup yet, but to hub %s's start%s%s "
                "in progress; leaving it to that hub", k->repo_path, rel, other,
                job ? " of " : "", job ? job : "");
      k->kept++;
      return 0;
    default:
      log_error ("repository %s: %s: %s; leaving it", k->repo_path, rel, error_message ());
      return 0;
    }
  }
  log_warn ("repository %s: %s belongs to no backup (left by a crash?); deleting it",
            k->repo_path, rel);
  hub_file_undo (k->hub, k->repo, rel);
  k->removed++;
  return 0;
}

struct manifest_check {
  struct hub *hub;
  const char *repo_path;
  char **running;         /* images of running disks, sorted */
  size_t n;
  int removed;
};

/* Whether another hub has an active job or a running task in the context
 * of rel (its first component).  On an error, true: keep the file. */
static bool
other_hub_busy (struct hub *hub, const char *rel)
{
  static const enum job_status states[] = { JOB_RUNNING, JOB_FINISHING };
  CLEANUP_FREE char *ctx = strndup (rel, strcspn (rel, "/"));
  CLEANUP_CAT_TASK_LIST struct cat_task_list tasks = { 0 };

  if (ctx == NULL ||
      catalog_task_list (hub->cat, true, TASK_RUNNING, &tasks.v, &tasks.n) == -1)
    return true;
  for (size_t i = 0; i < tasks.n; i++)
    if (!hub_owns (hub, tasks.v[i].owner_hub) && tasks.v[i].context_id &&
        strcmp (tasks.v[i].context_id, ctx) == 0)
      return true;
  for (size_t s = 0; s < sizeof states / sizeof states[0]; s++) {
    struct cat_job_filter f = { .by_status = true, .status = states[s] };
    CLEANUP_CAT_JOB_LIST struct cat_job_list jobs = { 0 };
    int64_t total;

    if (catalog_backup_list (hub->cat, &f, &jobs.v, &jobs.n, &total) == -1)
      return true;
    for (size_t i = 0; i < jobs.n; i++)
      if (!hub_owns (hub, jobs.v[i].owner_hub) && strcmp (jobs.v[i].context_id, ctx) == 0)
        return true;
  }
  return false;
}

/* A manifest goes when its image is gone (the image was an orphan, or a
 * crash fell between the two unlinks); a block part goes unless its disk
 * is running (a disk that completes finishes it; no other will). */
static int
remove_stale_manifest (const char *rel, void *opaque)
{
  struct manifest_check *m = opaque;
  size_t n = strlen (rel);
  bool part = n > 5 && strcmp (rel + n - 5, ".part") == 0;
  const char *temp = strstr (rel, ".qcow2" REPO_MANIFEST_SUFFIX ".");
  CLEANUP_FREE char *image_rel = NULL;
  CLEANUP_FREE char *image = NULL;
  CLEANUP_FREE char *path = repo_abspath (m->repo_path, rel);
  const char *key;
  struct stat st;

  /* A temporary file of a manifest, part or upload being written when the
   * last hub stopped: nobody writes it any more, unless another hub works
   * in its context. */
  if (temp && !part && other_hub_busy (m->hub, rel)) {
    log_info ("repository %s: %s is a temporary file of a manifest, in a context where "
              "another hub works; leaving it", m->repo_path, rel);
    return 0;
  }
  if (temp && !part) {
    log_warn ("repository %s: %s is a temporary file of a manifest; deleting it",
              m->repo_path, rel);
    if (path && unlink (path) == 0)
      m->removed++;
    return 0;
  }
  image_rel = strndup (rel, n - (part ? 5 : 0) - strlen (REPO_MANIFEST_SUFFIX));
  image = image_rel ? repo_abspath (m->repo_path, image_rel) : NULL;
  key = image_rel;

  if (image == NULL || path == NULL)
    return 0;
  if (part ? bsearch (&key, m->running, m->n, sizeof *m->running, cmp_str) != NULL
           : stat (image, &st) == 0)
    return 0;
  log_warn ("repository %s: %s %s; deleting it", m->repo_path, rel,
            part ? "is the manifest part of no running disk" : "is the manifest of no image");
  if (unlink (path) == -1)
    log_error ("deleting %s: %m", path);
  else
    m->removed++;
  return 0;
}

/* What catalog_disk_files returns, freed at the end of its scope. */
struct disk_files {
  struct cat_disk *disks;
  char **repo_paths;          /* parallel to disks */
  size_t n;
};

static void
disk_files_clear (struct disk_files *f)
{
  for (size_t i = 0; f->repo_paths && i < f->n; i++)
    free (f->repo_paths[i]);
  free (f->repo_paths);
  cat_disk_free_array (f->disks, f->n);
}
#define CLEANUP_DISK_FILES __attribute__((cleanup (disk_files_clear)))

/* Check every row that has a file: seal a completed one's file that a
 * crash left writable; a missing file fails its running job, or marks the
 * disk (and what is built on it) lost. */
static int
check_rows (struct hub *hub)
{
  CLEANUP_DISK_FILES struct disk_files f = { 0 };

  if (catalog_disk_files (hub->cat, &f.disks, &f.repo_paths, &f.n) == -1)
    return -1;
  for (size_t i = 0; i < f.n; i++) {
    const struct cat_disk *d = &f.disks[i];
    CLEANUP_FREE char *path = repo_abspath (f.repo_paths[i], d->qcow2_path);
    struct stat st;
    char reason[512];

    if (path == NULL)
      continue;
    /* A repository whose folder is not there is not mounted (or not
     * reachable from this machine): that says nothing about its files, so
     * its rows are left as they are. */
    if (stat (f.repo_paths[i], &st) == -1 || !S_ISDIR (st.st_mode)) {
      bool told = false;
      for (size_t k = 0; k < i && !told; k++)
        told = strcmp (f.repo_paths[k], f.repo_paths[i]) == 0;
      if (!told)
        log_error ("repository folder %s is not reachable: its backups are left as they "
                   "are until it is", f.repo_paths[i]);
      continue;
    }
    if (stat (path, &st) == 0) {
      /* A crash between recording and sealing leaves it writable. */
      if (d->status == DISK_COMPLETED &&
          repo_seal_image (f.repo_paths[i], d->qcow2_path) == -1)
        log_warn ("%s", error_message ());
      continue;
    }
    snprintf (reason, sizeof reason, "file %s missing at start-up", path);
    log_error ("backup %s disk %d: %s; marking it (and the backups built on it) failed",
               d->backup_job_id, d->disk_index, reason);
    if (d->status == DISK_RUNNING || d->status == DISK_PENDING) {
      CLEANUP_CAT_DISK_LIST struct cat_disk_list dropped = { 0 };
      CLEANUP_CAT_JOB struct cat_job job = { 0 };
      /* Another hub's running job is that hub's to end. */
      if (catalog_backup_get (hub->cat, d->backup_job_id, &job) == 0 &&
          job.status == JOB_RUNNING && !hub_owns (hub, job.owner_hub)) {
        log_error ("backup %s is run by hub %s, which ends it", d->backup_job_id,
                   job.owner_hub ? job.owner_hub : "(none)");
        continue;
      }
      cat_job_clear (&job);
      if (catalog_backup_end (hub->cat, d->backup_job_id, JOB_FAILED, d->disk_index,
                              reason, &dropped.v, &dropped.n) == 0) {
        hub_drop_disks (hub, f.repo_paths[i], dropped.v, dropped.n);
        if (catalog_backup_get (hub->cat, d->backup_job_id, &job) == 0)
          hub_metrics_job_ended (&job);
      }
    }
    else if (catalog_disk_lost (hub->cat, d->id, reason) == -1)
      log_error ("%s", error_message ());
  }
  return 0;
}

/* Collect what rows own per repository and delete the rest. */
static int
remove_orphans (struct hub *hub)
{
  CLEANUP_CAT_REPO_LIST struct cat_repository_list repos = { 0 };
  CLEANUP_CAT_DISK_LIST struct cat_disk_list running = { 0 };
  CLEANUP_DISK_FILES struct disk_files f = { 0 };
  CLEANUP_FREE char **running_rels = NULL;
  size_t n_running = 0;

  if (catalog_repo_list (hub->cat, &repos.v, &repos.n) == -1 ||
      catalog_disk_files (hub->cat, &f.disks, &f.repo_paths, &f.n) == -1 ||
      catalog_running_disks (hub->cat, NULL, &running.v, &running.n) == -1)
    return -1;
  running_rels = calloc (running.n + 1, sizeof *running_rels);
  if (running_rels == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < running.n; i++)
    if (running.v[i].qcow2_path)
      running_rels[n_running++] = running.v[i].qcow2_path;
  qsort (running_rels, n_running, sizeof *running_rels, cmp_str);
  for (size_t r = 0; r < repos.n; r++) {
    const struct cat_repository *repo = &repos.v[r];
    struct known_files k = { .hub = hub, .repo = repo, .repo_path = repo->path };
    k.rels = calloc (f.n + 1, sizeof *k.rels);
    if (k.rels == NULL)
      break;
    for (size_t i = 0; i < f.n; i++)
      if (strcmp (f.repo_paths[i], repo->path) == 0)
        k.rels[k.n++] = f.disks[i].qcow2_path;
    qsort (k.rels, k.n, sizeof *k.rels, cmp_str);
    struct manifest_check m = { .hub = hub, .repo_path = repo->path, .running = running_rels,
                                .n = n_running };
    if (repo_scan (repo->path, remove_orphan, &k) == -1 ||
        repo_scan_manifests (repo->path, remove_stale_manifest, &m) == -1)
      log_warn ("%s", error_message ());
    k.removed += m.removed;
    repo_prune (repo->path);
    if (k.removed)
      log_warn ("repository %s: deleted %d file(s) that no backup owned",
                repo->id, k.removed);
    free (k.rels);
  }
  /* No start of this hub is in progress: its intents left are spent (their
   * files, if any, went above). */
  {
    int64_t n;
    if (catalog_intent_clear_hub (hub->cat, hub->hub_id, &n) == -1)
      log_error ("forgetting this hub's file intents: %s", error_message ());
    else if (n > 0)
      log_info ("forgot %lld file intent(s) of starts this hub did not finish", (long long) n);
  }
  return 0;
}

/* A context folder retired by a delete that the last hub did not finish:
 * back, when the catalog still has the context (the delete was not
 * recorded), else gone. */
struct retired_check {
  struct hub *hub;
  const char *repo_path;
};

static int
settle_retired (const char *context_id, void *opaque)
{
  struct retired_check *r = opaque;
  CLEANUP_CAT_CONTEXT struct cat_context ctx = { 0 };

  if (catalog_context_get (r->hub->cat, context_id, &ctx) == 0) {
    log_warn ("repository %s: the delete of context %s was cut off before it was "
              "recorded; its folder is put back", r->repo_path, context_id);
    if (repo_unretire_context (r->repo_path, context_id) == -1)
      log_error ("%s", error_message ());
  }
  else if (error_category () == ERR_NOT_FOUND) {
    log_warn ("repository %s: removing the folder of deleted context %s", r->repo_path,
              context_id);
    if (repo_remove_context (r->repo_path, context_id) == -1)
      log_error ("%s", error_message ());
  }
  else
    log_error ("%s", error_message ());
  return 0;
}

static void
settle_retired_contexts (struct hub *hub)
{
  CLEANUP_CAT_REPO_LIST struct cat_repository_list repos = { 0 };

  if (catalog_repo_list (hub->cat, &repos.v, &repos.n) == -1) {
    log_error ("%s", error_message ());
    return;
  }
  for (size_t r = 0; r < repos.n; r++) {
    struct retired_check rc = { hub, repos.v[r].path };
    if (repo_scan_retired (repos.v[r].path, settle_retired, &rc) == -1)
      log_warn ("%s", error_message ());
  }
}

int
hub_recover_files (struct hub *hub)
{
  settle_retired_contexts (hub);
  if (check_rows (hub) == -1)
    return -1;
  return remove_orphans (hub);
}
