/* hub/hub.c - opening the hub and recovering after a crash.
 *
 * Start-up order: data folder, catalog (migrations), the default
 * repository on a first start, the storage daemon, then recovery.  Recovery
 * relies on the ordering rule of storage/repo.h (files are made before their
 * rows and deleted after them): a file no row owns is a leftover of a crash
 * and is deleted; a row whose file is missing means data was lost outside
 * the hub, and the row (with everything backed by it) is marked failed so
 * nothing builds on it.  Finally the disks of jobs that were running are
 * exported again under their old names, so agents can reconnect.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub/hub-int.h"
#include "storage/qsd.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

char *
hub_nbd_uri (struct hub *hub, const char *export_name)
{
  char *uri;
  int r;

  if (hub->nbd_tls_user)
    r = asprintf (&uri, hub->nbd.ipv6 ? "nbds://%s@[%s]:%d/%s" : "nbds://%s@%s:%d/%s",
                  hub->nbd_tls_user, hub->nbd.host, hub->nbd.port, export_name);
  else
    r = asprintf (&uri, hub->nbd.ipv6 ? "nbd://[%s]:%d/%s" : "nbd://%s:%d/%s",
                  hub->nbd.host, hub->nbd.port, export_name);
  return r == -1 ? NULL : uri;
}

bool
hub_storage_up (struct hub *hub)
{
  return qsd_pid (hub->qsd) != 0;
}

/* Read the API token: the first line of the file, which must not be empty. */
static char *
read_token (const char *file)
{
  CLEANUP_FREE char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  FILE *fp = fopen (file, "r");
  struct stat st;

  if (fp == NULL) {
    error_set_errno (ERR_INVALID, errno, "API token file %s", file);
    return NULL;
  }
  if (fstat (fileno (fp), &st) == 0 && (st.st_mode & 077))
    log_warn ("API token file %s can be read by other users; chmod 600 it", file);
  len = getline (&line, &cap, fp);
  fclose (fp);
  if (len > 0 && (size_t) len != strlen (line)) {
    error_set (ERR_INVALID, "API token file %s: the token has a NUL byte", file);
    return NULL;
  }
  while (len > 0 && strchr (" \t\r\n", line[len - 1]))
    line[--len] = '\0';
  if (len <= 0 || strspn (line, " \t") > 0) {
    error_set (ERR_INVALID, "API token file %s: the first line must hold the token, "
               "with no blanks before it", file);
    return NULL;
  }
  for (ssize_t i = 0; i < len; i++)
    if ((unsigned char) line[i] <= ' ' || line[i] == 0x7f) {
      error_set (ERR_INVALID, "API token file %s: the token must not contain blanks "
                 "or control characters", file);
      return NULL;
    }
  if (len > 4096) {
    error_set (ERR_INVALID, "API token file %s: the token is longer than 4096 bytes", file);
    return NULL;
  }
  char *ret = line;
  line = NULL;
  return ret;
}

/* Check the NBD pre-shared keys file (IDENTITY:HEXKEY lines, keys of 128
 * bits or more) and install it as DATA-DIR/run/tls/keys.psk, where the
 * storage daemon reads it.  The first identity goes into the URIs. */
static int
install_psk (struct hub *hub, char **tls_dir)
{
  CLEANUP_FREE char *line = NULL;
  CLEANUP_FREE char *keys = NULL;
  CLEANUP_FREE char *tmp = NULL;
  size_t cap = 0, keys_len = 0;
  FILE *fp = fopen (hub->cfg.nbd_tls_psk_file, "r"), *out = NULL;
  ssize_t len;
  int lineno = 0;

  *tls_dir = NULL;
  if (fp == NULL) {
    error_set_errno (ERR_INVALID, errno, "NBD PSK file %s", hub->cfg.nbd_tls_psk_file);
    return -1;
  }
  out = open_memstream (&keys, &keys_len);
  if (out == NULL) {
    fclose (fp);
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  while ((len = getline (&line, &cap, fp)) != -1) {
    char *colon;
    size_t idlen, hexlen;

    lineno++;
    while (len > 0 && strchr (" \t\r\n", line[len - 1]))
      line[--len] = '\0';
    if (len == 0)
      continue;
    colon = strchr (line, ':');
    idlen = colon ? (size_t) (colon - line) : 0;
    hexlen = colon ? strlen (colon + 1) : 0;
    *(colon ? colon : line) = '\0';
    if (colon == NULL || idlen == 0 || idlen > 64 || !id_valid (line) ||
        hexlen < 32 || hexlen % 2 != 0 || strspn (colon + 1, "0123456789abcdefABCDEF") != hexlen) {
      error_set (ERR_INVALID, "NBD PSK file %s:%d: expected IDENTITY:HEXKEY with an "
                 "identity of [A-Za-z0-9._-] and a key of at least 32 hex digits",
                 hub->cfg.nbd_tls_psk_file, lineno);
      goto fail;
    }
    if (hub->nbd_tls_user == NULL && (hub->nbd_tls_user = strdup (line)) == NULL)
      goto oom;
    fprintf (out, "%s:%s\n", line, colon + 1);
  }
  fclose (fp);
  fp = NULL;
  fclose (out);
  out = NULL;
  if (hub->nbd_tls_user == NULL) {
    error_set (ERR_INVALID, "NBD PSK file %s holds no key", hub->cfg.nbd_tls_psk_file);
    return -1;
  }

  if (asprintf (tls_dir, "%s/tls", hub->run_dir) == -1 ||
      asprintf (&tmp, "%s/keys.psk.tmp", *tls_dir) == -1)
    goto oom;
  if (mkdir (*tls_dir, 0700) == -1 && errno != EEXIST) {
    error_set_errno (ERR_INTERNAL, errno, "creating %s", *tls_dir);
    goto fail;
  }
  {
    CLEANUP_FREE char *final = NULL;
    CLEANUP_FD int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1 || write (fd, keys, keys_len) != (ssize_t) keys_len || fsync (fd) == -1 ||
        asprintf (&final, "%s/keys.psk", *tls_dir) == -1 || rename (tmp, final) == -1) {
      error_set_errno (ERR_INTERNAL, errno, "installing the NBD keys in %s", *tls_dir);
      unlink (tmp);
      goto fail;
    }
  }
  return 0;

 oom:
  error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
 fail:
  if (fp)
    fclose (fp);
  if (out)
    fclose (out);
  free (*tls_dir);
  *tls_dir = NULL;
  return -1;
}

