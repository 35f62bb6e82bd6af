/* api/backups.c - /api/v1/backups: starting, completing, ending, listing
 * and deleting backup jobs, and the change-id lookup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api-int.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"

static const char *const no_params[] = { NULL };

int
api_backups_start (struct api_req *r)
{
  static const char *const fields[] = {
    "vm_name", "repository_id", "backup_type", "disks", "lease_seconds", NULL
  };
  struct hub_backup_request req = { 0 };
  struct cat_vm_disk *disks = NULL;
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  const char *type;
  size_t n = 0;
  json_t *body;
  int ret;

  if (api_query_check (r, no_params) == -1 ||
      api_body (r, fields, false, &body) == -1 ||
      api_field_str (body, "vm_name", true, 1024, false, &req.vm_name) == -1 ||
      id_check_vm_name (req.vm_name) == -1 ||
      api_field_str (body, "repository_id", false, 1024, false, &req.repository_id) == -1 ||
      (req.repository_id && api_check_id ("repository_id", req.repository_id) == -1) ||
      api_field_str (body, "backup_type", true, 32, false, &type) == -1 ||
      API_PARSE_WORD ("backup_type", type, backup_type_parse, backup_type_words,
                  &req.backup_type) == -1 ||
      api_field_int (body, "lease_seconds", false, HUB_LEASE_MIN, HUB_LEASE_MAX,
                     &req.lease_seconds, NULL) == -1)
    return -1;
  if (json_object_get (body, "disks") && !json_is_null (json_object_get (body, "disks"))) {
    if (api_field_disks (body, "disks", &disks, &n) == -1)
      return -1;
    req.disks = disks;
    req.n_disks = n;
  }
  ret = hub_backup_start (r->hub, &req, &job);
  api_disks_free (disks, n);
  if (ret == -1)
    return -1;
  return api_reply (r, 201, api_json_job_credential (r->hub, &job));
}

int
api_backups_list (struct api_req *r)
{
  static const char *const params[] = {
    "vm_name", "repository_id", "status", "backup_type", "limit", "offset", NULL
  };
  struct cat_job_filter f = { .limit = 100, .offset = 0 };
  CLEANUP_CAT_REPO_LIST struct cat_repository_list repos = { 0 };
  CLEANUP_CAT_JOB_LIST struct cat_job_list jobs = { 0 };
  const char *status, *type;
  int64_t total = 0;
  json_t *arr;

  if (api_query_check (r, params) == -1 ||
      api_query_int (r, "limit", 1, 1000, &f.limit) == -1 ||
      api_query_int (r, "offset", 0, INT32_MAX, &f.offset) == -1)
    return -1;
  f.vm_name = api_query (r, "vm_name");
  f.repository_id = api_query (r, "repository_id");
  status = api_query (r, "status");
  type = api_query (r, "backup_type");
  f.by_status = status != NULL;
  f.by_type = type != NULL;
  if ((f.vm_name && id_check_vm_name (f.vm_name) == -1) ||
      (f.repository_id && api_check_id ("repository_id", f.repository_id) == -1) ||
      (type && API_PARSE_WORD ("backup_type", type, backup_type_parse, backup_type_words,
                           &f.backup_type) == -1) ||
      (status && API_PARSE_WORD ("status", status, job_status_parse, job_status_words,
                             &f.status) == -1))
    return -1;
  if (catalog_repo_list (hub_catalog (r->hub), &repos.v, &repos.n) == -1 ||
      catalog_backup_list (hub_catalog (r->hub), &f, &jobs.v, &jobs.n, &total) == -1)
    return -1;
  arr = json_array ();
  for (size_t i = 0; arr && i < jobs.n; i++) {
    const char *path = NULL;
    for (size_t k = 0; k < repos.n && !path; k++)
      if (strcmp (repos.v[k].id, jobs.v[i].repository_id) == 0)
        path = repos.v[k].path;
    json_array_append_new (arr, api_json_job (r->hub, &jobs.v[i], path));
  }
  return api_reply (r, 200, arr ? json_pack ("{s:o,s:I}", "backups", arr,
                                             "total", (json_int_t) total) : NULL);
}

int
api_backups_get (struct api_req *r)
{
  CLEANUP_CAT_JOB struct cat_job job = { 0 };

  if (api_query_check (r, no_params) == -1 || api_check_id ("backup id", r->id) == -1 ||
      catalog_backup_get (hub_catalog (r->hub), r->id, &job) == -1)
    return -1;
  return api_reply (r, 200, api_json_job_credential (r->hub, &job));
}

int
api_backups_delete (struct api_req *r)
{
  static const char *const params[] = { "cascade", NULL };
  CLEANUP_STRV char **ids = NULL;
  bool cascade;

  if (api_query_check (r, params) == -1 || api_query_bool (r, "cascade", &cascade) == -1 ||
      api_check_id ("backup id", r->id) == -1 ||
      hub_backup_delete (r->hub, r->id, cascade, &ids) == -1)
    return -1;
  return api_reply (r, 200, api_json_deleted (ids));
}

int
api_backups_patch (struct api_req *r)
{
  static const char *const fields[] = { "protected", NULL };
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  bool on;
  json_t *body;

  if (api_query_check (r, no_params) == -1 || api_check_id ("backup id", r->id) == -1 ||
      api_body (r, fields, false, &body) == -1 ||
      api_field_bool (body, "protected", true, &on, NULL) == -1 ||
      hub_backup_protect (r->hub, r->id, on, &job) == -1)
    return -1;
  return api_reply (r, 200, api_json_job_lookup (r->hub, &job));
}

int
api_backups_complete (struct api_req *r)
{
  static const char *const fields[] = {
    "disk_id", "change_id", "bytes_transferred", "bytes_zeroed", "full_reason", NULL
  };
  const char *change_id, *full_reason;
  int64_t disk_id, bytes = 0, zeroed = -1;
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  json_t *body;

  if (api_query_check (r, no_params) == -1 || api_check_id ("backup id", r->id) == -1 ||
      api_body (r, fields, false, &body) == -1 ||
      api_field_int (body, "disk_id", true, 0, HUB_MAX_DISK_INDEX, &disk_id, NULL) == -1 ||
      api_field_str (body, "change_id", false, HUB_MAX_CHANGE_ID, false, &change_id) == -1 ||
      api_field_int (body, "bytes_transferred", false, 0, INT64_C (1) << 62, &bytes,
                     NULL) == -1 ||
      api_field_int (body, "bytes_zeroed", false, 0, INT64_C (1) << 62, &zeroed,
                     NULL) == -1 ||
      api_field_str (body, "full_reason", false, HUB_MAX_ERROR, false, &full_reason) == -1)
    return -1;
  if (change_id && *change_id == '\0')
    change_id = NULL;
  if (full_reason && *full_reason == '\0')
    full_reason = NULL;
  if (hub_backup_complete (r->hub, DRIVER_AGENT, r->id, (int) disk_id, change_id, bytes,
                           zeroed, full_reason, &job) == -1)
    return -1;
  return api_reply (r, 200, json_pack ("{s:s,s:I,s:s,s:s,s:o}",
                                       "backup_id", job.id,
                                       "disk_id", (json_int_t) disk_id,
                                       "status", disk_status_name (DISK_COMPLETED),
                                       "job_status", job_status_name (job.status),
                                       "change_id", api_json_str (change_id)));
}

int
api_backups_progress (struct api_req *r)
{
  static const char *const fields[] = { "disks", NULL };
  static const char *const disk_fields[] = {
    "disk_index", "bytes_done", "bytes_total", "rate_bytes_per_sec", NULL
  };
  const int64_t max = INT64_C (1) << 62;
  CLEANUP_FREE struct hub_progress_report *v = NULL;
  json_t *body, *arr, *d;
  size_t i, n;

  if (api_query_check (r, no_params) == -1 || api_check_id ("backup id", r->id) == -1 ||
      api_body (r, fields, false, &body) == -1)
    return -1;
  arr = json_object_get (body, "disks");
  n = json_array_size (arr);
  /* No disks: the agent is alive before or between copies (it renews the
   * job's lease, hub/lease.c). */
  if (!json_is_array (arr) || n > HUB_MAX_DISKS) {
    error_set (ERR_INVALID, "field 'disks' must be an array of at most %d disks",
               HUB_MAX_DISKS);
    return -1;
  }
  v = calloc (n ? n : 1, sizeof *v);
  if (v == NULL) {
    error_set (ERR_INTERNAL, "out of memory");
    return -1;
  }
  json_array_foreach (arr, i, d) {
    int64_t index;
    if (!json_is_object (d)) {
      error_set (ERR_INVALID, "disks[%zu] must be an object", i);
      return -1;
    }
    if (api_check_fields (d, disk_fields) == -1 ||
        api_field_int (d, "disk_index", true, 0, HUB_MAX_DISK_INDEX, &index, NULL) == -1 ||
        api_field_int (d, "bytes_done", true, 0, max, &v[i].p.bytes_done, NULL) == -1 ||
        api_field_int (d, "bytes_total", true, 0, max, &v[i].p.bytes_total, NULL) == -1 ||
        api_field_int (d, "rate_bytes_per_sec", true, 0, max, &v[i].p.rate_bytes_per_sec,
                       NULL) == -1) {
      error_prefix ("disks[%zu]", i);
      return -1;
    }
    v[i].disk_index = (int) index;
  }
  if (hub_backup_report_progress (r->hub, r->id, v, n) == -1)
    return -1;
  r->status = 204;
  return 0;
}

