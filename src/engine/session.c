/* engine/session.c - one backup job's session, the same for the agent and
 * the hub's workers: copy each disk, have the hub record it, then commit
 * or abort the bitmaps.
 *
 * ORDER
 *
 *   copy (engine_backup_disk: new bitmap, data, flush)
 *     -> ops->complete_disk (the hub records the disk)
 *     -> with audit_percent: engine_audit_disk -> ops->audit_disk (the hub
 *        compares); a failed audit is a warning, never the job's failure
 *   every disk recorded -> ops->all_completed -> commit -> ops->finish
 *   a failure, or a stop before every disk was recorded
 *     -> ops->fail (once, after every copy stopped)
 *     -> abort, keep-completed or leave, as fail answers
 *
 * With a live source (s->live_ops: a libvirt backup job) the job is ended
 * once every copy (and audit, which reads its exports again) has stopped,
 * before the verdict, and commit and abort go
 * to the job's checkpoint instead of each disk's bitmaps; keep-completed
 * aborts it too, since a rerun makes a new checkpoint.
 *
 * A bitmap that replaces another is committed only once every disk of the
 * job is recorded: until then the older bitmap stays, so a job that fails
 * later still leaves each disk's last good bitmap for the next incremental.
 * Committing is idempotent (a bitmap already removed is skipped), so a job
 * whose commit was cut off (the hub died) is simply committed again.
 *
 * THREADS
 *
 * engine_session_run copies with s->parallel threads (the caller's thread
 * among them).  s->lock guards next, stopped, fail_index and reason; each
 * disk is touched by the one thread that took it until the threads are
 * joined.  engine_session_stop may come from any thread (a signal watcher,
 * the hub cancelling a job): it sets the cancel flag of every copy.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "integrity/manifest.h"
#include "util/cleanup.h"
#include "util/error.h"

void
engine_session_init (struct engine_session *s, const struct engine_session_ops *ops,
                     void *opaque, struct engine_session_disk *disks, size_t n,
                     int parallel)
{
  memset (s, 0, sizeof *s);
  s->ops = ops;
  s->opaque = opaque;
  s->disks = disks;
  s->n = n;
  s->parallel = parallel > 0 ? parallel : 1;
  s->fail_index = -1;
  pthread_mutex_init (&s->lock, NULL);
}

void
engine_session_clear (struct engine_session *s)
{
  for (size_t i = 0; i < s->n; i++) {
    engine_disk_result_clear (&s->disks[i].result);
    free (s->disks[i].error);
    s->disks[i].error = NULL;
    mf_map_free (s->disks[i].audit);
    s->disks[i].audit = NULL;
  }
  free (s->reason);
  s->reason = NULL;
  pthread_mutex_destroy (&s->lock);
}

/* Record the first failure (disk_index -1: a stop) and stop every copy.
 * s->lock held. */
static void
stop_locked (struct engine_session *s, int disk_index, const char *reason)
{
  if (!s->stopped) {
    s->stopped = true;
    s->fail_index = disk_index;
    s->reason = strdup (reason ? reason : "stopped");
  }
  for (size_t i = 0; i < s->n; i++) {
    atomic_store (&s->disks[i].progress->cancel, true);
    atomic_store (&s->disks[i].audit_progress.cancel, true);
  }
}

void
engine_session_stop (struct engine_session *s, const char *reason)
{
  SCOPED_LOCK (&s->lock);
  stop_locked (s, -1, reason);
}

/* A recorded disk's audit: read the source again into sd->audit and hand
 * it to ops->audit_disk.  Whatever goes wrong is a warning: the backup is
 * recorded and durable. */
static void
audit (struct engine_session *s, struct engine_session_disk *sd)
{
  char why[4096];

  sd->audit = mf_map_new (sd->result.size_bytes, NULL);
  if (sd->audit == NULL ||
      engine_audit_disk (&sd->d, sd->audit_percent, sd->audit_seed, sd->audit,
                         &sd->audit_progress) == -1) {
    snprintf (why, sizeof why, "the audit could not read the source: %s", error_message ());
    mf_map_free (sd->audit);
    sd->audit = NULL;
  }
  else if (s->ops->audit_disk && s->ops->audit_disk (s, sd) == -1)
    snprintf (why, sizeof why, "the audit could not be recorded: %s", error_message ());
  else
    return;
  if (s->ops->warn)
    s->ops->warn (s, sd, why);
}

/* One disk: copy it, then have the hub record it.  On failure sd->error
 * says why and the session stops. */