/* Export every disk that should be exported now.  Called at start and by
 * the storage daemon's supervisor after a restart. */
static void
reexport_running (struct hub *hub)
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

static void
on_qsd_restart (struct qsd *q, void *opaque)
{
  struct hub *hub = opaque;
  SCOPED_LOCK (&hub->lock);
  log_warn ("storage daemon restarted; exporting the running disks and the restores "
            "again");
  reexport_running (hub);
  hub_restores_reexport (hub);
}

/* Hub-driven jobs that were running or finishing when the last hub
 * stopped or died: the workers run them again (a finishing one only owes
 * its bitmap commit, which is redone from the start). */
static void
requeue_hub_driven (struct hub *hub)
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

/* --source-dirs: each folder resolved (it must exist), so that sources
 * are compared with real paths. */
static int
resolve_source_dirs (struct hub *hub)
{
  const char *p = hub->cfg.source_dirs;
  size_t n = 1;

  for (const char *c = p; *c; c++)
    n += *c == ':';
  hub->source_dirs = calloc (n + 1, sizeof *hub->source_dirs);
  if (hub->source_dirs == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    const char *end = strchrnul (p, ':');
    CLEANUP_FREE char *dir = strndup (p, end - p);
    struct stat st;

    if (dir == NULL) {
      error_set_errno (ERR_INTERNAL, errno, "out of memory");
      return -1;
    }
    if ((hub->source_dirs[i] = realpath (dir, NULL)) == NULL ||
        stat (hub->source_dirs[i], &st) == -1) {
      error_set_errno (ERR_INVALID, errno, "--source-dirs: folder %s", dir);
      return -1;
    }
    if (!S_ISDIR (st.st_mode)) {
      error_set (ERR_INVALID, "--source-dirs: %s is not a folder", dir);
      return -1;
    }
    p = *end ? end + 1 : end;
  }
  return 0;
}

/* --- Recovery of files and rows ---------------------------------------- */

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

/* Mark rows whose file is missing, then delete files that no row owns. */
static int
recover_files (struct hub *hub)
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

