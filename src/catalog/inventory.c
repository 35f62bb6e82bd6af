/* catalog/inventory.c - the catalog's inventory: backup repositories,
 * retention policies and the VMs to back up (with their disks and the
 * scheduler's fields).
 */
#include <inttypes.h>
#include <string.h>

#include "catalog/core-int.h"
#include "util/array.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"

/* ------------------------------------------------------------------------
 * Repositories
 */

/* Insert a repository.  The taken id and path are checked first so that
 * the conflict says which; the UNIQUE constraints are the backstop. */
static int
repo_insert_tx (struct catalog *cat, const struct cat_repository *r, const char *now)
{
  CLEANUP_FREE char *other = NULL;
  int64_t one;
  int f;

  if ((f = db_int (cat, &one, "SELECT 1 FROM backup_repositories WHERE id = ?",
                   "s", r->id)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "repository %s already exists", r->id);
    return -1;
  }
  if ((f = db_text (cat, &other, "SELECT id FROM backup_repositories WHERE path = ?",
                    "s", r->path)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "path %s is already used by repository %s",
                 r->path, other);
    return -1;
  }
  if (db_exec (cat, "INSERT INTO backup_repositories (id, name, type, path, created_at)"
               " VALUES (?, ?, ?, ?, ?)", "sssss",
               r->id, r->name, r->type, r->path, r->created_at ? r->created_at : now) == -1) {
    error_prefix ("adding repository %s", r->id);
    return -1;
  }
  return 0;
}

int
catalog_repo_insert (struct catalog *cat, const struct cat_repository *r)
{
  char now[32];

  if (r == NULL || r->id == NULL || r->name == NULL || r->type == NULL || r->path == NULL)
    return core_missing ("repository id, name, type and path");
  id_now (now, sizeof now);
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, repo_insert_tx (cat, r, now), (void) 0);
}

int
catalog_repo_get (struct catalog *cat, const char *id, struct cat_repository *out)
{
  if (id == NULL || out == NULL)
    return core_missing ("repository id");
  return core_read_one (cat, &core_repo_kind, out, "repository", REPO_SELECT " WHERE id = ?",
                   "s", id, NULL);
}

/* All repositories, oldest first. */
int
catalog_repo_list (struct catalog *cat, struct cat_repository **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return core_missing ("output array");
  return core_read_all (cat, &core_repo_kind, (void **) out, n,
                   REPO_SELECT " ORDER BY created_at, id", "", NULL);
}

/* Delete a repository no context uses and no policy names.  The foreign
 * keys from vm_backup_contexts and policies would refuse it anyway;
 * checking first gives the reason in words. */
static int
repo_delete_tx (struct catalog *cat, const char *id)
{
  CLEANUP_FREE char *policy = NULL;
  int64_t count;
  int f;

  if (core_must_exist (cat, "SELECT 1 FROM backup_repositories WHERE id = ?", id,
                  "repository") == -1 ||
      db_int (cat, &count, "SELECT count(*) FROM vm_backup_contexts WHERE repository_id = ?",
              "s", id) == -1)
    return -1;
  if (count > 0)
    return catalog_fail (ERR_CONFLICT, "repository %s holds the backups of %" PRId64
                         " VM%s; delete those first", id, count, count == 1 ? "" : "s");
  if ((f = db_text (cat, &policy, "SELECT name FROM policies WHERE repository_id = ?"
                    " ORDER BY name LIMIT 1", "s", id)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "repository %s is the repository of policy %s; change or"
                 " delete the policy first", id, policy);
    return -1;
  }
  if (db_exec (cat, "DELETE FROM backup_repositories WHERE id = ?", "s", id) == -1) {
    error_prefix ("deleting repository %s", id);
    return -1;
  }
  return 0;
}

int
catalog_repo_delete (struct catalog *cat, const char *id)
{
  if (id == NULL)
    return core_missing ("repository id");
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, repo_delete_tx (cat, id), (void) 0);
}

/* ------------------------------------------------------------------------
 * Policies
 */

#define POLICY_SELECT \
  "SELECT name, repository_id, schedule, keep_last, keep_hourly, keep_daily," \
  " keep_weekly, keep_monthly, keep_yearly, created_at, updated_at, has_retention," \
  " verify_after_backup, verify_every_days, audit_percent FROM policies"

/* Copy a POLICY_SELECT row into *o (owned by the caller).  A NULL rule
 * reads as -1; has_retention says whether the policy has retention at all
 * (its rules may all be absent: {}, which keeps everything). */
