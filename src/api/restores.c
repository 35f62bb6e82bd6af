/* api/restores.c - /api/v1/restores: read-only NBD exports of a backup's
 * point in time (hub/restore.c does the work). */
#include <stdlib.h>

#include "api/api-int.h"
#include "util/error.h"

static const char *const no_params[] = { NULL };

/* With credential: "nbd_tls" too (a single restore, not the list). */
static json_t *
json_restore (const struct hub_restore_info *r, bool credential)
{
  json_t *v = json_pack ("{s:o,s:o,s:i,s:o,s:I,s:o}",
                         "restore_id", api_json_str (r->restore_id),
                         "backup_id", api_json_str (r->backup_id),
                         "disk_index", r->disk_index,
                         "nbd_uri", api_json_str (r->nbd_uri),
                         "size_bytes", (json_int_t) r->size_bytes,
                         "created_at", api_json_str (r->created_at));
  if (v && credential)
    json_object_set_new (v, "nbd_tls", api_json_nbd_tls (r->nbd_tls_identity,
                                                         r->nbd_tls_psk));
  return v;
}

int
api_restores_create (struct api_req *r)
{
  static const char *const fields[] = { "backup_id", "disk_index", NULL };
  struct hub_restore_info info = { 0 };
  const char *backup_id;
  int64_t disk_index;
  json_t *body;
  int ret;

  if (api_query_check (r, no_params) == -1 ||
      api_body (r, fields, false, &body) == -1 ||
      api_field_str (body, "backup_id", true, 1024, false, &backup_id) == -1 ||
      api_check_id ("backup_id", backup_id) == -1 ||
      api_field_int (body, "disk_index", true, 0, HUB_MAX_DISK_INDEX, &disk_index,
                     NULL) == -1 ||
      hub_restore_create (r->hub, backup_id, (int) disk_index, &info) == -1)
    return -1;
  ret = api_reply (r, 201, json_restore (&info, true));
  hub_restore_info_clear (&info);
  return ret;
}

int
api_restores_list (struct api_req *r)
{
  struct hub_restore_info *a = NULL;
  size_t n = 0;
  json_t *arr;

  if (api_query_check (r, no_params) == -1 || hub_restore_list (r->hub, &a, &n) == -1)
    return -1;
  arr = json_array ();
  for (size_t i = 0; arr && i < n; i++)
    json_array_append_new (arr, json_restore (&a[i], false));
  hub_restore_info_free_array (a, n);
  return api_reply (r, 200, arr ? json_pack ("{s:o}", "restores", arr) : NULL);
}

int
api_restores_get (struct api_req *r)
{
  struct hub_restore_info info = { 0 };
  int ret;

  if (api_query_check (r, no_params) == -1 || api_check_id ("restore id", r->id) == -1 ||
      hub_restore_get (r->hub, r->id, &info) == -1)
    return -1;
  ret = api_reply (r, 200, json_restore (&info, true));
  hub_restore_info_clear (&info);
  return ret;
}

int
api_restores_delete (struct api_req *r)
{
  if (api_query_check (r, no_params) == -1 || api_check_id ("restore id", r->id) == -1 ||
      hub_restore_delete (r->hub, r->id) == -1)
    return -1;
  r->status = 204;
  return 0;
}