/* Create the repository "default" when the catalog has none at all. */
static int
ensure_default_repo (struct hub *hub)
{
  struct cat_repository *repos = NULL, r = { 0 };
  CLEANUP_FREE char *path = NULL;
  size_t n = 0;

  if (catalog_repo_list (hub->cat, &repos, &n) == -1)
    return -1;
  cat_repository_free_array (repos, n);
  if (n > 0)
    return 0;
  if (asprintf (&path, "%s/repository", hub->cfg.data_dir) == -1) {
    path = NULL;
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  if (hub_repo_create (hub, "default", "default", "local", path, &r) == -1)
    return -1;
  log_info ("created repository 'default' at %s", r.path);
  cat_repository_clear (&r);
  return 0;
}

/* Take DATA-DIR/run/hub.lock for the life of the hub: a second hub on the
 * same folder would fight the first over its storage daemon and files. */
static int
lock_data_dir (struct hub *hub)
{
  CLEANUP_FREE char *path = NULL;
  char pid[32];
  int n;

  if (asprintf (&path, "%s/hub.lock", hub->run_dir) == -1) {
    path = NULL;
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  hub->lock_fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (hub->lock_fd == -1) {
    error_set_errno (ERR_INVALID, errno, "opening %s", path);
    return -1;
  }
  if (flock (hub->lock_fd, LOCK_EX | LOCK_NB) == -1) {
    n = pread (hub->lock_fd, pid, sizeof pid - 1, 0);
    pid[n > 0 ? n : 0] = '\0';
    pid[strcspn (pid, "\n")] = '\0';
    error_set (ERR_CONFLICT, "data folder %s is in use by another hub (pid %s)",
               hub->cfg.data_dir, *pid ? pid : "unknown");
    return -1;
  }
  n = snprintf (pid, sizeof pid, "%d\n", (int) getpid ());
  if (ftruncate (hub->lock_fd, 0) == -1 || pwrite (hub->lock_fd, pid, n, 0) != n)
    log_warn ("writing %s: %m", path);
  return 0;
}

struct hub *
hub_open (struct hub_config *cfg)
{
  struct hub *hub = calloc (1, sizeof *hub);
  struct qsd_config qc = { 0 };
  char *abs, *tls_dir = NULL;

  if (hub == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    hub_config_clear (cfg);
    return NULL;
  }
  hub->cfg = *cfg;
  hub->lock_fd = -1;
  memset (cfg, 0, sizeof *cfg);
  pthread_mutex_init (&hub->lock, NULL);
  id_now (hub->started_at, sizeof hub->started_at);

  if (net_parse_addr (hub->cfg.listen, &hub->listen) == -1 ||
      net_parse_addr (hub->cfg.nbd_listen, &hub->nbd) == -1)
    goto fail;
  if (net_is_wildcard (&hub->nbd)) {
    error_set (ERR_INVALID, "--nbd-listen %s would open unauthenticated NBD targets on "
               "every interface; name one address", hub->cfg.nbd_listen);
    goto fail;
  }
  if (hub->cfg.source_dirs && resolve_source_dirs (hub) == -1)
    goto fail;
  if (!net_is_loopback (&hub->nbd) && !hub->cfg.nbd_tls_psk_file)
    log_warn ("NBD targets listen on %s without --nbd-tls-psk-file: anyone who can "
              "reach it can list the exports and write into running backups",
              hub->cfg.nbd_listen);
  if (hub->cfg.api_token_file && (hub->token = read_token (hub->cfg.api_token_file)) == NULL)
    goto fail;
  else if (!hub->cfg.api_token_file && !net_is_loopback (&hub->listen))
    log_warn ("the API listens on %s without --api-token-file: anyone who reaches it "
              "can delete backups", hub->cfg.listen);

  if (mkdir (hub->cfg.data_dir, 0750) == -1 && errno != EEXIST) {
    error_set_errno (ERR_INVALID, errno, "creating data folder %s", hub->cfg.data_dir);
    goto fail;
  }
  abs = realpath (hub->cfg.data_dir, NULL);
  if (abs == NULL) {
    error_set_errno (ERR_INVALID, errno, "data folder %s", hub->cfg.data_dir);
    goto fail;
  }
  free (hub->cfg.data_dir);
  hub->cfg.data_dir = abs;
  if (asprintf (&hub->run_dir, "%s/run", hub->cfg.data_dir) == -1) {
    hub->run_dir = NULL;
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    goto fail;
  }
  if (mkdir (hub->run_dir, 0700) == -1 && errno != EEXIST) {
    error_set_errno (ERR_INVALID, errno, "creating %s", hub->run_dir);
    goto fail;
  }

  if (lock_data_dir (hub) == -1)
    goto fail;

  hub->cat = catalog_open_auth (hub->cfg.db, hub->cfg.db_password_file);
  if (hub->cat == NULL)
    goto fail;
  if (ensure_default_repo (hub) == -1)
    goto fail;

  if (hub->cfg.nbd_tls_psk_file && install_psk (hub, &tls_dir) == -1)
    goto fail;
  qc.run_dir = hub->run_dir;
  qc.nbd_host = hub->nbd.host;
  qc.nbd_port = hub->nbd.port;
  qc.tls_psk_dir = tls_dir;
  hub->qsd = qsd_start (&qc, on_qsd_restart, hub);
  free (tls_dir);
  tls_dir = NULL;
  if (hub->qsd == NULL)
    goto fail;

  {
    SCOPED_LOCK (&hub->lock);
    if (recover_files (hub) == -1)
      log_error ("recovery: %s", error_message ());
    reexport_running (hub);
  }
  if (hub_workers_start (hub) == -1)
    goto fail;
  requeue_hub_driven (hub);
  return hub;

 fail:
  free (tls_dir);
  error_prefix ("starting the hub");
  {
    /* hub_close could clobber the error message. */
    struct error_saved saved;
    error_save (&saved);
    hub_close (hub);
    error_restore (&saved);
  }
  return NULL;
}

void
hub_close (struct hub *hub)
{
  if (hub == NULL)
    return;
  /* Workers first: they call into the storage daemon and the catalog. */
  hub_workers_stop (hub);
  qsd_stop (hub->qsd);
  hub_restores_free (hub);
  catalog_close (hub->cat);
  hub_config_clear (&hub->cfg);
  free (hub->run_dir);
  free (hub->token);
  free (hub->nbd_tls_user);
  cleanup_strv (&hub->source_dirs);
  if (hub->lock_fd >= 0)
    close (hub->lock_fd);
  pthread_mutex_destroy (&hub->lock);
  free (hub);
}
