/* hub/inventory.c - repositories and the VM inventory: the changes to them
 * that the API asks for, with the checks that need the file system. */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hub/hub-int.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

#include <jansson.h>

/* True when folder a is b or lies inside it. */
static bool
path_within (const char *a, const char *b)
{
  size_t n = strlen (b);
  return strncmp (a, b, n) == 0 && (a[n] == '\0' || a[n] == '/' || strcmp (b, "/") == 0);
}

/* A repository inside another (or holding the hub's own data folder) would
 * have its files taken for the other's leftovers: refuse it. */
static int
check_overlap (struct hub *hub, const char *path)
{
  CLEANUP_CAT_REPO_LIST struct cat_repository_list repos = { 0 };

  if (path_within (hub->cfg.data_dir, path)) {
    error_set (ERR_CONFLICT, "repository path %s holds the hub's data folder", path);
    return -1;
  }
  if (catalog_repo_list (hub->cat, &repos.v, &repos.n) == -1)
    return -1;
  for (size_t i = 0; i < repos.n; i++)
    if (path_within (path, repos.v[i].path) || path_within (repos.v[i].path, path)) {
      error_set (ERR_CONFLICT, "repository path %s overlaps repository '%s' at %s", path,
                 repos.v[i].id, repos.v[i].path);
      return -1;
    }
  return 0;
}

/* Write json (compact, newline-terminated) to path atomically. */
static int
write_json (const char *path, json_t *j)
{
  CLEANUP_FREE char *text = j ? json_dumps (j, JSON_COMPACT) : NULL;
  CLEANUP_FREE char *line = NULL;

  if (text == NULL || asprintf (&line, "%s\n", text) == -1) {
    line = NULL;
    error_set (ERR_INTERNAL, "out of memory");
    return -1;
  }
  return repo_write_atomic (path, line, strlen (line));
}

/* <repository>/strata-repository.json: who this folder is, for a catalog
 * rebuilt from it. */
static int
write_identity (const struct cat_repository *r)
{
  CLEANUP_FREE char *path = repo_abspath (r->path, REPO_IDENTITY_FILE);
  CLEANUP_JSON json_t *j = json_pack ("{s:s,s:s,s:s,s:s}", "id", r->id, "name", r->name,
                                      "type", r->type, "created_at", r->created_at);

  return path ? write_json (path, j) : -1;
}

void
hub_repo_files_write (struct hub *hub, bool identities)
{
  /* Read and written under one lock, so the last rename holds the latest
   * list (repository changes do not all hold hub->lock). */
  static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;
  SCOPED_LOCK (&files_lock);
  CLEANUP_CAT_REPO_LIST struct cat_repository_list repos = { 0 };
  CLEANUP_FREE char *path = NULL;
  CLEANUP_JSON json_t *list = json_array ();

  if (catalog_repo_list (hub->cat, &repos.v, &repos.n) == -1) {
    log_warn ("listing repositories for %s/repositories.json: %s", hub->cfg.data_dir,
              error_message ());
    return;
  }
  for (size_t i = 0; i < repos.n; i++) {
    const struct cat_repository *r = &repos.v[i];
    CLEANUP_FREE char *id_path = repo_abspath (r->path, REPO_IDENTITY_FILE);
    struct stat st;

    json_array_append_new (list, json_pack ("{s:s,s:s,s:s,s:s}", "id", r->id, "name", r->name,
                                            "type", r->type, "path", r->path));
    /* A folder that is not there (a share not mounted) gets nothing. */
    if (identities && id_path && stat (r->path, &st) == 0 && S_ISDIR (st.st_mode) &&
        access (id_path, F_OK) == -1 && write_identity (r) == -1)
      log_warn ("repository %s: %s", r->id, error_message ());
  }
  if (asprintf (&path, "%s/repositories.json", hub->cfg.data_dir) == -1) {
    path = NULL;
    log_warn ("out of memory");
    return;
  }
  if (write_json (path, list) == -1)
    log_warn ("%s", error_message ());
}

int
hub_repo_create (struct hub *hub, const char *id, const char *name, enum repo_type type,
                 const char *path, struct cat_repository *out)
{
  CLEANUP_FREE char *made_id = NULL;
  CLEANUP_FREE char *canonical = NULL;
  char now[32];
  bool created;

  if (type != REPO_LOCAL && access (path, F_OK) == -1) {
    error_set_errno (ERR_INVALID, errno, "repository path %s: an %s repository is the folder "
                     "where its share is mounted; mount it first", path,
                     repo_type_name (type));
    return -1;
  }
  if (id == NULL) {
    made_id = id_new ("repo", NULL);
    if (made_id == NULL)
      return -1;
    id = made_id;
  }
  if (repo_prepare (path, &canonical, &created) == -1)
    return -1;
  if (check_overlap (hub, canonical) == -1) {
    if (created)
      rmdir (canonical);
    return -1;
  }
  id_now (now, sizeof now);
  struct cat_repository r = { .id = (char *) id, .name = (char *) name,
                              .type = (char *) repo_type_name (type), .path = canonical,
                              .created_at = now };
  if (catalog_repo_insert (hub->cat, &r) == -1 ||
      catalog_repo_get (hub->cat, id, out) == -1) {
    if (created)
      rmdir (canonical);
    return -1;
  }
  /* The row is the truth; the files only help a lost catalog back. */
  if (write_identity (out) == -1)
    log_warn ("repository %s: %s", id, error_message ());
  hub_repo_files_write (hub, false);
  return 0;
}

int
hub_repo_delete (struct hub *hub, const char *id)
{
  SCOPED_LOCK (&hub->lock);
  if (catalog_repo_delete (hub->cat, id) == -1)
    return -1;
  hub_repo_files_write (hub, false);
  return 0;
}

int
hub_vm_put (struct hub *hub, const struct cat_vm *vm, bool *created, struct cat_vm *out)
{
  for (size_t i = 0; i < vm->n_disks; i++)
    if (vm->disks[i].source &&
        hub_source_allowed (hub, vm->disks[i].source, false) == -1) {
      error_prefix ("disk %d", vm->disks[i].disk_index);
      return -1;
    }
  {
    SCOPED_LOCK (&hub->lock);
    if (vm->policy) {
      CLEANUP_CAT_POLICY struct cat_policy pol = { 0 };
      if (catalog_policy_get (hub->cat, vm->policy, &pol) == -1) {
        if (error_category () == ERR_NOT_FOUND)
          error_set (ERR_INVALID, "policy '%s' does not exist", vm->policy);
        return -1;
      }
      if (hub_policy_fits_vm (&pol, vm) == -1)
        return -1;
    }
    if (catalog_vm_put (hub->cat, vm, created) == -1)
      return -1;
  }
  hub_schedule_poke (hub);
  return catalog_vm_get (hub->cat, vm->vm_name, out);
}

int
hub_vm_delete (struct hub *hub, const char *vm_name)
{
  return catalog_vm_delete (hub->cat, vm_name);
}
