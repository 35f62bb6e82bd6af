/* hub/schedule.c - the scheduler: hub-driven backups of the VMs whose
 * policy has a schedule.
 *
 * Each such VM carries its next run in the catalog (vms.next_run_at, UTC),
 * computed from the policy's cron expression in the hub's local time.  One
 * thread wakes at the earliest next run (or when a policy or a VM changes,
 * hub_schedule_poke, and at least once a minute) and, for every VM whose
 * run is due, starts an incremental backup that the hub copies itself (a
 * full when the chain has nothing to build on), then sets the next run
 * from now.  So:
 *
 *   - a run missed while the hub was down runs once at the next start (its
 *     next_run_at is in the past), never once per missed run;
 *   - a VM whose backup still runs (or finishes) when its run is due skips
 *     that run: the log says so, and so does the VM's last_skipped_at;
 *   - a VM that newly takes a policy waits for the policy's next time.
 *
 * The minute tick also queues again the prune tasks that wait for
 * something: the events that end their wait queue them at once, the tick
 * only backs them up.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hub/hub-int.h"
#include "lifecycle/cron.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"
#include "util/ticker.h"

#define SCHEDULE_TICK_S 60

static void
set_schedule (struct hub *hub, const char *vm_name, time_t next, const char *ran,
              const char *skipped)
{
  char next_text[32];

  if (next != (time_t) -1)
    id_time_format (next, next_text, sizeof next_text);
  if (catalog_vm_schedule_set (hub->cat, vm_name, next == (time_t) -1 ? NULL : next_text,
                               ran, skipped) == -1)
    log_error ("schedule of VM '%s': %s", vm_name, error_message ());
}

/* The VM's run is due: start its backup, or say why it is skipped. */
static void
run_due (struct hub *hub, const struct cat_vm *vm, const struct cat_policy *pol,
         const struct cron *cron, time_t now)
{
  struct hub_backup_request req = {
    .vm_name = vm->vm_name, .repository_id = pol->repository_id,
    .backup_type = BACKUP_INCREMENTAL, .driver_given = true, .driver = DRIVER_HUB,
  };
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  char stamp[32];
  time_t next = cron_next (cron, now);

  id_time_format (now, stamp, sizeof stamp);
  if (hub_backup_start (hub, &req, &job) == 0) {
    log_info ("schedule: policy '%s' started backup %s of VM '%s'", pol->name, job.id,
              vm->vm_name);
    set_schedule (hub, vm->vm_name, next, stamp, NULL);
    return;
  }
  log_warn ("schedule: policy '%s': VM '%s' skips the run due at %s: %s", pol->name,
            vm->vm_name, vm->next_run_at, error_message ());
  set_schedule (hub, vm->vm_name, next, NULL, stamp);
}

/* Look at every VM with a scheduled policy once.  *wake becomes the
 * earliest next run, if sooner. */
static void
schedule_pass (struct hub *hub, time_t *wake)
{
  CLEANUP_CAT_VM_LIST struct cat_vm_list vms = { 0 };
  time_t now = time (NULL);

  if (catalog_vm_list (hub->cat, &vms.v, &vms.n) == -1) {
    log_error ("schedule: listing VMs: %s", error_message ());
    return;
  }
  for (size_t i = 0; i < vms.n && !hub_stopping (hub); i++) {
    const struct cat_vm *vm = &vms.v[i];
    CLEANUP_CAT_POLICY struct cat_policy pol = { 0 };
    struct cron *cron;
    time_t due;

    if (vm->policy == NULL || catalog_policy_get (hub->cat, vm->policy, &pol) == -1 ||
        pol.schedule == NULL) {
      if (vm->next_run_at)
        set_schedule (hub, vm->vm_name, -1, NULL, NULL);
      continue;
    }
    if ((cron = cron_parse (pol.schedule)) == NULL) {
      log_error ("schedule: policy '%s': %s", pol.name, error_message ());
      continue;
    }
    if (vm->next_run_at == NULL || id_time_parse (vm->next_run_at, &due) == -1) {
      due = cron_next (cron, now);
      set_schedule (hub, vm->vm_name, due, NULL, NULL);
    }
    else if (due <= now) {
      run_due (hub, vm, &pol, cron, now);
      due = cron_next (cron, now);
    }
    if (due != (time_t) -1 && due < *wake)
      *wake = due;
    cron_free (cron);
  }
}

/* One run of the scheduler's thread; returns when to run again at the
 * latest. */
static time_t
schedule_tick (void *opaque)
{
  struct hub *hub = opaque;
  time_t wake = time (NULL) + SCHEDULE_TICK_S;

  schedule_pass (hub, &wake);
  {
    SCOPED_LOCK (&hub->lock);
    hub_leftover_retry (hub);
  }
  hub_prune_wake (hub, NULL);
  hub_verify_due (hub);
  return wake;
}

int
hub_schedule_start (struct hub *hub)
{
  hub->schedule = ticker_start ("the scheduler", schedule_tick, hub);
  return hub->schedule ? 0 : -1;
}

void
hub_schedule_stop (struct hub *hub)
{
  ticker_stop (hub->schedule);
  hub->schedule = NULL;
}

void
hub_schedule_poke (struct hub *hub)
{
  ticker_poke (hub->schedule);
}
