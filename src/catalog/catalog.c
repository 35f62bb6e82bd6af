/* catalog/catalog.c - the catalog's front: opening by URL, the public
 * functions, which check their arguments and dispatch through cat->ops, and
 * the functions that free what the catalog hands out.
 *
 * The backends may assume that every required argument is there: a missing
 * one is refused here with ERR_INVALID.
 */
#include <stdlib.h>
#include <string.h>

#include "catalog/catalog-int.h"
#include "util/error.h"

#define SQLITE_SCHEME "sqlite://"
#define MYSQL_SCHEME "mysql://"
#define MARIADB_SCHEME "mariadb://"

/* Refuse a call with a missing argument; what names it. */
static int
missing (const char *what)
{
  error_set (ERR_INVALID, "catalog: %s is required", what);
  return -1;
}

/* Open the catalog that url names.  "sqlite:///abs/path.db" is an absolute
 * path, "sqlite://rel/path.db" a path relative to the working directory;
 * "mysql://" and "mariadb://" name a MariaDB/MySQL database.  The rest of
 * the URL is never echoed in errors: it may carry a password. */
static struct catalog *
open_url (const char *url, const char *password_file, bool migrate)
{
  static const char expected[] = "expected sqlite:///absolute/path.db,"
    " sqlite://relative/path.db or mysql://USER@HOST[:PORT]/DATABASE[?socket=PATH]";
  const char *colon;

  if (url == NULL || *url == '\0') {
    error_set (ERR_INVALID, "catalog URL is empty; %s", expected);
    return NULL;
  }
  if (strncmp (url, SQLITE_SCHEME, strlen (SQLITE_SCHEME)) == 0) {
    const char *path = url + strlen (SQLITE_SCHEME);
    if (*path == '\0') {
      error_set (ERR_INVALID, "catalog URL \"sqlite://\" names no file; %s", expected);
      return NULL;
    }
    return catalog_sqlite_open (path, migrate);
  }
  if (strncmp (url, MYSQL_SCHEME, strlen (MYSQL_SCHEME)) == 0)
    return catalog_mariadb_open (url + strlen (MYSQL_SCHEME), password_file, migrate);
  if (strncmp (url, MARIADB_SCHEME, strlen (MARIADB_SCHEME)) == 0)
    return catalog_mariadb_open (url + strlen (MARIADB_SCHEME), password_file, migrate);
  colon = strchr (url, ':');
  if (colon && colon[1] == '/' && colon[2] == '/')
    error_set (ERR_INVALID, "catalog URL scheme \"%.*s\" is not supported; %s",
               (int) (colon - url), url, expected);
  else
    error_set (ERR_INVALID, "catalog URL must start with a scheme; %s", expected);
  return NULL;
}

struct catalog *
catalog_open_auth (const char *url, const char *password_file)
{
  return open_url (url, password_file, true);
}

struct catalog *
catalog_open (const char *url)
{
  return open_url (url, NULL, true);
}

struct catalog *
catalog_open_raw (const char *url, const char *password_file)
{
  return open_url (url, password_file, false);
}

int
catalog_raw_migrate (struct catalog *cat)
{
  return cat->ops->raw_migrate (cat);
}

int
catalog_raw_exec (struct catalog *cat, const char *sql, const char *types, ...)
{
  va_list ap;
  int r;

  va_start (ap, types);
  r = cat->ops->raw_exec (cat, sql, types, ap);
  va_end (ap);
  return r;
}

int
catalog_raw_query (struct catalog *cat, catalog_row_fn fn, void *opaque,
                   const char *sql, const char *types, ...)
{
  va_list ap;
  int r;

  va_start (ap, types);
  r = cat->ops->raw_query (cat, sql, types, ap, fn, opaque);
  va_end (ap);
  return r;
}

int
catalog_raw_tx (struct catalog *cat, enum catalog_tx what)
{
  return cat->ops->raw_tx (cat, what);
}

/* Close through the backend; NULL is a no-op. */
void
catalog_close (struct catalog *cat)
{
  if (cat)
    cat->ops->close (cat);
}

/* The backend's name, a static string. */
const char *
catalog_backend_name (const struct catalog *cat)
{
  return cat->ops->name;
}

/* --- Repositories -----------------------------------------------------
 * From here on each public function checks what its contract requires of
 * the caller, then calls the backend; the contracts are in catalog.h. */

int
catalog_repo_insert (struct catalog *cat, const struct cat_repository *r)
{
  if (r == NULL || r->id == NULL || r->name == NULL || r->type == NULL || r->path == NULL)
    return missing ("repository id, name, type and path");
  return cat->ops->repo_insert (cat, r);
}

int
catalog_repo_get (struct catalog *cat, const char *id, struct cat_repository *out)
{
  if (id == NULL || out == NULL)
    return missing ("repository id");
  return cat->ops->repo_get (cat, id, out);
}

int
catalog_repo_list (struct catalog *cat, struct cat_repository **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return missing ("output array");
  return cat->ops->repo_list (cat, out, n);
}

