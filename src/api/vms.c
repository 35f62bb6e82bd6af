/* api/vms.c - /api/v1/vms: the VM inventory. */
#include "api/api-int.h"
#include "util/error.h"
#include "util/id.h"

static const char *const no_params[] = { NULL };

int
api_vms_list (struct api_req *r)
{
  CLEANUP_CAT_VM_LIST struct cat_vm_list vms = { 0 };
  json_t *arr;

  if (api_query_check (r, no_params) == -1 ||
      catalog_vm_list (hub_catalog (r->hub), &vms.v, &vms.n) == -1)
    return -1;
  arr = json_array ();
  for (size_t i = 0; arr && i < vms.n; i++)
    json_array_append_new (arr, api_json_vm (&vms.v[i]));
  return api_reply (r, 200, arr ? json_pack ("{s:o}", "vms", arr) : NULL);
}

int
api_vms_get (struct api_req *r)
{
  CLEANUP_CAT_VM struct cat_vm vm = { 0 };

  if (api_query_check (r, no_params) == -1 || id_check_vm_name (r->id) == -1 ||
      catalog_vm_get (hub_catalog (r->hub), r->id, &vm) == -1)
    return -1;
  return api_reply (r, 200, api_json_vm (&vm));
}

int
api_vms_put (struct api_req *r)
{
  static const char *const fields[] = {
    "vmware_vm_id", "vm_path", "vcenter_host", "datacenter", "disks", "policy", NULL
  };
  const char *vmware_vm_id, *vm_path, *vcenter_host, *datacenter, *policy;
  struct cat_vm vm = { 0 }, stored = { 0 };
  struct cat_vm_disk *disks = NULL;
  size_t n = 0;
  bool created;
  json_t *body;
  int ret = -1;

  if (api_query_check (r, no_params) == -1 || id_check_vm_name (r->id) == -1 ||
      api_body (r, fields, false, &body) == -1 ||
      api_field_str (body, "vmware_vm_id", false, API_MAX_STRING, false, &vmware_vm_id) == -1 ||
      api_field_str (body, "vm_path", false, API_MAX_PATH, false, &vm_path) == -1 ||
      api_field_str (body, "vcenter_host", false, API_MAX_STRING, false, &vcenter_host) == -1 ||
      api_field_str (body, "datacenter", false, API_MAX_STRING, false, &datacenter) == -1 ||
      api_field_str (body, "policy", false, API_MAX_STRING, false, &policy) == -1 ||
      api_field_disks (body, "disks", &disks, &n) == -1)
    return -1;
  for (size_t i = 0; i < n; i++)
    if (disks[i].source && hub_source_check (disks[i].source) == -1) {
      error_prefix ("disks[%zu]", i);
      api_disks_free (disks, n);
      return -1;
    }
  vm.vm_name = (char *) r->id;
  vm.vmware_vm_id = (char *) vmware_vm_id;
  vm.vm_path = (char *) vm_path;
  vm.vcenter_host = (char *) vcenter_host;
  vm.datacenter = (char *) datacenter;
  vm.policy = (char *) policy;
  vm.disks = disks;
  vm.n_disks = n;
  if (hub_vm_put (r->hub, &vm, &created, &stored) == 0) {
    ret = api_reply (r, created ? 201 : 200, api_json_vm (&stored));
    cat_vm_clear (&stored);
  }
  api_disks_free (disks, n);
  return ret;
}

int
api_vms_delete (struct api_req *r)
{
  if (api_query_check (r, no_params) == -1 || id_check_vm_name (r->id) == -1 ||
      hub_vm_delete (r->hub, r->id) == -1)
    return -1;
  r->status = 204;
  return 0;
}
