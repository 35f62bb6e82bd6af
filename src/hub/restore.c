/* hub/restore.c - restore exports: a read-only NBD export of one completed
 * disk's point in time.
 *
 * The export opens the disk's QCOW2 file read-only in the storage daemon,
 * which opens its backing chain with it (each backing path is relative and
 * resolves from the folder of the image that names it), so a reader sees
 * the whole disk as it was at that backup.
 *
 * Restores live in a list in the hub's memory, guarded by hub->lock; they
 * end with the hub process.  The storage daemon's restart callback exports
 * them again under the same names.
 *
 * PROTECTING THE CHAIN
 *
 * An open export reads its image and every image below it.  Deleting a
 * backup (with or without cascade) deletes a set of jobs that is closed
 * upward: with a job, every job with a disk backed by one of its disks
 * (catalog_backup_delete_plan names that set).  If such
 * a set holds any image of an export's chain, it also holds the exported
 * image's own job, since that image is backed, directly or not, by every
 * image of its chain.  So checking each restore's own job against the set
 * is enough; a context delete is checked by context.
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
#include "util/id.h"
#include "util/log.h"

struct hub_restore {
  struct hub_restore *next;
  char *id;
  char *backup_id;
  char *context_id;
  int disk_index;
  int64_t size_bytes;
  char *export_name;
  char *path;                 /* the exported QCOW2 file, absolute */
  char created_at[32];
};

static void
restore_free (struct hub_restore *r)
{
  if (r == NULL)
    return;
  free (r->id);
  free (r->backup_id);
  free (r->context_id);
  free (r->export_name);
  free (r->path);
  free (r);
}

static void
restore_cleanup (struct hub_restore **r)
{
  restore_free (*r);
}
#define CLEANUP_RESTORE __attribute__((cleanup (restore_cleanup)))

void
hub_restore_info_clear (struct hub_restore_info *r)
{
  free (r->restore_id);
  free (r->backup_id);
  free (r->nbd_uri);
  free (r->created_at);
  free (r->nbd_tls_identity);
  memset (r, 0, sizeof *r);
}

void
hub_restore_info_free_array (struct hub_restore_info *a, size_t n)
{
  for (size_t i = 0; i < n; i++)
    hub_restore_info_clear (&a[i]);
  free (a);
}

/* The restore's NBD credential goes in when credential is true. */
static int
fill_info (struct hub *hub, const struct hub_restore *r, bool credential,
           struct hub_restore_info *out)
{
  CLEANUP_FREE char *identity = NULL;

  memset (out, 0, sizeof *out);
  out->disk_index = r->disk_index;
  out->size_bytes = r->size_bytes;
  if (hub_nbd_credential (hub, "restore", r->id, &identity, out->nbd_tls_psk) == -1)
    return -1;
  if ((out->restore_id = strdup (r->id)) == NULL ||
      (out->backup_id = strdup (r->backup_id)) == NULL ||
      (out->created_at = strdup (r->created_at)) == NULL ||
      (out->nbd_uri = hub_nbd_uri (hub, identity, r->export_name)) == NULL) {
    hub_restore_info_clear (out);
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return -1;
  }
  if (credential) {
    out->nbd_tls_identity = identity;
    identity = NULL;
  }
  else
    memset (out->nbd_tls_psk, 0, sizeof out->nbd_tls_psk);
  return 0;
}

int
hub_restore_create (struct hub *hub, const char *backup_id, int disk_index,
                    struct hub_restore_info *out)
{
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  CLEANUP_RESTORE struct hub_restore *r = NULL;
  const struct cat_disk *d = NULL;
  struct stat st;

  SCOPED_LOCK (&hub->lock);

  if (catalog_backup_get (hub->cat, backup_id, &job) == -1)
    return -1;
  /* A merge step of the context may be rewriting this chain's files: once
   * it is done, read the job again (the step may have changed it). */
  if (hub->n_merging) {
    hub_merge_wait (hub, job.context_id);
    cat_job_clear (&job);
    if (catalog_backup_get (hub->cat, backup_id, &job) == -1)
      return -1;
  }
  if (job.status == JOB_REMOVING) {
    error_set (ERR_CONFLICT, "backup %s is being removed by a prune task: it is no "
               "longer a restore point", backup_id);
    return -1;
  }
  for (size_t i = 0; i < job.n_disks && d == NULL; i++)
    if (job.disks[i].disk_index == disk_index)
      d = &job.disks[i];
  if (d == NULL) {
    error_set (ERR_NOT_FOUND, "backup %s has no disk %d", backup_id, disk_index);
    return -1;
  }
  if (d->status != DISK_COMPLETED) {
    error_set (ERR_CONFLICT, "disk %d of backup %s is %s: only a completed disk can be "
               "restored", disk_index, backup_id, disk_status_name (d->status));
    return -1;
  }
  if (d->qcow2_path == NULL) {
    error_set (ERR_CONFLICT, "disk %d of backup %s has no file any more", disk_index,
               backup_id);
    return -1;
  }
  if (catalog_repo_get (hub->cat, job.repository_id, &repo) == -1)
    return -1;

