/* api/output.c - the JSON forms of catalog objects, as docs/API.md shows
 * them.  Each function returns a new reference, or NULL when out of memory. */
#include <stdlib.h>
#include <string.h>

#include "api/api-int.h"
#include "storage/repo.h"   /* repo_abspath: layout only, no I/O */
#include "util/cleanup.h"
#include "util/error.h"
#include "util/log.h"

json_t *
api_json_str (const char *s)
{
  json_t *v;
  if (s == NULL)
    return json_null ();
  v = json_string (s);
  /* Not UTF-8 (a path from the file system, say): better null than no reply. */
  return v ? v : json_null ();
}

static json_t *
opt_int (int64_t v)
{
  return v < 0 ? json_null () : json_integer (v);
}

json_t *
api_json_repo (struct hub *hub, const struct cat_repository *r)
{
  int64_t used = 0, avail = 0;
  if (hub_repo_usage (hub, r, &used, &avail) == -1) {
    log_warn ("repository %s: %s", r->id, error_message ());
    used = avail = -1;
  }
  return json_pack ("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}",
                    "id", api_json_str (r->id),
                    "name", api_json_str (r->name),
                    "type", api_json_str (r->type),
                    "path", api_json_str (r->path),
                    "created_at", api_json_str (r->created_at),
                    "used_bytes", opt_int (used),
                    "available_bytes", opt_int (avail));
}

json_t *
api_json_vm (const struct cat_vm *vm)
{
  json_t *disks = json_array ();
  if (disks == NULL)
    return NULL;
  for (size_t i = 0; i < vm->n_disks; i++) {
    const struct cat_vm_disk *d = &vm->disks[i];
    json_array_append_new (disks, json_pack ("{s:i,s:I,s:o,s:o,s:o}",
                                             "disk_index", d->disk_index,
                                             "size_bytes", (json_int_t) d->size_bytes,
                                             "vmware_disk_key", opt_int (d->vmware_disk_key),
                                             "unit_number", opt_int (d->unit_number),
                                             "source", api_json_str (d->source)));
  }
  return json_pack ("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}",
                    "vm_name", api_json_str (vm->vm_name),
                    "policy", api_json_str (vm->policy),
                    "next_run_at", api_json_str (vm->next_run_at),
                    "last_run_at", api_json_str (vm->last_run_at),
                    "last_skipped_at", api_json_str (vm->last_skipped_at),
                    "vmware_vm_id", api_json_str (vm->vmware_vm_id ? vm->vmware_vm_id : ""),
                    "vm_path", api_json_str (vm->vm_path ? vm->vm_path : ""),
                    "vcenter_host", api_json_str (vm->vcenter_host ? vm->vcenter_host : ""),
                    "datacenter", api_json_str (vm->datacenter ? vm->datacenter : ""),
                    "created_at", api_json_str (vm->created_at),
                    "updated_at", api_json_str (vm->updated_at),
                    "disks", disks);
}

/* The summary of a context (hub_context_summary), or null when it cannot
 * be made (logged): the row itself is still worth showing. */
static json_t *
json_summary (struct hub *hub, const struct cat_context *c)
{
  struct hub_context_summary s;
  json_t *v;

  if (hub_context_summary (hub, c, &s) == -1) {
    log_warn ("context %s: summary: %s", c->context_id, error_message ());
    return json_null ();
  }
  v = json_pack ("{s:I,s:o,s:o,s:o,s:o,s:s,s:b,s:o}",
                 "points", (json_int_t) s.points,
                 "last_status", s.has_last ? json_string (job_status_name (s.last_status))
                 : json_null (),
                 "last_error", api_json_str (s.last_error),
                 "last_completed_at", api_json_str (s.last_completed_at),
                 "bytes_used", opt_int (s.bytes_used),
                 "verify_state", verify_state_name (s.verify_state),
                 "overdue", s.overdue,
                 "overdue_reason", api_json_str (s.overdue_reason));
  hub_context_summary_clear (&s);
  return v;
}

json_t *
api_json_context (struct hub *hub, const struct cat_context *c)
{
  return json_pack ("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:I,s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:o}",
                    "context_id", api_json_str (c->context_id),
                    "vm_name", api_json_str (c->vm_name),
                    "repository_id", api_json_str (c->repository_id),
                    "vmware_vm_id", api_json_str (c->vmware_vm_id),
                    "vm_path", api_json_str (c->vm_path),
                    "vcenter_host", api_json_str (c->vcenter_host),
                    "datacenter", api_json_str (c->datacenter),
                    "total_backups_run", (json_int_t) c->total_backups_run,
                    "successful_backups", (json_int_t) c->successful_backups,
                    "failed_backups", (json_int_t) c->failed_backups,
                    "last_backup_id", api_json_str (c->last_backup_id),
                    "last_backup_type", c->last_backup_id
                    ? json_string (backup_type_name (c->last_backup_type)) : json_null (),
                    "last_backup_at", api_json_str (c->last_backup_at),
                    "created_at", api_json_str (c->created_at),
                    "updated_at", api_json_str (c->updated_at),
                    "summary", json_summary (hub, c));
}