int
catalog_repo_delete (struct catalog *cat, const char *id)
{
  if (id == NULL)
    return missing ("repository id");
  return cat->ops->repo_delete (cat, id);
}

/* --- VM inventory ----------------------------------------------------- */

int
catalog_vm_put (struct catalog *cat, const struct cat_vm *vm, bool *created)
{
  if (vm == NULL || vm->vm_name == NULL)
    return missing ("vm_name");
  if (vm->n_disks > 0 && vm->disks == NULL)
    return missing ("disk list");
  return cat->ops->vm_put (cat, vm, created);
}

int
catalog_vm_get (struct catalog *cat, const char *vm_name, struct cat_vm *out)
{
  if (vm_name == NULL || out == NULL)
    return missing ("vm_name");
  return cat->ops->vm_get (cat, vm_name, out);
}

int
catalog_vm_list (struct catalog *cat, struct cat_vm **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return missing ("output array");
  return cat->ops->vm_list (cat, out, n);
}

int
catalog_vm_delete (struct catalog *cat, const char *vm_name)
{
  if (vm_name == NULL)
    return missing ("vm_name");
  return cat->ops->vm_delete (cat, vm_name);
}

/* --- Contexts --------------------------------------------------------- */

int
catalog_context_get (struct catalog *cat, const char *id, struct cat_context *out)
{
  if (id == NULL || out == NULL)
    return missing ("context id");
  return cat->ops->context_get (cat, id, out);
}

int
catalog_context_find (struct catalog *cat, const char *vm_name,
                      const char *repository_id, struct cat_context *out)
{
  if (vm_name == NULL || repository_id == NULL || out == NULL)
    return missing ("vm_name and repository_id");
  return cat->ops->context_find (cat, vm_name, repository_id, out);
}

int
catalog_context_list (struct catalog *cat, const char *vm_name,
                      struct cat_context **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return missing ("output array");
  return cat->ops->context_list (cat, vm_name, out, n);
}

int
catalog_context_delete (struct catalog *cat, const char *id, bool force,
                        struct cat_disk **disks, size_t *n_disks)
{
  if (id == NULL)
    return missing ("context id");
  if (disks == NULL || n_disks == NULL)
    return missing ("output array");
  return cat->ops->context_delete (cat, id, force, disks, n_disks);
}

/* --- Backups ---------------------------------------------------------- */

int
catalog_backup_plan (struct catalog *cat, const char *vm_name,
                     const char *repository_id, size_t n, const int *disk_indexes,
                     struct cat_disk *parents, bool *running)
{
  if (vm_name == NULL || repository_id == NULL)
    return missing ("vm_name and repository_id");
  if (n > 0 && (disk_indexes == NULL || parents == NULL))
    return missing ("disk index list");
  if (running == NULL)
    return missing ("running flag");
  return cat->ops->backup_plan (cat, vm_name, repository_id, n, disk_indexes,
                                parents, running);
}

int
catalog_backup_insert (struct catalog *cat, struct cat_job *job, const struct cat_vm *vm)
{
  if (job == NULL || job->id == NULL || job->vm_name == NULL ||
      job->repository_id == NULL || job->backup_type == NULL)
    return missing ("backup id, vm_name, repository_id and backup_type");
  if (job->n_disks > 0 && job->disks == NULL)
    return missing ("disk list");
  return cat->ops->backup_insert (cat, job, vm);
}

int
catalog_backup_get (struct catalog *cat, const char *id, struct cat_job *out)
{
  if (id == NULL || out == NULL)
    return missing ("backup id");
  return cat->ops->backup_get (cat, id, out);
}

int
catalog_backup_list (struct catalog *cat, const struct cat_job_filter *f,
                     struct cat_job **out, size_t *n, int64_t *total)
{
  if (out == NULL || n == NULL)
    return missing ("output array");
  return cat->ops->backup_list (cat, f, out, n, total);
}

int
catalog_disk_complete (struct catalog *cat, const char *backup_id, int disk_index,
                       const char *change_id, int64_t bytes_transferred,
                       const char *full_reason, struct cat_job *job_after)
{
  if (backup_id == NULL)
    return missing ("backup id");
  return cat->ops->disk_complete (cat, backup_id, disk_index, change_id,
                                  bytes_transferred, full_reason, job_after);
}

int
catalog_backup_end (struct catalog *cat, const char *backup_id, const char *status,
                    int error_disk, const char *error,
                    struct cat_disk **dropped, size_t *n_dropped)
{
  if (backup_id == NULL || status == NULL)
    return missing ("backup id and status");
  if ((dropped == NULL) != (n_dropped == NULL))
    return missing ("count of dropped disks");
  return cat->ops->backup_end (cat, backup_id, status, error_disk, error,
                               dropped, n_dropped);
}

int
catalog_backup_delete (struct catalog *cat, const char *backup_id, bool cascade,
                       struct cat_disk **deleted, size_t *n_deleted)
{
  if (backup_id == NULL)
    return missing ("backup id");
  if ((deleted == NULL) != (n_deleted == NULL))
    return missing ("count of deleted disks");
  return cat->ops->backup_delete (cat, backup_id, cascade, deleted, n_deleted);
}

