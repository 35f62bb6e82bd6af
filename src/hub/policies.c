/* hub/policies.c - backup policies: a schedule, retention rules and a
 * repository, which VMs use through their inventory record.
 *
 * The one rule that ties a policy to its VMs is written here once
 * (hub_policy_fits_vm): a policy with a schedule makes the hub back the VM
 * up by itself, so every disk of the VM needs a source.  It is checked when
 * a VM takes a policy (hub_vm_put) and when a policy in use gains a
 * schedule (hub_policy_put).
 */
#include <stdlib.h>
#include <string.h>

#include "hub/hub-int.h"
#include "lifecycle/cron.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/log.h"

int
hub_policy_fits_vm (const struct cat_policy *p, const struct cat_vm *vm)
{
  if (p->schedule == NULL)
    return 0;
  for (size_t i = 0; i < vm->n_disks; i++)
    if (vm->disks[i].source == NULL) {
      error_set (ERR_INVALID, "VM '%s' disk %d has no source, and policy '%s' has a "
                 "schedule: the hub backs up a scheduled VM by itself, from its disks' "
                 "sources", vm->vm_name, vm->disks[i].disk_index, p->name);
      return -1;
    }
  return 0;
}

static bool
uses (const struct cat_vm *vm, const char *policy)
{
  return vm->policy && strcmp (vm->policy, policy) == 0;
}

static bool
same_text (const char *a, const char *b)
{
  return a == b || (a && b && strcmp (a, b) == 0);
}

int
hub_policy_put (struct hub *hub, const struct cat_policy *p, bool *created,
                struct cat_policy *out)
{
  CLEANUP_CAT_VM_LIST struct cat_vm_list vms = { 0 };

  if (p->schedule) {
    struct cron *c = cron_parse (p->schedule);
    if (c == NULL)
      return -1;      /* the message starts "schedule: " */
    cron_free (c);
  }
  {
    SCOPED_LOCK (&hub->lock);
    CLEANUP_CAT_POLICY struct cat_policy old = { 0 };
    bool rescheduled;

    if (catalog_vm_list (hub->cat, &vms.v, &vms.n) == -1)
      return -1;
    for (size_t i = 0; i < vms.n; i++)
      if (uses (&vms.v[i], p->name) && hub_policy_fits_vm (p, &vms.v[i]) == -1)
        return -1;
    if (catalog_policy_get (hub->cat, p->name, &old) == -1 &&
        error_category () != ERR_NOT_FOUND)
      return -1;
    rescheduled = !same_text (old.schedule, p->schedule);
    if (catalog_policy_put (hub->cat, p, created) == -1 ||
        catalog_policy_get (hub->cat, p->name, out) == -1)
      return -1;
    /* A VM's next run was the old schedule's: let the scheduler compute
     * it afresh from the new one (after the put, so that it cannot read
     * the old schedule again). */
    for (size_t i = 0; rescheduled && i < vms.n; i++)
      if (uses (&vms.v[i], p->name) && vms.v[i].next_run_at &&
          catalog_vm_schedule_set (hub->cat, vms.v[i].vm_name, NULL, NULL, NULL) == -1)
        log_warn ("policy '%s': VM '%s' keeps its next run of the old schedule: %s",
                  p->name, vms.v[i].vm_name, error_message ());
  }
  log_info ("policy '%s' %s", p->name, *created ? "created" : "replaced");
  hub_schedule_poke (hub);
  return 0;
}

int
hub_policy_delete (struct hub *hub, const char *name)
{
  SCOPED_LOCK (&hub->lock);
  if (catalog_policy_delete (hub->cat, name) == -1)
    return -1;
  log_info ("policy '%s' deleted", name);
  return 0;
}