static int
policy_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_policy *o = rec;
  struct cat_retention *k = &o->retention;

  (void) cat;
  o->name = core_row_text (r, 0);
  o->repository_id = core_row_text (r, 1);
  o->schedule = core_row_text (r, 2);
  k->keep_last = core_row_int (r, 3);
  k->keep_hourly = core_row_int (r, 4);
  k->keep_daily = core_row_int (r, 5);
  k->keep_weekly = core_row_int (r, 6);
  k->keep_monthly = core_row_int (r, 7);
  k->keep_yearly = core_row_int (r, 8);
  o->has_retention = core_row_int (r, 11) == 1;
  o->created_at = core_row_text (r, 9);
  o->updated_at = core_row_text (r, 10);
  o->verify_after_backup = core_row_int (r, 12) == 1;
  o->verify_every_days = core_row_int (r, 13);
  o->audit_percent = core_row_int (r, 14);
  return core_row_done (r);
}

static void
policy_clear (void *p)
{
  cat_policy_clear (p);
}

static const struct kind policy_kind = {
  sizeof (struct cat_policy), policy_read, policy_clear
};

/* Insert or update a policy (keeping created_at); its repository must
 * exist.  Absent rules (-1, or all of them without retention) are NULL. */
static int
policy_put_tx (struct catalog *cat, const void *rec, const char *now, bool *created)
{
  static const struct cat_retention none = { -1, -1, -1, -1, -1, -1 };
  const struct cat_policy *p = rec;
  const struct cat_retention *k = p->has_retention ? &p->retention : &none;
  int64_t one;
  int f;

  if (p->repository_id &&
      (f = db_int (cat, &one, "SELECT 1 FROM backup_repositories WHERE id = ?",
                   "s", p->repository_id)) != 1) {
    if (f == 0)
      error_set (ERR_INVALID, "repository %s not found", p->repository_id);
    return -1;
  }
  if ((f = db_int (cat, &one, "SELECT 1 FROM policies WHERE name = ?", "s", p->name)) == -1)
    return -1;
  *created = f == 0;
  /* ?1 name, ?2 repository, ?3 schedule, ?4..?9 the rules, ?10 now,
   * ?11 whether it has retention at all, ?12..?14 the verify settings
   * (below 1: absent, NULL). */
  if (db_exec (cat, *created
               ? "INSERT INTO policies (name, repository_id, schedule, keep_last,"
                 " keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly,"
                 " created_at, updated_at, has_retention, verify_after_backup,"
                 " verify_every_days, audit_percent)"
                 " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13, ?14)"
               : "UPDATE policies SET repository_id = ?2, schedule = ?3, keep_last = ?4,"
                 " keep_hourly = ?5, keep_daily = ?6, keep_weekly = ?7, keep_monthly = ?8,"
                 " keep_yearly = ?9, updated_at = ?10, has_retention = ?11,"
                 " verify_after_backup = ?12, verify_every_days = ?13, audit_percent = ?14"
                 " WHERE name = ?1",
               "sssoooooosiioo", p->name, p->repository_id, p->schedule, k->keep_last,
               k->keep_hourly, k->keep_daily, k->keep_weekly, k->keep_monthly,
               k->keep_yearly, now, (int) p->has_retention, (int) p->verify_after_backup,
               p->verify_every_days > 0 ? p->verify_every_days : -1,
               p->audit_percent > 0 ? p->audit_percent : -1) == -1) {
    error_prefix ("storing policy %s", p->name);
    return -1;
  }
  return 0;
}

int
catalog_policy_put (struct catalog *cat, const struct cat_policy *p, bool *created)
{
  const struct cat_retention *k;

  if (p == NULL || p->name == NULL)
    return core_missing ("policy name");
  k = &p->retention;
  if (p->has_retention &&
      (k->keep_last < -1 || k->keep_hourly < -1 || k->keep_daily < -1 ||
       k->keep_weekly < -1 || k->keep_monthly < -1 || k->keep_yearly < -1))
    return catalog_fail (ERR_INVALID, "policy %s: a retention rule must be 0 or more",
                         p->name);
  if (p->audit_percent > 100)
    return catalog_fail (ERR_INVALID, "policy %s: audit_percent must be 1 to 100", p->name);
  return core_put_record (cat, policy_put_tx, p, created);
}

int
catalog_policy_get (struct catalog *cat, const char *name, struct cat_policy *out)
{
  if (name == NULL || out == NULL)
    return core_missing ("policy name");
  return core_read_one (cat, &policy_kind, out, "policy", POLICY_SELECT " WHERE name = ?",
                   "s", name, NULL);
}

/* Every policy, by name. */
int
catalog_policy_list (struct catalog *cat, struct cat_policy **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return core_missing ("output array");
  return core_read_all (cat, &policy_kind, (void **) out, n, POLICY_SELECT " ORDER BY name",
                   "", NULL);
}

