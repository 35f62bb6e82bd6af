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
    json_array_append_new (arr, api_json_context (r->hub, &ctxs.v[i]));
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
  return api_reply (r, 200, api_json_context (r->hub, &ctx));
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

int
api_contexts_prune (struct api_req *r)
{
  static const char *const no_params[] = { NULL };
  static const char *const fields[] = {
    "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
    "dry_run", NULL
  };
  struct hub_prune_request req = { .context_id = r->id };
  struct hub_prune_plan plan = { 0 };
  json_t *body, *reply;
  int status;

  if (api_query_check (r, no_params) == -1 || api_check_id ("context id", r->id) == -1 ||
      api_body (r, fields, true, &body) == -1 ||
      api_field_retention (body, &req.rules, &req.rules_given) == -1 ||
      api_field_bool (body, "dry_run", false, &req.dry_run, NULL) == -1 ||
      hub_prune_start (r->hub, &req, &plan) == -1)
    return -1;
  reply = json_pack ("{s:o,s:o}", "keep", api_json_ids (plan.keep),
                     "remove", api_json_ids (plan.remove));
  if (reply && !req.dry_run)
    json_object_set_new (reply, "task_id", api_json_str (plan.task_id));
  /* 202 when a task was recorded; a dry run, or nothing to remove, is
   * answered at once. */
  status = plan.task_id ? 202 : 200;
  hub_prune_plan_clear (&plan);
  return api_reply (r, status, reply);
}
