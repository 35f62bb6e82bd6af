/* hub/recovery.c - what a start does after a stop or a crash.
 *
 * Recovery relies on the ordering rule of storage/repo.h (files are made
 * before their rows and deleted after them): a file no row owns is a
 * leftover of a crash and is deleted; a row whose file is missing means
 * data was lost outside the hub, and the row (with everything backed by it)
 * is marked failed so nothing builds on it.  Then the disks of running jobs
 * are exported again under their old names, so agents can reconnect, and
 * the hub-driven jobs that were running or finishing go back to the
 * workers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hub/hub-int.h"
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
  struct cat_disk *disks = NULL;
  size_t n = 0;

  if (catalog_running_disks (hub->cat, &disks, &n) == -1) {
    log_error ("listing running disks: %s", error_message ());
    return;
  }
  for (size_t i = 0; i < n; i++) {
    struct cat_repository repo = { 0 };
    CLEANUP_FREE char *path = NULL;
    struct cat_job job = { 0 };

    if (disks[i].nbd_export == NULL || disks[i].qcow2_path == NULL)
      continue;
    if (catalog_backup_get (hub->cat, disks[i].backup_job_id, &job) == -1 ||
        catalog_repo_get (hub->cat, job.repository_id, &repo) == -1) {
      log_error ("re-exporting %s disk %d: %s", disks[i].backup_job_id,
                 disks[i].disk_index, error_message ());
      cat_job_clear (&job);
      continue;
    }
    path = repo_abspath (repo.path, disks[i].qcow2_path);
    if (path && qsd_export_add (hub->qsd, disks[i].nbd_export, path, true) == 0)
      log_info ("re-exported %s disk %d", disks[i].backup_job_id, disks[i].disk_index);
    else
      log_error ("re-exporting %s disk %d: %s", disks[i].backup_job_id,
                 disks[i].disk_index, error_message ());
    cat_repository_clear (&repo);
    cat_job_clear (&job);
  }
  cat_disk_free_array (disks, n);
}

/* Hub-driven jobs that were running or finishing when the last hub
 * stopped or died: the workers run them again (a finishing one only owes
 * its bitmap commit, which is redone from the start). */
void
hub_requeue_jobs (struct hub *hub)
{
  static const char *const states[] = { "running", "finishing" };

  for (size_t s = 0; s < sizeof states / sizeof states[0]; s++) {
    struct cat_job_filter f = { .status = states[s] };
    struct cat_job *jobs = NULL;
    size_t n = 0;
    int64_t total;

    if (catalog_backup_list (hub->cat, &f, &jobs, &n, &total) == -1) {
      log_error ("listing %s jobs: %s", states[s], error_message ());
      continue;
    }
    for (size_t i = 0; i < n; i++)
      if (jobs[i].driver && strcmp (jobs[i].driver, "hub") == 0) {
        log_info ("backup %s was %s when the hub stopped; the hub %s", jobs[i].id,
                  states[s], s == 0 ? "copies it again" : "finishes it");
        hub_workers_queue (hub, jobs[i].id);
      }
    cat_job_free_array (jobs, n);
  }
}

struct known_files {
  const char *repo_path;
  char **rels;            /* sorted, for bsearch */
  size_t n;
  int removed;
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
  log_warn ("repository %s: %s belongs to no backup (left by a crash?); deleting it",
            k->repo_path, rel);
  if (repo_remove_image (k->repo_path, rel) == -1) {
    log_error ("%s", error_message ());
    return 0;
  }
  k->removed++;
  return 0;
}

int
hub_recover_files (struct hub *hub)
{
  struct cat_disk *disks = NULL;
  char **repo_paths = NULL;
  struct cat_repository *repos = NULL;
  size_t n = 0, n_repos = 0;

  if (catalog_disk_files (hub->cat, &disks, &repo_paths, &n) == -1)
    return -1;
  for (size_t i = 0; i < n; i++) {
    CLEANUP_FREE char *path = repo_abspath (repo_paths[i], disks[i].qcow2_path);
    struct stat st;
    char reason[512];

    if (path == NULL)
      continue;
    /* A repository whose folder is not there is not mounted (or not
     * reachable from this machine): that says nothing about its files, so
     * its rows are left as they are. */
    if (stat (repo_paths[i], &st) == -1 || !S_ISDIR (st.st_mode)) {
      bool told = false;
      for (size_t k = 0; k < i && !told; k++)
        told = strcmp (repo_paths[k], repo_paths[i]) == 0;
      if (!told)
        log_error ("repository folder %s is not reachable: its backups are left as they "
                   "are until it is", repo_paths[i]);
      continue;
    }
    if (stat (path, &st) == 0) {
      /* A crash between recording and sealing leaves it writable. */
      if (strcmp (disks[i].status, "completed") == 0 &&
          repo_seal_image (repo_paths[i], disks[i].qcow2_path) == -1)
        log_warn ("%s", error_message ());
      continue;
    }
    snprintf (reason, sizeof reason, "file %s missing at start-up", path);
    log_error ("backup %s disk %d: %s; marking it (and the backups built on it) failed",
               disks[i].backup_job_id, disks[i].disk_index, reason);
    if (strcmp (disks[i].status, "running") == 0 ||
        strcmp (disks[i].status, "pending") == 0) {
      struct cat_disk *dropped = NULL;
      size_t nd = 0;
      if (catalog_backup_end (hub->cat, disks[i].backup_job_id, "failed",
                              disks[i].disk_index, reason, &dropped, &nd) == 0) {
        hub_drop_disks (hub, repo_paths[i], dropped, nd);
        cat_disk_free_array (dropped, nd);
      }
    }
    else if (catalog_disk_lost (hub->cat, disks[i].id, reason) == -1)
      log_error ("%s", error_message ());
  }
  for (size_t i = 0; i < n; i++)
    free (repo_paths[i]);
  free (repo_paths);
  cat_disk_free_array (disks, n);

  /* Now the files: collect what rows own per repository, delete the rest. */
  if (catalog_repo_list (hub->cat, &repos, &n_repos) == -1)
    return -1;
  if (catalog_disk_files (hub->cat, &disks, &repo_paths, &n) == -1) {
    cat_repository_free_array (repos, n_repos);
    return -1;
  }
  for (size_t r = 0; r < n_repos; r++) {
    struct known_files k = { .repo_path = repos[r].path };
    k.rels = calloc (n + 1, sizeof *k.rels);
    if (k.rels == NULL)
      break;
    for (size_t i = 0; i < n; i++)
      if (strcmp (repo_paths[i], repos[r].path) == 0)
        k.rels[k.n++] = disks[i].qcow2_path;
    qsort (k.rels, k.n, sizeof *k.rels, cmp_str);
    if (repo_scan (repos[r].path, remove_orphan, &k) == -1)
      log_warn ("%s", error_message ());
    repo_prune (repos[r].path);
    if (k.removed)
      log_warn ("repository %s: deleted %d file(s) that no backup owned",
                repos[r].id, k.removed);
    free (k.rels);
  }
  for (size_t i = 0; i < n; i++)
    free (repo_paths[i]);
  free (repo_paths);
  cat_disk_free_array (disks, n);
  cat_repository_free_array (repos, n_repos);
  return 0;
}