/* Delete a policy no VM uses.  The foreign key from vms.policy would
 * refuse it anyway; checking first names a VM that uses it. */
static int
policy_delete_tx (struct catalog *cat, const char *name)
{
  CLEANUP_FREE char *vm = NULL;
  int f;

  if (core_must_exist (cat, "SELECT 1 FROM policies WHERE name = ?", name, "policy") == -1)
    return -1;
  if ((f = db_text (cat, &vm, "SELECT vm_name FROM vms WHERE policy = ?"
                    " ORDER BY vm_name LIMIT 1", "s", name)) != 0) {
    if (f == 1)
      error_set (ERR_CONFLICT, "policy %s is used by VM %s; give the VM another policy"
                 " first", name, vm);
    return -1;
  }
  if (db_exec (cat, "DELETE FROM policies WHERE name = ?", "s", name) == -1) {
    error_prefix ("deleting policy %s", name);
    return -1;
  }
  return 0;
}

int
catalog_policy_delete (struct catalog *cat, const char *name)
{
  if (name == NULL)
    return core_missing ("policy name");
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, policy_delete_tx (cat, name), (void) 0);
}

/* ------------------------------------------------------------------------
 * VM inventory
 */

#define VM_SELECT \
  "SELECT vm_name, vmware_vm_id, vm_path, vcenter_host, datacenter," \
  " created_at, updated_at, policy, next_run_at, last_run_at, last_skipped_at" \
  " FROM vms"

/* Fill vm->disks from vm_disks, sorted by disk_index. */
static int
vm_load_disks (struct catalog *cat, struct cat_vm *vm)
{
  CLEANUP_STMT struct db_stmt *st =
    db_prepare (cat, "SELECT disk_index, size_bytes, vmware_disk_key, unit_number, source"
                " FROM vm_disks WHERE vm_name = ? ORDER BY disk_index", "s", vm->vm_name);
  size_t cap = 0;
  int r;

  if (st == NULL)
    return -1;
  while ((r = db_step (st)) == 1) {
    struct row row = { st, false, false };
    struct cat_vm_disk *d = array_push ((void **) &vm->disks, vm->n_disks, &cap,
                                        sizeof *d);
    if (d == NULL)
      return -1;
    vm->n_disks++;
    d->disk_index = (int) core_row_int (&row, 0);
    d->size_bytes = core_row_int (&row, 1);
    d->vmware_disk_key = core_row_int (&row, 2);
    d->unit_number = core_row_int (&row, 3);
    d->source = core_row_text (&row, 4);
    if (core_row_done (&row) == -1)
      return -1;
  }
  return r;
}

/* Copy a VM_SELECT row and the VM's disks into *o (owned by the caller). */
static int
vm_read (struct catalog *cat, struct row *r, void *rec)
{
  struct cat_vm *o = rec;

  o->vm_name = core_row_text (r, 0);
  o->vmware_vm_id = core_row_text (r, 1);
  o->vm_path = core_row_text (r, 2);
  o->vcenter_host = core_row_text (r, 3);
  o->datacenter = core_row_text (r, 4);
  o->created_at = core_row_text (r, 5);
  o->updated_at = core_row_text (r, 6);
  o->policy = core_row_text (r, 7);
  o->next_run_at = core_row_text (r, 8);
  o->last_run_at = core_row_text (r, 9);
  o->last_skipped_at = core_row_text (r, 10);
  if (core_row_done (r) == -1)
    return -1;
  return vm_load_disks (cat, o);
}

static void
vm_clear (void *vm)
{
  cat_vm_clear (vm);
}

static const struct kind vm_kind = { sizeof (struct cat_vm), vm_read, vm_clear };

/* Insert or update the VM row (keeping created_at, and the scheduler's
 * fields but for next_run_at when the policy changes: the next run is the
 * new policy's to compute) and replace its whole disk list.  *created
 * tells which it was. */
