/* catalog/catalog.c - the catalog's front: opening by URL (which picks
 * the driver), closing, and the functions that free what the catalog hands
 * out.  The operations themselves are in the SQL core (core.c and the
 * files it lists).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/catalog-int.h"
#include "util/error.h"

#define SQLITE_SCHEME "sqlite://"
#define MARIADB_SCHEME "mariadb://"
#define MYSQL_SCHEME "mysql://"         /* an alias of mariadb:// */

/* Open the catalog that url names.  "sqlite:///abs/path.db" is an absolute
 * path, "sqlite://rel/path.db" a path relative to the working directory;
 * "mariadb://" (or its alias "mysql://") names a MariaDB database.  The rest of
 * the URL is never echoed in errors: it may carry a password. */
static struct catalog *
open_url (const char *url, const char *password_file, bool migrate)
{
  static const char expected[] = "expected sqlite:///absolute/path.db,"
    " sqlite://relative/path.db or mariadb://USER@HOST[:PORT]/DATABASE[?socket=PATH]";
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
  if (strncmp (url, MARIADB_SCHEME, strlen (MARIADB_SCHEME)) == 0)
    return catalog_mariadb_open (url + strlen (MARIADB_SCHEME), password_file, migrate);
  if (strncmp (url, MYSQL_SCHEME, strlen (MYSQL_SCHEME)) == 0)
    return catalog_mariadb_open (url + strlen (MYSQL_SCHEME), password_file, migrate);
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

/* Close through the driver; NULL is a no-op. */
void
catalog_close (struct catalog *cat)
{
  if (cat)
    cat->drv->close (cat);
}

/* The driver's name, a static string. */
const char *
catalog_backend_name (const struct catalog *cat)
{
  return cat->drv->name;
}

int
catalog_fail (enum error_category cat, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  error_set (cat, "%s", msg);
  return -1;
}

void
catalog_oom (void)
{
  error_set_errno (ERR_INTERNAL, ENOMEM, "catalog");
}

void
catalog_base_init (struct catalog *cat, const struct catalog_driver *drv)
{
  cat->drv = drv;
  pthread_mutex_init (&cat->lock, NULL);
}

void
catalog_base_destroy (struct catalog *cat)
{
  pthread_mutex_destroy (&cat->lock);
}

/* --- Freeing ----------------------------------------------------------
 * Each *_clear frees what the struct owns and zeroes it, so clearing twice
 * is harmless; each *_free_array clears n elements and frees the array,
 * and each *_list_clear does that to a list and empties it. */

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
  free (vm->policy);
  free (vm->next_run_at);
  free (vm->last_run_at);
  free (vm->last_skipped_at);
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
  free (d->disk_change_id);
  free (d->qcow2_path);
  free (d->parent_backup_id);
  free (d->previous_change_id);
  free (d->nbd_export);
  free (d->error);
  free (d->created_at);
  free (d->completed_at);
  free (d->full_reason);
  free (d->verified_at);
  free (d->verify_error);
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
  free (j->error);
  free (j->created_at);
  free (j->completed_at);
  free (j->verified_at);
  free (j->lease_expires_at);
  free (j->owner_hub);
  cat_disk_free_array (j->disks, j->n_disks);
  memset (j, 0, sizeof *j);
}

void
cat_policy_clear (struct cat_policy *p)
{
  if (p == NULL)
    return;
  free (p->name);
  free (p->repository_id);
  free (p->schedule);
  free (p->created_at);
  free (p->updated_at);
  memset (p, 0, sizeof *p);
}

void
cat_task_clear (struct cat_task *t)
{
  if (t == NULL)
    return;
  free (t->id);
  free (t->context_id);
  free (t->message);
  free (t->error);
  free (t->result);
  free (t->created_at);
  free (t->updated_at);
  free (t->completed_at);
  free (t->owner_hub);
  memset (t, 0, sizeof *t);
}

/* For each kind of row: free an array of n, and free a list (then empty). */
#define CAT_ARRAY_FREE(name)                                            \
  void                                                                  \
  cat_##name##_free_array (struct cat_##name *a, size_t n)              \
  {                                                                     \
    for (size_t i = 0; a && i < n; i++)                                 \
      cat_##name##_clear (&a[i]);                                       \
    free (a);                                                           \
  }                                                                     \
  void                                                                  \
  cat_##name##_list_clear (struct cat_##name##_list *l)                 \
  {                                                                     \
    cat_##name##_free_array (l->v, l->n);                               \
    l->v = NULL;                                                        \
    l->n = 0;                                                           \
  }

CAT_ARRAY_FREE (repository)
CAT_ARRAY_FREE (vm)
CAT_ARRAY_FREE (context)
CAT_ARRAY_FREE (disk)
CAT_ARRAY_FREE (job)
CAT_ARRAY_FREE (policy)
CAT_ARRAY_FREE (task)
