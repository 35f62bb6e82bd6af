/* api/repositories.c - /api/v1/repositories. */
#include <string.h>

#include "api/api-int.h"
#include "util/error.h"

static const char *const no_params[] = { NULL };

int
api_repos_list (struct api_req *r)
{
  CLEANUP_CAT_REPO_LIST struct cat_repository_list repos = { 0 };
  json_t *arr;

  if (api_query_check (r, no_params) == -1 ||
      catalog_repo_list (hub_catalog (r->hub), &repos.v, &repos.n) == -1)
    return -1;
  arr = json_array ();
  for (size_t i = 0; arr && i < repos.n; i++)
    json_array_append_new (arr, api_json_repo (r->hub, &repos.v[i]));
  return api_reply (r, 200, arr ? json_pack ("{s:o}", "repositories", arr) : NULL);
}

/* A repository is a folder: 'local', or 'nfs'/'cifs' for a share mounted
 * there, which the hub treats exactly like a local folder (docs/API.md). */
static int
repo_type_check (const char *type)
{
  static const char *const types[] = { "local", "nfs", "cifs", NULL };

  for (size_t i = 0; types[i]; i++)
    if (strcmp (type, types[i]) == 0)
      return 0;
  error_set (ERR_INVALID, "repository type '%s' is not supported (local, nfs or cifs)", type);
  return -1;
}

int
api_repos_create (struct api_req *r)
{
  static const char *const fields[] = { "id", "name", "type", "path", NULL };
  const char *id, *name, *type, *path;
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  json_t *body;

  if (api_query_check (r, no_params) == -1 ||
      api_body (r, fields, false, &body) == -1 ||
      api_field_str (body, "id", false, 128, false, &id) == -1 ||
      api_field_str (body, "name", true, 255, false, &name) == -1 ||
      api_field_str (body, "type", true, 32, false, &type) == -1 ||
      api_field_str (body, "path", true, 4000, false, &path) == -1)
    return -1;
  if (id && api_check_id ("repository id", id) == -1)
    return -1;
  if (*name == '\0') {
    error_set (ERR_INVALID, "field 'name' must not be empty");
    return -1;
  }
  if (repo_type_check (type) == -1)
    return -1;
  if (hub_repo_create (r->hub, id, name, type, path, &repo) == -1)
    return -1;
  return api_reply (r, 201, api_json_repo (r->hub, &repo));
}

int
api_repos_get (struct api_req *r)
{
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };

  if (api_query_check (r, no_params) == -1 ||
      api_check_id ("repository id", r->id) == -1 ||
      catalog_repo_get (hub_catalog (r->hub), r->id, &repo) == -1)
    return -1;
  return api_reply (r, 200, api_json_repo (r->hub, &repo));
}

int
api_repos_delete (struct api_req *r)
{
  if (api_query_check (r, no_params) == -1 ||
      api_check_id ("repository id", r->id) == -1 ||
      hub_repo_delete (r->hub, r->id) == -1)
    return -1;
  r->status = 204;
  return 0;
}
