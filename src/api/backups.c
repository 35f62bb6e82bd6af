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

static int
check_backup_type (const char *t, bool allow_null)
{
  if ((t == NULL && allow_null) ||
      (t && (strcmp (t, "full") == 0 || strcmp (t, "incremental") == 0)))
    return 0;
  error_set (ERR_INVALID, "backup_type must be \"full\" or \"incremental\"");
  return -1;
}

int
api_backups_start (struct api_req *r)
{
  static const char *const fields[] = {
    "vm_name", "repository_id", "backup_type", "disks", NULL
  };
  struct hub_backup_request req = { 0 };
  struct cat_vm_disk *disks = NULL;
  struct cat_job job = { 0 };
  size_t n = 0;
  json_t *body;
  int ret;

  if (api_query_check (r, no_params) == -1 ||
      api_body (r, fields, false, &body) == -1 ||
      api_field_str (body, "vm_name", true, 1024, false, &req.vm_name) == -1 ||
      id_check_vm_name (req.vm_name) == -1 ||
      api_field_str (body, "repository_id", false, 1024, false, &req.repository_id) == -1 ||
      (req.repository_id && api_check_id ("repository_id", req.repository_id) == -1) ||
      api_field_str (body, "backup_type", true, 32, false, &req.backup_type) == -1 ||
      check_backup_type (req.backup_type, false) == -1)
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
  ret = api_reply (r, 201, api_json_job_lookup (r->hub, &job));
  cat_job_clear (&job);
  return ret;
}

int
api_backups_list (struct api_req *r)
{
  static const char *const params[] = {
    "vm_name", "repository_id", "status", "backup_type", "limit", "offset", NULL
  };
  static const char *const statuses[] = {
    "running", "finishing", "completed", "failed", "cancelled", NULL
  };
  struct cat_job_filter f = { .limit = 100, .offset = 0 };
  struct cat_repository *repos = NULL;
  struct cat_job *jobs = NULL;
  size_t n = 0, n_repos = 0;
  int64_t total = 0;
  json_t *arr;

  if (api_query_check (r, params) == -1 ||
      api_query_int (r, "limit", 1, 1000, &f.limit) == -1 ||
      api_query_int (r, "offset", 0, INT32_MAX, &f.offset) == -1)
    return -1;
  f.vm_name = api_query (r, "vm_name");
  f.repository_id = api_query (r, "repository_id");
  f.status = api_query (r, "status");
  f.backup_type = api_query (r, "backup_type");
  if ((f.vm_name && id_check_vm_name (f.vm_name) == -1) ||
      (f.repository_id && api_check_id ("repository_id", f.repository_id) == -1) ||
      check_backup_type (f.backup_type, true) == -1)
    return -1;
  if (f.status) {
    const char *const *s;
    for (s = statuses; *s && strcmp (*s, f.status) != 0; s++)
      ;
    if (*s == NULL) {
      error_set (ERR_INVALID, "status must be running, finishing, completed, failed or "
                 "cancelled");
      return -1;
    }
  }
  if (catalog_repo_list (hub_catalog (r->hub), &repos, &n_repos) == -1)
    return -1;
  if (catalog_backup_list (hub_catalog (r->hub), &f, &jobs, &n, &total) == -1) {
    cat_repository_free_array (repos, n_repos);
    return -1;
  }
  arr = json_array ();
  for (size_t i = 0; arr && i < n; i++) {
    const char *path = NULL;
    for (size_t k = 0; k < n_repos && !path; k++)
      if (strcmp (repos[k].id, jobs[i].repository_id) == 0)
        path = repos[k].path;
    json_array_append_new (arr, api_json_job (r->hub, &jobs[i], path));
  }
  cat_job_free_array (jobs, n);
  cat_repository_free_array (repos, n_repos);
  return api_reply (r, 200, arr ? json_pack ("{s:o,s:I}", "backups", arr,
                                             "total", (json_int_t) total) : NULL);
}

int
api_backups_get (struct api_req *r)
{
  struct cat_job job = { 0 };
  int ret;

  if (api_query_check (r, no_params) == -1 || api_check_id ("backup id", r->id) == -1 ||
      catalog_backup_get (hub_catalog (r->hub), r->id, &job) == -1)
    return -1;
  ret = api_reply (r, 200, api_json_job_lookup (r->hub, &job));
  cat_job_clear (&job);
  return ret;
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
api_backups_complete (struct api_req *r)
{
  static const char *const fields[] = {
    "disk_id", "change_id", "bytes_transferred", "full_reason", NULL
  };
  const char *change_id, *full_reason;
  int64_t disk_id, bytes = 0;
  struct cat_job job = { 0 };
  json_t *body;
  int ret;

  if (api_query_check (r, no_params) == -1 || api_check_id ("backup id", r->id) == -1 ||
      api_body (r, fields, false, &body) == -1 ||
      api_field_int (body, "disk_id", true, 0, HUB_MAX_DISK_INDEX, &disk_id, NULL) == -1 ||
      api_field_str (body, "change_id", false, HUB_MAX_CHANGE_ID, false, &change_id) == -1 ||
      api_field_int (body, "bytes_transferred", false, 0, INT64_C (1) << 62, &bytes,
                     NULL) == -1 ||
      api_field_str (body, "full_reason", false, HUB_MAX_ERROR, false, &full_reason) == -1)
    return -1;
  if (change_id && *change_id == '\0')
    change_id = NULL;
  if (full_reason && *full_reason == '\0')
    full_reason = NULL;
  if (hub_backup_complete (r->hub, r->id, (int) disk_id, change_id, bytes, full_reason,
                           &job) == -1)
    return -1;
  ret = api_reply (r, 200, json_pack ("{s:s,s:I,s:s,s:s,s:o}",
                                      "backup_id", job.id,
                                      "disk_id", (json_int_t) disk_id,
                                      "status", "completed",
                                      "job_status", job.status,
                                      "change_id", api_json_str (change_id)));
  cat_job_clear (&job);
  return ret;
}

/* fail and cancel share everything but the status and the body. */
static int
end_job (struct api_req *r, const char *status)
{
  static const char *const fail_fields[] = { "disk_id", "error", NULL };
  static const char *const cancel_fields[] = { NULL };
  bool failing = strcmp (status, "failed") == 0;
  const char *error = NULL;
  int64_t disk_id = -1;
  struct cat_job job = { 0 };
  json_t *body;
  int ret;

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
  ret = api_reply (r, 200, api_json_job_lookup (r->hub, &job));
  cat_job_clear (&job);
  return ret;
}

int
api_backups_fail (struct api_req *r)
{
  return end_job (r, "failed");
}

int
api_backups_cancel (struct api_req *r)
{
  return end_job (r, "cancelled");
}

int
api_backups_changeid (struct api_req *r)
{
  static const char *const params[] = { "vm_name", "disk_id", "repository_id", NULL };
  const char *vm_name, *repository_id;
  int64_t disk_id = -1;
  struct cat_disk d = { 0 };
  struct cat_context ctx = { 0 };
  char disk_str[16];
  json_t *reply;

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
  reply = json_pack ("{s:s,s:s,s:o,s:s,s:o,s:s}",
                     "vm_name", vm_name, "disk_id", disk_str,
                     "repository_id", api_json_str (repository_id),
                     "change_id", d.disk_change_id ? d.disk_change_id : "",
                     "backup_id", api_json_str (d.backup_job_id),
                     "message", d.disk_change_id ? "Previous change_id found"
                     : "The latest backup of this disk recorded no change_id");
  cat_disk_clear (&d);
  cat_context_clear (&ctx);
  return api_reply (r, 200, reply);
}
