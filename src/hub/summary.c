/* hub/summary.c - what an operator looks at first about a context: its
 * points, how its newest job went, the bytes its files take, whether its
 * points verified, and whether its VM's schedule is behind.  The API's
 * context objects carry it, so the dashboard and `strata contexts` show the
 * same thing, decided here once.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "hub/hub-int.h"
#include "integrity/manifest.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"

/* A scheduled run this late (seconds) makes its VM overdue. */
#define SUMMARY_LATE_S (10 * 60)

void
hub_context_summary_clear (struct hub_context_summary *s)
{
  free (s->last_error);
  free (s->last_completed_at);
  free (s->overdue_reason);
  memset (s, 0, sizeof *s);
}

/* Allocated bytes of path, or 0 when it is not there. */
static int64_t
file_bytes (const char *path)
{
  struct stat st;
  return path && stat (path, &st) == 0 ? (int64_t) st.st_blocks * 512 : 0;
}

static int64_t
disk_bytes (const char *repo_path, const struct cat_disk *d)
{
  CLEANUP_FREE char *path = NULL;
  CLEANUP_FREE char *mf = NULL;

  if (d->qcow2_path == NULL || (path = repo_abspath (repo_path, d->qcow2_path)) == NULL)
    return 0;
  mf = mf_path_for (path);
  return file_bytes (path) + file_bytes (mf);
}

/* The overdue rule.  A VM whose policy has a schedule is overdue when its
 * next run is more than SUMMARY_LATE_S in the past (the hub was down, or
 * its scheduler is stuck), or when its last scheduled run produced no
 * completed backup and no job of the context runs now.  A VM without a
 * schedule is never overdue: nobody said when it should be backed up. */
static int
summary_overdue (struct hub *hub, const struct cat_context *c,
                 struct hub_context_summary *s, bool running)
{
  CLEANUP_CAT_VM struct cat_vm vm = { 0 };
  CLEANUP_CAT_POLICY struct cat_policy pol = { 0 };
  time_t now = time (NULL), next;

  if (catalog_vm_get (hub->cat, c->vm_name, &vm) == -1) {
    if (error_category () == ERR_NOT_FOUND)
      return 0;                 /* a context of a VM no longer in the inventory */
    return -1;
  }
  if (vm.policy == NULL)
    return 0;
  if (catalog_policy_get (hub->cat, vm.policy, &pol) == -1)
    return error_category () == ERR_NOT_FOUND ? 0 : -1;
  if (pol.schedule == NULL)
    return 0;
  /* Only the context the policy backs up into answers for the schedule. */
  if (pol.repository_id && strcmp (pol.repository_id, c->repository_id) != 0)
    return 0;
  if (vm.next_run_at && id_time_parse (vm.next_run_at, &next) == 0 &&
      now - next > SUMMARY_LATE_S) {
    s->overdue = true;
    return asprintf (&s->overdue_reason, "the run scheduled at %s has not started",
                     vm.next_run_at) < 0 ? -1 : 0;
  }
  /* Both are the catalog's timestamps (id_now's fixed form, UTC, with
   * milliseconds), which sort as text. */
  if (running || vm.last_run_at == NULL ||
      (s->last_completed_at && strcmp (s->last_completed_at, vm.last_run_at) >= 0))
    return 0;
  s->overdue = true;
  return asprintf (&s->overdue_reason, "the run scheduled at %s did not complete a backup",
                   vm.last_run_at) < 0 ? -1 : 0;
}

int
hub_context_summary (struct hub *hub, const struct cat_context *c,
                     struct hub_context_summary *out)
{
  struct cat_job_filter f = { .vm_name = c->vm_name, .repository_id = c->repository_id };
  CLEANUP_CAT_JOB_LIST struct cat_job_list jobs = { 0 };
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  bool have_repo, running = false, all_ok = true;
  struct hub_context_summary s = { .verify_state = VERIFY_NONE };

  if (catalog_backup_list (hub->cat, &f, &jobs.v, &jobs.n, NULL) == -1)
    return -1;
  have_repo = catalog_repo_get (hub->cat, c->repository_id, &repo) == 0;
  s.bytes_used = have_repo ? 0 : -1;
  /* Newest first. */
  for (size_t i = 0; i < jobs.n; i++) {
    const struct cat_job *j = &jobs.v[i];
    if (j->status == JOB_REMOVING)
      continue;                 /* a prune task is taking it away */
    if (!s.has_last) {
      s.has_last = true;
      s.last_status = j->status;
      if (j->error && (s.last_error = strdup (j->error)) == NULL)
        goto oom;
    }
    if (job_status_active (j->status))
      running = true;
    if (have_repo)
      for (size_t k = 0; k < j->n_disks; k++)
        s.bytes_used += disk_bytes (repo.path, &j->disks[k]);
    if (j->status != JOB_COMPLETED)
      continue;
    s.points++;
    if (s.last_completed_at == NULL && j->completed_at &&
        (s.last_completed_at = strdup (j->completed_at)) == NULL)
      goto oom;
    if (j->verify_state == VERIFY_CORRUPT)
      s.verify_state = VERIFY_CORRUPT;
    if (j->verify_state != VERIFY_OK)
      all_ok = false;
  }
  if (s.verify_state != VERIFY_CORRUPT && s.points > 0 && all_ok)
    s.verify_state = VERIFY_OK;
  if (summary_overdue (hub, c, &s, running) == -1) {
    hub_context_summary_clear (&s);
    return -1;
  }
  *out = s;
  return 0;

 oom:
  hub_context_summary_clear (&s);
  error_set (ERR_INTERNAL, "out of memory");
  return -1;
}