  r = calloc (1, sizeof *r);
  if (r == NULL ||
      (r->id = id_new ("restore", NULL)) == NULL ||
      (r->backup_id = strdup (job.id)) == NULL ||
      (r->context_id = strdup (job.context_id)) == NULL ||
      (r->export_name = id_export_name ()) == NULL ||
      (r->path = repo_abspath (repo.path, d->qcow2_path)) == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return -1;
  }
  r->disk_index = disk_index;
  r->size_bytes = d->size_bytes;
  id_now (r->created_at, sizeof r->created_at);
  if (stat (r->path, &st) == -1) {
    error_set_errno (ERR_CONFLICT, errno, "disk %d of backup %s: its file %s is gone",
                     disk_index, backup_id, r->path);
    return -1;
  }
  if (qsd_export_add (hub->qsd, r->export_name, r->path, false) == -1) {
    /* A missing file further down the chain is a 409 too, not a 404. */
    if (error_category () == ERR_NOT_FOUND)
      error_recategorize (ERR_CONFLICT);
    error_prefix ("exporting disk %d of backup %s", disk_index, backup_id);
    return -1;
  }
  if (fill_info (hub, r, true, out) == -1) {
    qsd_export_remove (hub->qsd, r->export_name);
    return -1;
  }
  r->next = hub->restores;
  hub->restores = r;
  /* Its key opens the export once the storage daemon's keys file holds it. */
  if (hub_nbd_keys_write (hub) == -1) {
    hub->restores = r->next;
    qsd_export_remove (hub->qsd, r->export_name);
    hub_restore_info_clear (out);
    return -1;
  }
  log_info ("restore %s: disk %d of backup %s exported read-only", r->id, disk_index,
            backup_id);
  r = NULL;
  return 0;
}

static struct hub_restore *
find_restore (struct hub *hub, const char *restore_id)
{
  for (struct hub_restore *r = hub->restores; r; r = r->next)
    if (strcmp (r->id, restore_id) == 0)
      return r;
  error_set (ERR_NOT_FOUND, "restore %s not found (restores end with the hub process)",
             restore_id);
  return NULL;
}

int
hub_restore_get (struct hub *hub, const char *restore_id, struct hub_restore_info *out)
{
  struct hub_restore *r;

  SCOPED_LOCK (&hub->lock);
  r = find_restore (hub, restore_id);
  return r ? fill_info (hub, r, true, out) : -1;
}

int
hub_restore_list (struct hub *hub, struct hub_restore_info **out, size_t *n)
{
  struct hub_restore_info *a;
  size_t count = 0, i;

  SCOPED_LOCK (&hub->lock);
  for (struct hub_restore *r = hub->restores; r; r = r->next)
    count++;
  a = calloc (count + 1, sizeof *a);
  if (a == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  /* The list is newest first; answer oldest first. */
  i = count;
  for (struct hub_restore *r = hub->restores; r; r = r->next) {
    if (fill_info (hub, r, false, &a[--i]) == -1) {
      hub_restore_info_free_array (a, count);
      return -1;
    }
  }
  *out = a;
  *n = count;
  return 0;
}

int
hub_restore_delete (struct hub *hub, const char *restore_id)
{
  struct hub_restore **pp, *r;

  SCOPED_LOCK (&hub->lock);
  if (find_restore (hub, restore_id) == NULL)
    return -1;
  for (pp = &hub->restores; strcmp ((*pp)->id, restore_id) != 0; pp = &(*pp)->next)
    ;
  r = *pp;
  if (qsd_export_remove (hub->qsd, r->export_name) == -1) {
    error_prefix ("removing the export of restore %s", restore_id);
    return -1;
  }
  *pp = r->next;
  hub_nbd_keys_update (hub);
  log_info ("restore %s of backup %s disk %d closed", r->id, r->backup_id, r->disk_index);
  hub_prune_wake (hub, r->context_id);
  restore_free (r);
  return 0;
}

int
hub_restores_check_jobs (struct hub *hub, char *const *job_ids)
{
  for (struct hub_restore *r = hub->restores; r; r = r->next)
    for (char *const *j = job_ids; j && *j; j++)
      if (strcmp (r->backup_id, *j) == 0) {
        error_set (ERR_CONFLICT, "restore %s has disk %d of backup %s open (it reads "
                   "its whole chain): DELETE /api/v1/restores/%s first", r->id,
                   r->disk_index, r->backup_id, r->id);
        return -1;
      }
  return 0;
}

int
hub_restores_check_context (struct hub *hub, const char *context_id)
{
  for (struct hub_restore *r = hub->restores; r; r = r->next)
    if (strcmp (r->context_id, context_id) == 0) {
      error_set (ERR_CONFLICT, "restore %s has disk %d of backup %s of this context "
                 "open: DELETE /api/v1/restores/%s first", r->id, r->disk_index,
                 r->backup_id, r->id);
      return -1;
    }
  return 0;
}

void
hub_restores_reexport (struct hub *hub)
{
  for (struct hub_restore *r = hub->restores; r; r = r->next) {
    if (qsd_export_add (hub->qsd, r->export_name, r->path, false) == 0)
      log_info ("re-exported restore %s", r->id);
    else
      log_error ("re-exporting restore %s: %s", r->id, error_message ());
  }
}

char **
hub_restore_ids (struct hub *hub)
{
  size_t n = 0;
  char **v;

  for (struct hub_restore *r = hub->restores; r; r = r->next)
    n++;
  if ((v = calloc (n + 1, sizeof *v)) == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return NULL;
  }
  n = 0;
  for (struct hub_restore *r = hub->restores; r; r = r->next)
    if ((v[n++] = strdup (r->id)) == NULL) {
      cleanup_strv (&v);
      error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
      return NULL;
    }
  return v;
}

void
hub_restores_free (struct hub *hub)
{
  while (hub->restores) {
    struct hub_restore *r = hub->restores;
    hub->restores = r->next;
    restore_free (r);
  }
}