/* fail and cancel share everything but the status and the body. */
static int
end_job (struct api_req *r, enum job_status status)
{
  static const char *const fail_fields[] = { "disk_id", "error", NULL };
  static const char *const cancel_fields[] = { NULL };
  bool failing = status == JOB_FAILED;
  const char *error = NULL;
  int64_t disk_id = -1;
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  json_t *body;

  if (api_query_check (r, no_params) == -1 || api_check_id ("backup id", r->id) == -1 ||
      api_body (r, failing ? fail_fields : cancel_fields, !failing, &body) == -1)
    return -1;
  if (failing &&
      (api_field_int (body, "disk_id", false, 0, HUB_MAX_DISK_INDEX, &disk_id, NULL) == -1 ||
       api_field_str (body, "error", true, HUB_MAX_ERROR, true, &error) == -1))
    return -1;
  if (failing && *error == '\0') {
    error_set (ERR_INVALID, "field 'error' must say what went wrong");
    return -1;
  }
  if (hub_backup_end (r->hub, r->id, status, (int) disk_id,
                      failing ? error : "cancelled", &job) == -1)
    return -1;
  return api_reply (r, 200, api_json_job_lookup (r->hub, &job));
}

int
api_backups_fail (struct api_req *r)
{
  return end_job (r, JOB_FAILED);
}

