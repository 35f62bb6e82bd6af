/* hub/hub.c - opening and closing the hub, and what the rest of the
 * program may ask of it (struct hub is private to src/hub/).
 *
 * Start-up order: access (source folders, API token), data folder, its
 * lock and the hub's id (hub/identity.c), catalog (migrations), the default
 * repository on a first start, the NBD keys, the storage daemon, then
 * recovery (hub/recovery.c) of what is this hub's, the workers, and the
 * jobs they pick up again.  Closing goes the other way.
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

bool
hub_storage_up (struct hub *hub)
{
  return qsd_pid (hub->qsd) != 0;
}

static void
on_qsd_restart (struct qsd *q, void *opaque)
{
  struct hub *hub = opaque;
  SCOPED_LOCK (&hub->lock);
  hub_metrics_storage_restarted ();
  log_warn ("storage daemon restarted; exporting the running disks and the restores "
            "again");
  hub_reexport_running (hub);
  hub_restores_reexport (hub);
}

/* Create the repository "default" when the catalog has none at all. */
static int
ensure_default_repo (struct hub *hub)
{
  CLEANUP_CAT_REPO_LIST struct cat_repository_list repos = { 0 };
  CLEANUP_CAT_REPO struct cat_repository r = { 0 };
  CLEANUP_FREE char *path = NULL;

  if (catalog_repo_list (hub->cat, &repos.v, &repos.n) == -1)
    return -1;
  if (repos.n > 0)
    return 0;
  if (asprintf (&path, "%s/repository", hub->cfg.data_dir) == -1) {
    path = NULL;
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  if (hub_repo_create (hub, "default", "default", REPO_LOCAL, path, &r) == -1)
    return -1;
  log_info ("created repository 'default' at %s", r.path);
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
  const char *tls_dir;
  char *abs;

  if (hub == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    hub_config_clear (cfg);
    return NULL;
  }
  hub->cfg = *cfg;
  hub->lock_fd = -1;
  memset (cfg, 0, sizeof *cfg);
  pthread_mutex_init (&hub->lock, NULL);
  pthread_mutex_init (&hub->progress_lock, NULL);
  pthread_mutex_init (&hub->leftover_lock, NULL);
  pthread_mutex_init (&hub->access_lock, NULL);
  pthread_cond_init (&hub->merge_cond, NULL);
  id_now (hub->started_at, sizeof hub->started_at);

  if (net_parse_addr (hub->cfg.listen, &hub->listen) == -1 ||
      net_parse_addr (hub->cfg.nbd_listen, &hub->nbd) == -1)
    goto fail;
  if (net_is_wildcard (&hub->nbd)) {
    error_set (ERR_INVALID, "--nbd-listen %s would open unauthenticated NBD targets on "
               "every interface; name one address", hub->cfg.nbd_listen);
    goto fail;
  }
  if (hub_access_open (hub) == -1)
    goto fail;

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

  if (lock_data_dir (hub) == -1 || hub_identity_open (hub) == -1 ||
      hub_tls_open (hub) == -1)
    goto fail;

  hub->cat = catalog_open_auth (hub->cfg.db, hub->cfg.db_password_file);
  if (hub->cat == NULL || hub_metrics_open (hub) == -1)
    goto fail;
  if (ensure_default_repo (hub) == -1)
    goto fail;
  hub_repo_files_write (hub, true);

  if (hub_nbd_keys_open (hub, &tls_dir) == -1)
    goto fail;
  qc.run_dir = hub->run_dir;
  qc.nbd_host = hub->nbd.host;
  qc.nbd_port = hub->nbd.port;
  qc.tls_psk_dir = tls_dir;
  hub->qsd = qsd_start (&qc, on_qsd_restart, hub);
  if (hub->qsd == NULL)
    goto fail;

  /* Rows from before the catalog recorded owners become this hub's; then
   * recovery touches only what is this hub's.  Merges first: a step whose
   * files were done is recorded, so that the file check finds every file
   * its rows name. */
  hub_identity_claim (hub);
  hub_prune_recover (hub);
  hub_verify_recover (hub);
  {
    SCOPED_LOCK (&hub->lock);
    if (hub_recover_files (hub) == -1)
      log_error ("recovery: %s", error_message ());
    hub_reexport_running (hub);
    hub_nbd_keys_update (hub);     /* recovery may have failed jobs */
  }
  if (hub_workers_start (hub) == -1)
    goto fail;
  hub_requeue_jobs (hub);
  hub_prune_wake (hub, NULL);
  if (hub_schedule_start (hub) == -1 || hub_usage_start (hub) == -1 ||
      hub_lease_start (hub) == -1)
    goto fail;
  return hub;

 fail:
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

struct catalog *
hub_catalog (struct hub *hub)
{
  return hub->cat;
}

const char *
hub_started_at (struct hub *hub)
{
  return hub->started_at;
}

const struct net_addr *
hub_api_address (struct hub *hub, const char **text)
{
  if (text)
    *text = hub->cfg.listen;
  return &hub->listen;
}

const char *
hub_nbd_listen (struct hub *hub)
{
  return hub->cfg.nbd_listen;
}

void
hub_close (struct hub *hub)
{
  if (hub == NULL)
    return;
  /* The scheduler, then the workers: they call into the storage daemon
   * and the catalog. */
  hub_metrics_close (hub);
  hub_usage_stop (hub);
  hub_lease_stop (hub);
  hub_schedule_stop (hub);
  hub_workers_stop (hub);
  qsd_stop (hub->qsd);
  hub_restores_free (hub);
  hub_progress_free (hub);
  hub_leftover_free (hub);
  catalog_close (hub->cat);
  hub_config_clear (&hub->cfg);
  free (hub->run_dir);
  hub_access_clear (hub);
  hub_tls_clear (hub);
  if (hub->lock_fd >= 0)
    close (hub->lock_fd);
  for (size_t i = 0; i < hub->n_merging; i++)
    free (hub->merging[i]);
  free (hub->merging);
  for (size_t i = 0; i < hub->n_verifying; i++)
    free (hub->verifying[i]);
  free (hub->verifying);
  pthread_cond_destroy (&hub->merge_cond);
  pthread_mutex_destroy (&hub->lock);
  pthread_mutex_destroy (&hub->leftover_lock);
  pthread_mutex_destroy (&hub->access_lock);
  free (hub);
}


bool
hub_names_has (char *const *v, size_t n, const char *name)
{
  for (size_t i = 0; i < n; i++)
    if (strcmp (v[i], name) == 0)
      return true;
  return false;
}

int
hub_names_add (char ***v, size_t *n, const char *name)
{
  char **nv = realloc (*v, (*n + 1) * sizeof *nv);
  if (nv == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return -1;
  }
  *v = nv;
  if ((nv[*n] = strdup (name)) == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return -1;
  }
  (*n)++;
  return 0;
}

void
hub_names_remove (char **v, size_t *n, const char *name)
{
  for (size_t i = 0; i < *n; i++)
    if (strcmp (v[i], name) == 0) {
      free (v[i]);
      v[i] = v[--*n];
      return;
    }
}