static int
vm_put_tx (struct catalog *cat, const void *rec, const char *now, bool *created)
{
  const struct cat_vm *vm = rec;
  CLEANUP_FREE char *old_policy = NULL;
  bool same_policy;
  int64_t one, f;

  if (vm->policy &&
      (f = db_int (cat, &one, "SELECT 1 FROM policies WHERE name = ?", "s", vm->policy)) != 1) {
    if (f == 0)
      error_set (ERR_INVALID, "policy %s not found", vm->policy);
    return -1;
  }
  f = db_text (cat, &old_policy, "SELECT policy FROM vms WHERE vm_name = ?", "s", vm->vm_name);
  if (f == -1)
    return -1;
  *created = f == 0;
  same_policy = old_policy && vm->policy ? strcmp (old_policy, vm->policy) == 0
                                         : old_policy == vm->policy;
  if (*created)
    f = db_exec (cat, "INSERT INTO vms (vm_name, vmware_vm_id, vm_path, vcenter_host,"
                 " datacenter, created_at, updated_at, policy)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 "seeeesss", vm->vm_name, vm->vmware_vm_id, vm->vm_path,
                 vm->vcenter_host, vm->datacenter, now, now, vm->policy);
  else
    f = db_exec (cat, "UPDATE vms SET vmware_vm_id = ?, vm_path = ?, vcenter_host = ?,"
                 " datacenter = ?, updated_at = ?, policy = ?,"
                 " next_run_at = CASE WHEN ? = 1 THEN next_run_at END WHERE vm_name = ?",
                 "eeeessis", vm->vmware_vm_id, vm->vm_path, vm->vcenter_host,
                 vm->datacenter, now, vm->policy, (int) same_policy, vm->vm_name);
  if (f == -1 ||
      db_exec (cat, "DELETE FROM vm_disks WHERE vm_name = ?", "s", vm->vm_name) == -1)
    return -1;
  for (size_t i = 0; i < vm->n_disks; i++) {
    const struct cat_vm_disk *d = &vm->disks[i];
    if (db_exec (cat, "INSERT INTO vm_disks (vm_name, disk_index, size_bytes,"
                 " vmware_disk_key, unit_number, source) VALUES (?, ?, ?, ?, ?, ?)",
                 "siIoos", vm->vm_name, d->disk_index, d->size_bytes,
                 d->vmware_disk_key, d->unit_number, d->source) == -1) {
      error_prefix ("VM %s, disk %d", vm->vm_name, d->disk_index);
      return -1;
    }
  }
  return 0;
}

int
catalog_vm_put (struct catalog *cat, const struct cat_vm *vm, bool *created)
{
  if (vm == NULL || vm->vm_name == NULL)
    return core_missing ("vm_name");
  if (vm->n_disks > 0 && vm->disks == NULL)
    return core_missing ("disk list");
  return core_put_record (cat, vm_put_tx, vm, created);
}

int
catalog_vm_get (struct catalog *cat, const char *vm_name, struct cat_vm *out)
{
  if (vm_name == NULL || out == NULL)
    return core_missing ("vm_name");
  return core_read_one (cat, &vm_kind, out, "VM", VM_SELECT " WHERE vm_name = ?",
                   "s", vm_name, NULL);
}

/* Every VM with its disks, by name. */
int
catalog_vm_list (struct catalog *cat, struct cat_vm **out, size_t *n)
{
  if (out == NULL || n == NULL)
    return core_missing ("output array");
  return core_read_all (cat, &vm_kind, (void **) out, n, VM_SELECT " ORDER BY vm_name",
                   "", NULL);
}

/* Delete a VM from the inventory; its disks go by cascade.  Its backups
 * stay: contexts copy what they need of the VM. */
static int
vm_delete_tx (struct catalog *cat, const char *vm_name)
{
  int64_t r = db_exec (cat, "DELETE FROM vms WHERE vm_name = ?", "s", vm_name);

  if (r == 0)
    error_set (ERR_NOT_FOUND, "VM %s not found", vm_name);
  return r <= 0 ? -1 : 0;
}

int
catalog_vm_delete (struct catalog *cat, const char *vm_name)
{
  if (vm_name == NULL)
    return core_missing ("vm_name");
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, vm_delete_tx (cat, vm_name), (void) 0);
}

/* The scheduler's fields of a VM: next_run_at as given, the others kept
 * where NULL. */
static int
vm_schedule_set_tx (struct catalog *cat, const char *vm_name, const char *next_run_at,
                    const char *last_run_at, const char *last_skipped_at)
{
  int64_t r = db_exec (cat, "UPDATE vms SET next_run_at = ?,"
                       " last_run_at = COALESCE(?, last_run_at),"
                       " last_skipped_at = COALESCE(?, last_skipped_at) WHERE vm_name = ?",
                       "ssss", next_run_at, last_run_at, last_skipped_at, vm_name);

  if (r == 0)
    error_set (ERR_NOT_FOUND, "VM %s not found", vm_name);
  return r <= 0 ? -1 : 0;
}

int
catalog_vm_schedule_set (struct catalog *cat, const char *vm_name, const char *next_run_at,
                         const char *last_run_at, const char *last_skipped_at)
{
  if (vm_name == NULL)
    return core_missing ("vm_name");
  SCOPED_LOCK (&cat->lock);
  return RUN_TX (cat, true, vm_schedule_set_tx (cat, vm_name, next_run_at, last_run_at,
                                                last_skipped_at), (void) 0);
}
