/* api/contexts.c - /api/v1/contexts: one per (VM, repository). */
#include "api/api-int.h"
#include "util/cleanup.h"
#include "util/id.h"

int
api_contexts_list (struct api_req *r)
{
  static const char *const params[] = { "vm_name", NULL };
  CLEANUP_CAT_CONTEXT_LIST struct cat_context_list ctxs = { 0 };
  const char *vm_name;
  json_t *arr;

  if (api_query_check (r, params) == -1)
    return -1;
  vm_name = api_query (r, "vm_name");
  if (vm_name && id_check_vm_name (vm_name) == -1)
    return -1;
  if (catalog_context_list (hub_catalog (r->hub), vm_name, &ctxs.v, &ctxs.n) == -1)
    return -1;
  arr = json_array ();
  for (size_t i = 0; arr && i < ctxs.n; i++)
    json_array_append_new (arr, api_json_context (&ctxs.v[i]));
  return api_reply (r, 200, arr ? json_pack ("{s:o}", "contexts", arr) : NULL);
}

int
api_contexts_get (struct api_req *r)
{
  static const char *const no_params[] = { NULL };
  CLEANUP_CAT_CONTEXT struct cat_context ctx = { 0 };

  if (api_query_check (r, no_params) == -1 ||
      api_check_id ("context id", r->id) == -1 ||
      catalog_context_get (hub_catalog (r->hub), r->id, &ctx) == -1)
    return -1;
  return api_reply (r, 200, api_json_context (&ctx));
}

int
api_contexts_delete (struct api_req *r)
{
  static const char *const params[] = { "force", NULL };
  CLEANUP_STRV char **ids = NULL;
  bool force;

  if (api_query_check (r, params) == -1 || api_query_bool (r, "force", &force) == -1 ||
      api_check_id ("context id", r->id) == -1 ||
      hub_context_delete (r->hub, r->id, force, &ids) == -1)
    return -1;
  return api_reply (r, 200, api_json_deleted (ids));
}