int
api_backups_cancel (struct api_req *r)
{
  return end_job (r, JOB_CANCELLED);
}

/* POST /api/v1/backups/changeids: which of the given change ids belong to
 * a backup the hub knows (an agent asks before it removes bitmaps of its
 * sources that belong to none). */
int
api_backups_changeids (struct api_req *r)
{
  static const char *const fields[] = { "change_ids", NULL };
  CLEANUP_FREE const char **names = NULL;
  CLEANUP_FREE bool *live = NULL;
  json_t *body, *arr, *v, *yes, *no;
  size_t i, n;

  if (api_query_check (r, no_params) == -1 || api_body (r, fields, false, &body) == -1)
    return -1;
  arr = json_object_get (body, "change_ids");
  n = json_array_size (arr);
  if (!json_is_array (arr) || n > HUB_MAX_CHANGE_IDS) {
    error_set (ERR_INVALID, "field 'change_ids' must be an array of at most %d strings",
               HUB_MAX_CHANGE_IDS);
    return -1;
  }
  names = calloc (n ? n : 1, sizeof *names);
  live = calloc (n ? n : 1, sizeof *live);
  if (names == NULL || live == NULL) {
    error_set (ERR_INTERNAL, "out of memory");
    return -1;
  }
  json_array_foreach (arr, i, v) {
    names[i] = json_string_value (v);
    if (names[i] == NULL || *names[i] == '\0' || strlen (names[i]) > HUB_MAX_CHANGE_ID) {
      error_set (ERR_INVALID, "change_ids[%zu] must be a string of 1 to %d bytes", i,
                 HUB_MAX_CHANGE_ID);
      return -1;
    }
  }
  if (hub_change_ids_live (r->hub, n, names, live) == -1)
    return -1;
  yes = json_array ();
  no = json_array ();
  for (i = 0; yes && no && i < n; i++)
    json_array_append_new (live[i] ? yes : no, json_string (names[i]));
  return api_reply (r, 200, yes && no ? json_pack ("{s:o,s:o}", "live", yes, "unknown", no)
                                      : NULL);
}

int
api_backups_changeid (struct api_req *r)
{
  static const char *const params[] = { "vm_name", "disk_id", "repository_id", NULL };
  const char *vm_name, *repository_id;
  int64_t disk_id = -1;
  CLEANUP_CAT_DISK struct cat_disk d = { 0 };
  CLEANUP_CAT_CONTEXT struct cat_context ctx = { 0 };
  char disk_str[16];

  if (api_query_check (r, params) == -1)
    return -1;
  vm_name = api_query (r, "vm_name");
  repository_id = api_query (r, "repository_id");
  if (vm_name == NULL) {
    error_set (ERR_INVALID, "query parameter 'vm_name' is required");
    return -1;
  }
  if (id_check_vm_name (vm_name) == -1 ||
      api_query_int (r, "disk_id", 0, HUB_MAX_DISK_INDEX, &disk_id) == -1 ||
      (repository_id && api_check_id ("repository_id", repository_id) == -1))
    return -1;
  if (disk_id < 0) {
    error_set (ERR_INVALID, "query parameter 'disk_id' is required");
    return -1;
  }
  snprintf (disk_str, sizeof disk_str, "%d", (int) disk_id);
  if (catalog_changeid_get (hub_catalog (r->hub), vm_name, (int) disk_id, repository_id, &d) == -1) {
    if (error_category () != ERR_NOT_FOUND)
      return -1;
    return api_reply (r, 200, json_pack ("{s:s,s:s,s:o,s:s,s:n,s:s}",
                                         "vm_name", vm_name, "disk_id", disk_str,
                                         "repository_id", api_json_str (repository_id),
                                         "change_id", "", "backup_id",
                                         "message", "No previous backup found"));
  }
  if (repository_id == NULL &&
      catalog_context_get (hub_catalog (r->hub), d.context_id, &ctx) == 0)
    repository_id = ctx.repository_id;
  return api_reply (r, 200, json_pack ("{s:s,s:s,s:o,s:s,s:o,s:s}",
                                       "vm_name", vm_name, "disk_id", disk_str,
                                       "repository_id", api_json_str (repository_id),
                                       "change_id", d.disk_change_id ? d.disk_change_id : "",
                                       "backup_id", api_json_str (d.backup_job_id),
                                       "message", d.disk_change_id
                                       ? "Previous change_id found"
                                       : "The latest backup of this disk recorded no change_id"));
}