int
catalog_backup_finish (struct catalog *cat, const char *backup_id, struct cat_job *job_after)
{
  if (backup_id == NULL)
    return missing ("backup id");
  return cat->ops->backup_finish (cat, backup_id, job_after);
}

int
catalog_backup_delete_plan (struct catalog *cat, const char *backup_id, bool cascade,
                            char ***job_ids)
{
  if (backup_id == NULL || job_ids == NULL)
    return missing ("backup id and output vector");
  return cat->ops->backup_delete_plan (cat, backup_id, cascade, job_ids);
}

int
catalog_changeid_get (struct catalog *cat, const char *vm_name, int disk_index,
                      const char *repository_id, struct cat_disk *out)
{
  if (vm_name == NULL || out == NULL)
    return missing ("vm_name");
  return cat->ops->changeid_get (cat, vm_name, disk_index, repository_id, out);
}

/* --- Recovery --------------------------------------------------------- */

int
catalog_disk_files (struct catalog *cat, struct cat_disk **out,
                    char ***repo_paths, size_t *n)
{
  if (out == NULL || repo_paths == NULL || n == NULL)
    return missing ("output arrays");
  return cat->ops->disk_files (cat, out, repo_paths, n);
}

int
catalog_running_disks (struct catalog *cat, struct cat_disk **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return missing ("output array");
  return cat->ops->running_disks (cat, out, n);
}

int
catalog_disk_lost (struct catalog *cat, int64_t disk_id, const char *reason)
{
  return cat->ops->disk_lost (cat, disk_id, reason);
}

/* --- Freeing ----------------------------------------------------------
 * Each *_clear frees what the struct owns and zeroes it, so clearing twice
 * is harmless; each *_free_array clears n elements and frees the array. */

void
cat_repository_clear (struct cat_repository *r)
{
  if (r == NULL)
    return;
  free (r->id);
  free (r->name);
  free (r->type);
  free (r->path);
  free (r->created_at);
  memset (r, 0, sizeof *r);
}

void
cat_vm_clear (struct cat_vm *vm)
{
  if (vm == NULL)
    return;
  free (vm->vm_name);
  free (vm->vmware_vm_id);
  free (vm->vm_path);
  free (vm->vcenter_host);
  free (vm->datacenter);
  free (vm->created_at);
  free (vm->updated_at);
  for (size_t i = 0; i < vm->n_disks; i++)
    free (vm->disks[i].source);
  free (vm->disks);
  memset (vm, 0, sizeof *vm);
}

void
cat_context_clear (struct cat_context *c)
{
  if (c == NULL)
    return;
  free (c->context_id);
  free (c->vm_name);
  free (c->repository_id);
  free (c->vmware_vm_id);
  free (c->vm_path);
  free (c->vcenter_host);
  free (c->datacenter);
  free (c->last_backup_id);
  free (c->last_backup_type);
  free (c->last_backup_at);
  free (c->created_at);
  free (c->updated_at);
  memset (c, 0, sizeof *c);
}

void
cat_disk_clear (struct cat_disk *d)
{
  if (d == NULL)
    return;
  free (d->backup_job_id);
  free (d->context_id);
  free (d->backup_type);
  free (d->disk_change_id);
  free (d->qcow2_path);
  free (d->parent_backup_id);
  free (d->previous_change_id);
  free (d->nbd_export);
  free (d->status);
  free (d->error);
  free (d->created_at);
  free (d->completed_at);
  free (d->full_reason);
  memset (d, 0, sizeof *d);
}

void
cat_job_clear (struct cat_job *j)
{
  if (j == NULL)
    return;
  free (j->id);
  free (j->context_id);
  free (j->vm_name);
  free (j->repository_id);
  free (j->backup_type);
  free (j->status);
  free (j->error);
  free (j->created_at);
  free (j->completed_at);
  free (j->driver);
  cat_disk_free_array (j->disks, j->n_disks);
  memset (j, 0, sizeof *j);
}

void
cat_repository_free_array (struct cat_repository *a, size_t n)
{
  for (size_t i = 0; a && i < n; i++)
    cat_repository_clear (&a[i]);
  free (a);
}

void
cat_vm_free_array (struct cat_vm *a, size_t n)
{
  for (size_t i = 0; a && i < n; i++)
    cat_vm_clear (&a[i]);
  free (a);
}

void
cat_context_free_array (struct cat_context *a, size_t n)
{
  for (size_t i = 0; a && i < n; i++)
    cat_context_clear (&a[i]);
  free (a);
}

void
cat_disk_free_array (struct cat_disk *a, size_t n)
{
  for (size_t i = 0; a && i < n; i++)
    cat_disk_clear (&a[i]);
  free (a);
}

void
cat_job_free_array (struct cat_job *a, size_t n)
{
  for (size_t i = 0; a && i < n; i++)
    cat_job_clear (&a[i]);
  free (a);
}
