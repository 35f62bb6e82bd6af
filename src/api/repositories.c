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

int
api_repos_create (struct api_req *r)
{
  static const char *const fields[] = { "id", "name", "type", "path", NULL };
  const char *id, *name, *type_word, *path;
  enum repo_type type;
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  json_t *body;

  if (api_query_check (r, no_params) == -1 ||
      api_body (r, fields, false, &body) == -1 ||
      api_field_str (body, "id", false, 128, false, &id) == -1 ||
      api_field_str (body, "name", true, API_MAX_STRING, false, &name) == -1 ||
      api_field_str (body, "type", true, 32, false, &type_word) == -1 ||
      api_field_str (body, "path", true, API_MAX_PATH, false, &path) == -1)
    return -1;
  if (id && api_check_id ("repository id", id) == -1)
    return -1;
  if (*name == '\0') {
    error_set (ERR_INVALID, "field 'name' must not be empty");
    return -1;
  }
  /* local, or nfs/cifs: the folder where such a share is mounted. */
  if (API_PARSE_WORD ("type", type_word, repo_type_parse, repo_type_words, &type) == -1)
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
