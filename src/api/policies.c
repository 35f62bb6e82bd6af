/* api/policies.c - /api/v1/policies: schedules and retention rules that
 * VMs use through their inventory record. */
#include "api/api-int.h"
#include "util/error.h"
#include "util/id.h"

static const char *const no_params[] = { NULL };

#define API_MAX_VERIFY_DAYS 3650       /* ten years */

/* A policy's name follows the rules of a VM name (it is free text the
 * operator reads). */
static int
check_name (const char *name)
{
  if (id_check_vm_name (name) == -1) {
    error_prefix ("policy name");
    return -1;
  }
  return 0;
}

int
api_policies_list (struct api_req *r)
{
  CLEANUP_CAT_POLICY_LIST struct cat_policy_list pols = { 0 };
  json_t *arr;

  if (api_query_check (r, no_params) == -1 ||
      catalog_policy_list (hub_catalog (r->hub), &pols.v, &pols.n) == -1)
    return -1;
  arr = json_array ();
  for (size_t i = 0; arr && i < pols.n; i++)
    json_array_append_new (arr, api_json_policy (&pols.v[i]));
  return api_reply (r, 200, arr ? json_pack ("{s:o}", "policies", arr) : NULL);
}

int
api_policies_get (struct api_req *r)
{
  CLEANUP_CAT_POLICY struct cat_policy pol = { 0 };

  if (api_query_check (r, no_params) == -1 || check_name (r->id) == -1 ||
      catalog_policy_get (hub_catalog (r->hub), r->id, &pol) == -1)
    return -1;
  return api_reply (r, 200, api_json_policy (&pol));
}

/* The verify settings of a policy: {"after_backup": bool, "every_days":
 * 1..API_MAX_VERIFY_DAYS, "audit_percent": 1..100}, each absent or null
 * = off. */
static int
read_verify (json_t *verify, struct cat_policy *pol)
{
  static const char *const keys[] = { "after_backup", "every_days", "audit_percent", NULL };

  if (!json_is_object (verify)) {
    error_set (ERR_INVALID, "field 'verify' must be an object of after_backup, every_days"
               " and audit_percent");
    return -1;
  }
  if (api_check_fields (verify, keys) == -1 ||
      api_field_bool (verify, "after_backup", false, &pol->verify_after_backup, NULL) == -1 ||
      api_field_int (verify, "every_days", false, 1, API_MAX_VERIFY_DAYS,
                     &pol->verify_every_days, NULL) == -1 ||
      api_field_int (verify, "audit_percent", false, 1, 100, &pol->audit_percent,
                     NULL) == -1) {
    error_prefix ("verify");
    return -1;
  }
  return 0;
}

int
api_policies_put (struct api_req *r)
{
  static const char *const fields[] = { "repository_id", "schedule", "retention", "verify",
                                        NULL };
  CLEANUP_CAT_POLICY struct cat_policy stored = { 0 };
  struct cat_policy pol = { .name = (char *) r->id };
  const char *repository_id, *schedule;
  struct retention_rules rules;
  json_t *body, *retention, *verify;
  bool created, any;

  if (api_query_check (r, no_params) == -1 || check_name (r->id) == -1 ||
      api_body (r, fields, true, &body) == -1 ||
      api_field_str (body, "repository_id", false, ID_MAX, false, &repository_id) == -1 ||
      api_field_str (body, "schedule", false, API_MAX_STRING, false, &schedule) == -1)
    return -1;
  if (repository_id && api_check_id ("repository_id", repository_id) == -1)
    return -1;
  retention = body ? json_object_get (body, "retention") : NULL;
  if (retention && !json_is_null (retention)) {
    if (!json_is_object (retention)) {
      error_set (ERR_INVALID, "field 'retention' must be an object of keep_last, "
                 "keep_hourly, keep_daily, keep_weekly, keep_monthly and keep_yearly");
      return -1;
    }
    if (api_check_fields (retention, api_retention_keys) == -1 ||
        api_field_retention (retention, &rules, &any) == -1) {
      error_prefix ("retention");
      return -1;
    }
    pol.has_retention = true;
    pol.retention = (struct cat_retention) {
      rules.keep_last, rules.keep_hourly, rules.keep_daily, rules.keep_weekly,
      rules.keep_monthly, rules.keep_yearly,
    };
  }
  pol.verify_every_days = pol.audit_percent = -1;
  verify = body ? json_object_get (body, "verify") : NULL;
  if (verify && !json_is_null (verify) && read_verify (verify, &pol) == -1)
    return -1;
  pol.repository_id = (char *) repository_id;
  pol.schedule = (char *) schedule;
  if (hub_policy_put (r->hub, &pol, &created, &stored) == -1)
    return -1;
  return api_reply (r, created ? 201 : 200, api_json_policy (&stored));
}

int
api_policies_delete (struct api_req *r)
{
  if (api_query_check (r, no_params) == -1 || check_name (r->id) == -1 ||
      hub_policy_delete (r->hub, r->id) == -1)
    return -1;
  r->status = 204;
  return 0;
}