static void
run_disk (struct engine_session *s, struct engine_session_disk *sd)
{
  char why[4096];
  int r;

  if (s->ops->disk_start)
    s->ops->disk_start (s, sd);
  r = engine_backup_disk (&sd->d, sd->progress, &sd->result);
  if (r == -1 && s->ops->copy_again && s->ops->copy_again (s, sd))
    r = engine_backup_disk (&sd->d, sd->progress, &sd->result);
  if (r == -1)
    snprintf (why, sizeof why, "copying from %s: %s", sd->d.source, error_message ());
  else {
    sd->copied = true;
    if (s->ops->complete_disk (s, sd) == 0) {
      sd->completed = true;
      if (sd->audit_percent > 0)
        audit (s, sd);
    }
    else
      snprintf (why, sizeof why, "completing the copy: %s", error_message ());
  }
  if (!sd->completed) {
    sd->error = strdup (why);
    SCOPED_LOCK (&s->lock);
    stop_locked (s, sd->disk_index, why);
  }
  if (s->ops->disk_done)
    s->ops->disk_done (s, sd);
}

static void *
copier (void *arg)
{
  struct engine_session *s = arg;

  for (;;) {
    struct engine_session_disk *sd = NULL;
    bool stopped;
    {
      SCOPED_LOCK (&s->lock);
      while (s->next < s->n && s->disks[s->next].done_before)
        s->next++;
      if (s->next < s->n)
        sd = &s->disks[s->next++];
      stopped = s->stopped;
    }
    if (sd == NULL)
      return NULL;
    if (stopped) {
      sd->error = strdup ("not started: the backup stopped");
      if (s->ops->disk_done)
        s->ops->disk_done (s, sd);
      continue;
    }
    run_disk (s, sd);
  }
}

/* Keep the new bitmaps of the recorded disks, remove the ones they
 * replace.  A removal that fails is reported, not fatal: the backup is
 * complete and durable, and a leftover bitmap costs the source only a
 * little tracking (see ops->warn). */
static void
commit (struct engine_session *s)
{
  if (s->live_ops) {
    if (s->live_ops->commit (s) == -1 && s->ops->warn && s->n > 0)
      s->ops->warn (s, &s->disks[0], error_message ());
    return;
  }
  for (size_t i = 0; i < s->n; i++) {
    struct engine_session_disk *sd = &s->disks[i];
    if (!sd->completed || sd->d.source == NULL)
      continue;
    if (engine_backup_disk_commit (&sd->d, &sd->result) == -1 && s->ops->warn)
      s->ops->warn (s, sd, error_message ());
  }
}

/* Remove the new bitmaps: of every disk (ENGINE_ABORT), or of the disks
 * the hub did not record (ENGINE_KEEP_COMPLETED).  A disk whose copy failed
 * lost its new bitmap in engine_backup_disk already. */
static void
abort_bitmaps (struct engine_session *s, enum engine_verdict v)
{
  if (s->live_ops) {
    s->live_ops->abort (s);
    return;
  }
  for (size_t i = 0; i < s->n; i++) {
    struct engine_session_disk *sd = &s->disks[i];
    if ((!sd->copied && !sd->done_before) || sd->d.source == NULL)
      continue;
    if (v == ENGINE_KEEP_COMPLETED && sd->completed)
      continue;
    engine_backup_disk_abort (&sd->d, &sd->result);
  }
}

enum engine_verdict
engine_session_run (struct engine_session *s)
{
  size_t to_copy = 0, n_threads = 0;
  pthread_t *threads = NULL;
  enum engine_verdict v;
  bool failed;

  for (size_t i = 0; i < s->n; i++) {
    if (s->disks[i].done_before)
      s->disks[i].completed = true;
    else
      to_copy++;
  }
  if (to_copy > 1 && s->parallel > 1) {
    size_t want = (size_t) s->parallel < to_copy ? (size_t) s->parallel : to_copy;
    threads = calloc (want - 1, sizeof *threads);
    for (size_t i = 0; threads && i < want - 1; i++) {
      if (pthread_create (&threads[i], NULL, copier, s) != 0)
        break;
      n_threads++;
    }
  }
  copier (s);
  for (size_t i = 0; i < n_threads; i++)
    pthread_join (threads[i], NULL);
  free (threads);
  if (s->live_ops)
    s->live_ops->end (s);

  /* A stop that came once every disk was recorded stops nothing: the job
   * owes only its bitmaps. */
  failed = false;
  for (size_t i = 0; i < s->n; i++)
    failed |= !s->disks[i].completed;
  if (failed) {
    SCOPED_LOCK (&s->lock);
    failed = s->stopped;
  }
  if (failed)
    v = s->ops->fail (s, s->fail_index, s->reason ? s->reason : "stopped");
  else
    v = s->ops->all_completed (s);
  switch (v) {
  case ENGINE_COMMIT:
    commit (s);
    if (s->ops->finish)
      s->ops->finish (s);
    break;
  case ENGINE_ABORT:
  case ENGINE_KEEP_COMPLETED:
    abort_bitmaps (s, v);
    break;
  case ENGINE_LEAVE:
    break;
  }
  return v;
}