static json_t *
json_disk (struct hub *hub, const struct cat_job *job, const struct cat_disk *d,
           const char *repo_path, bool mine, const char *identity)
{
  CLEANUP_FREE char *path = NULL;
  CLEANUP_FREE char *uri = NULL;
  struct hub_progress p;
  json_t *progress = NULL;

  /* Running copies report their progress: the hub's workers, and agents
   * through POST .../progress. */
  if (d->status == DISK_RUNNING &&
      hub_backup_progress (hub, job->id, d->disk_index, &p))
    progress = json_pack ("{s:I,s:I,s:I}", "bytes_done", (json_int_t) p.bytes_done,
                          "bytes_total", (json_int_t) p.bytes_total,
                          "rate_bytes_per_sec", (json_int_t) p.rate_bytes_per_sec);
  if (d->qcow2_path && repo_path)
    path = repo_abspath (repo_path, d->qcow2_path);
  if (mine && d->nbd_export && d->status == DISK_RUNNING)
    uri = hub_nbd_uri (hub, identity, d->nbd_export);
  return json_pack ("{s:i,s:s,s:o,s:s,s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:I,s:o,s:o,s:o,s:o,"
                    "s:s,s:o,s:o}",
                    "disk_index", d->disk_index,
                    "backup_type", backup_type_name (d->backup_type),
                    "full_reason", api_json_str (d->full_reason),
                    "status", disk_status_name (d->status),
                    "size_bytes", (json_int_t) d->size_bytes,
                    "vmware_disk_key", opt_int (d->vmware_disk_key),
                    "unit_number", opt_int (d->unit_number),
                    "qcow2_path", api_json_str (path),
                    "nbd_uri", api_json_str (uri),
                    "parent_backup_id", api_json_str (d->parent_backup_id),
                    "previous_change_id", api_json_str (d->previous_change_id),
                    "change_id", api_json_str (d->disk_change_id),
                    "bytes_transferred", (json_int_t) d->bytes_transferred,
                    "progress", progress ? progress : json_null (),
                    "error", api_json_str (d->error),
                    "created_at", api_json_str (d->created_at),
                    "completed_at", api_json_str (d->completed_at),
                    "verify_state", verify_state_name (d->verify_state),
                    "verified_at", api_json_str (d->verified_at),
                    "verify_error", api_json_str (d->verify_error));
}

json_t *
api_json_job (struct hub *hub, const struct cat_job *job, const char *repo_path)
{
  json_t *disks = json_array ();
  CLEANUP_FREE char *pending = job->id ? hub_leftover_reason (hub, job->id) : NULL;
  CLEANUP_FREE char *identity = NULL;
  char psk[HUB_PSK_HEX + 1];
  /* A running job's targets are on the hub that runs it: another hub
   * sharing the catalog gives no URI (nor credential) for them. */
  bool mine = hub_owns (hub, job->owner_hub);

  if (disks == NULL)
    return NULL;
  /* The targets' URIs name the job's NBD identity. */
  if (mine && job->status == JOB_RUNNING && job->id &&
      hub_nbd_credential (hub, "job", job->id, &identity, psk) == -1) {
    json_decref (disks);
    return NULL;
  }
  for (size_t i = 0; i < job->n_disks; i++)
    json_array_append_new (disks, json_disk (hub, job, &job->disks[i], repo_path,
                                             mine, identity));
  return json_pack ("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:b,s:o,s:o,s:o,s:s,s:o,s:o,s:o,s:o,s:o,s:o}",
                    "backup_id", api_json_str (job->id),
                    "context_id", api_json_str (job->context_id),
                    "vm_name", api_json_str (job->vm_name),
                    "repository_id", api_json_str (job->repository_id),
                    "backup_type", json_string (backup_type_name (job->backup_type)),
                    "driver", json_string (job_driver_name (job->driver)),
                    "status", json_string (job_status_name (job->status)),
                    "protected", (int) job->is_protected,
                    "error", api_json_str (job->error),
                    "created_at", api_json_str (job->created_at),
                    "completed_at", api_json_str (job->completed_at),
                    "verify_state", verify_state_name (job->verify_state),
                    "verified_at", api_json_str (job->verified_at),
                    "cleanup_pending", api_json_str (pending),
                    "lease_seconds", job->lease_seconds > 0
                    ? json_integer (job->lease_seconds) : json_null (),
                    "lease_expires_at", api_json_str (job->lease_expires_at),
                    "owner_hub", api_json_str (job->owner_hub),
                    "disks", disks);
}

