/* api/tasks.c - /api/v1/tasks: long-running hub operations (prunes). */
#include "api/api-int.h"
#include "util/error.h"

int
api_tasks_list (struct api_req *r)
{
  static const char *const params[] = { "status", NULL };
  CLEANUP_CAT_TASK_LIST struct cat_task_list tasks = { 0 };
  enum task_status status = TASK_RUNNING;
  const char *s;
  json_t *arr;

  if (api_query_check (r, params) == -1)
    return -1;
  s = api_query (r, "status");
  if (s && API_PARSE_WORD ("status", s, task_status_parse, task_status_words, &status) == -1)
    return -1;
  if (catalog_task_list (hub_catalog (r->hub), s != NULL, status, &tasks.v, &tasks.n) == -1)
    return -1;
  arr = json_array ();
  for (size_t i = 0; arr && i < tasks.n; i++)
    json_array_append_new (arr, api_json_task (&tasks.v[i]));
  return api_reply (r, 200, arr ? json_pack ("{s:o}", "tasks", arr) : NULL);
}

int
api_tasks_get (struct api_req *r)
{
  static const char *const no_params[] = { NULL };
  CLEANUP_CAT_TASK struct cat_task task = { 0 };

  if (api_query_check (r, no_params) == -1 || api_check_id ("task id", r->id) == -1 ||
      catalog_task_get (hub_catalog (r->hub), r->id, &task) == -1)
    return -1;
  return api_reply (r, 200, api_json_task (&task));
}