json_t *
api_json_job_lookup (struct hub *hub, const struct cat_job *job)
{
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  bool have = catalog_repo_get (hub_catalog (hub), job->repository_id, &repo) == 0;

  return api_json_job (hub, job, have ? repo.path : NULL);
}

json_t *
api_json_nbd_tls (const char *identity, const char *psk)
{
  return identity ? json_pack ("{s:s,s:s}", "identity", identity, "psk", psk)
    : json_null ();
}

json_t *
api_json_job_credential (struct hub *hub, const struct cat_job *job)
{
  CLEANUP_FREE char *identity = NULL;
  char psk[HUB_PSK_HEX + 1];
  json_t *v = api_json_job_lookup (hub, job);

  if (v == NULL)
    return NULL;
  if (job->status == JOB_RUNNING && hub_owns (hub, job->owner_hub) &&
      hub_nbd_credential (hub, "job", job->id, &identity, psk) == -1) {
    json_decref (v);
    return NULL;
  }
  json_object_set_new (v, "nbd_tls", api_json_nbd_tls (identity, psk));
  return v;
}

json_t *
api_json_policy (const struct cat_policy *p)
{
  json_t *ret = NULL;

  if (p->has_retention) {
    const int64_t rules[] = {
      p->retention.keep_last, p->retention.keep_hourly, p->retention.keep_daily,
      p->retention.keep_weekly, p->retention.keep_monthly, p->retention.keep_yearly,
    };
    if ((ret = json_object ()) == NULL)
      return NULL;
    for (size_t i = 0; api_retention_keys[i]; i++)
      if (rules[i] >= 0)
        json_object_set_new (ret, api_retention_keys[i], json_integer (rules[i]));
  }
  return json_pack ("{s:o,s:o,s:o,s:o,s:{s:b,s:o,s:o},s:o,s:o}",
                    "name", api_json_str (p->name),
                    "repository_id", api_json_str (p->repository_id),
                    "schedule", api_json_str (p->schedule),
                    "retention", ret ? ret : json_null (),
                    "verify",
                    "after_backup", (int) p->verify_after_backup,
                    "every_days", opt_int (p->verify_every_days),
                    "audit_percent", opt_int (p->audit_percent),
                    "created_at", api_json_str (p->created_at),
                    "updated_at", api_json_str (p->updated_at));
}

json_t *
api_json_task (const struct cat_task *t)
{
  json_t *result = t->result ? json_loads (t->result, 0, NULL) : NULL;
  double progress = t->status == TASK_COMPLETED ? 1.0
    : t->steps_total > 0 ? (double) t->steps_done / (double) t->steps_total : 0.0;

  return json_pack ("{s:o,s:s,s:o,s:s,s:f,s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:o}",
                    "task_id", api_json_str (t->id),
                    "kind", task_kind_name (t->kind),
                    "context_id", api_json_str (t->context_id),
                    "status", task_status_name (t->status),
                    "progress", progress,
                    "steps_done", (json_int_t) t->steps_done,
                    "steps_total", (json_int_t) t->steps_total,
                    "message", api_json_str (t->message),
                    "error", api_json_str (t->error),
                    "result", result ? result : json_null (),
                    "created_at", api_json_str (t->created_at),
                    "updated_at", api_json_str (t->updated_at),
                    "completed_at", api_json_str (t->completed_at));
}

json_t *
api_json_ids (char *const *ids)
{
  json_t *arr = json_array ();
  for (size_t i = 0; arr && ids && ids[i]; i++)
    json_array_append_new (arr, api_json_str (ids[i]));
  return arr;
}

json_t *
api_json_deleted (char **ids)
{
  json_t *arr = api_json_ids (ids);
  return arr ? json_pack ("{s:o}", "deleted_backups", arr) : NULL;
}

int
api_reply (struct api_req *r, int status, json_t *reply)
{
  if (reply == NULL) {
    error_set (ERR_INTERNAL, "building the JSON reply failed");
    return -1;
  }
  r->status = status;
  r->reply = reply;
  return 0;
}

json_t *
api_json_offsets (const struct mf_compare *c)
{
  json_t *a = json_array ();
  size_t n = sizeof c->bad_offsets / sizeof c->bad_offsets[0];

  for (size_t i = 0; a && i < n && i < c->bad; i++)
    json_array_append_new (a, json_integer (c->bad_offsets[i]));
  return a;
}
