/* agent/backup.c - `strata backup`: back a VM's disks up into the hub.
 *
 * FLOW
 *
 * 1. Every DISK is checked and sized before the hub hears of it, so bad
 *    input changes nothing there.
 * 2. POST /api/v1/backups with the disks inline.  A 409 whose running job
 *    is an agent's job created before the hub's current start (GET /healthz
 *    started_at) is one whose agent lost its connections to a crashed hub:
 *    it is resumed (same backup id, the disks not yet completed are copied
 *    again into their re-exported targets), or failed and replaced when its
 *    disks do not match.  Any other 409 is a conflict.
 * 3. The backup session (engine/session.c) copies the disks in parallel
 *    (at most --parallel at a time); each is flushed by the engine and then
 *    completed at the hub with its change id (POST .../complete).
 *    The engine hashes every block it reads (XXH3-128 per 64 KiB block);
 *    before a disk is completed the agent uploads those hashes, streamed
 *    from a temporary file (PUT .../disks/N/manifest).  A hub without that
 *    route (an older one) gets no hashes, with one warning.
 *    With --audit the session then reads the completed disk's source again
 *    (all of it or a sample) and the agent uploads what it saw
 *    (PUT .../disks/N/audit): the hub compares it with the point's
 *    manifests.  Differences make the exit status 1, the backup stays.
 *    From the start on, the agent reports to the hub every 2 s (POST
 *    .../progress; agent/progress.c): the progress of the disks that copy,
 *    and that it lives.  The job carries a lease (lease_seconds, 60 s) that
 *    each report renews: a killed agent's job is failed by the hub once the
 *    lease lapsed (hub/lease.c), so the next run is not refused with 409.
 *    Before copying, the agent removes from its QCOW2 sources the strata
 *    bitmaps of backups the hub no longer knows (remove_orphan_bitmaps).
 * 4. Only when the hub reports the job completed are the older bitmaps
 *    removed.  On any error, a signal or a refused completion, the job is
 *    failed at the hub (POST .../fail) and every disk's new bitmap removed,
 *    so the previous chain stays usable.
 *
 * A libvirt domain (--libvirt) is its disks in target order: after step 2
 * one libvirt pull-mode backup job exports them all at one point in time
 * with a new checkpoint (virt/virt.h), the session copies the exports,
 * ends the job, and deletes the previous checkpoint once the hub completed
 * the job, or the new one when it failed.  A shut-off domain is started
 * paused for it and shut off again.
 *
 * An agent's job is completed at the hub by its last disk, before the
 * agent removes the superseded bitmaps: an agent that dies in between
 * leaves the old bitmap in its image (harmless: the next backup of that
 * disk removes it with its own commit when it names it as superseded, and
 * an incremental only ever reads the bitmap it names).  Hub-driven jobs
 * have no such window: they stay "finishing" until the hub has committed.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/agent-int.h"
#include "util/cleanup.h"
#include "integrity/manifest.h"
#include "util/error.h"
#include "util/json.h"
#include "virt/virt.h"

struct bdisk {
  int index;
  const char *source;
  const char *target;         /* a libvirt disk's target (vda), or NULL */
  int64_t size;
  bool skip;                  /* completed before (a resumed job) */
  char *target_uri, *prev, *hub_full_reason;
  char *superseded;           /* the context's latest change id before this job */
  char *recorded_change_id;   /* skip: the change id the hub recorded */
  bool has_backing;
  struct mf_map *hashes;      /* the copy's block hashes, or NULL */
  json_t *audit;              /* the hub's answer to the audit, or NULL */
};

struct backup {
  struct client c;
  const char *vm, *repo, *psk, *bitmap, *change_id;
  const char *domain, *uri;   /* --libvirt, --connect */
  bool quiesce;
  struct virt_domain *vd;
  char *quiesce_note;         /* why --quiesce could not freeze, or NULL */
  bool type_auto;             /* --type auto: decided by the context's chain */
  enum backup_type type;
  bool json, resumed;
  int parallel;
  int audit_percent;          /* --audit: percent of the blocks, or 0 */
  _Atomic bool no_manifests;  /* the hub has no manifest route */
  char *backup_id;
  char *key_file;             /* the job's NBD credential (client_psk_file) */
  struct bdisk *disks;
  int n;
  struct progress_row *rows;
  struct progress_display *pd;
  struct engine_session s;    /* set up once the job is started */
  struct engine_session_disk *sdisks;

  _Atomic bool job_completed; /* the hub answered job_status "completed" */
  _Atomic bool hub_gone;      /* a call to the hub got no answer */
  _Atomic int signal;
  char *why;                  /* why the job failed */
};

static void
usage (FILE *fp)
{
  fprintf (fp,
"Usage: strata backup [--hub URL] [--token-file F] --vm NAME [--repository ID]\n"
"                     [--type auto|full|incremental] [--dirty-bitmap NAME]\n"
"                     [--change-id ID] [--tls-psk-file F] [--parallel N]\n"
"                     [--audit[=PERCENT]] [--json] DISK...\n"
"       strata backup [...] --libvirt DOMAIN [--connect URI] [--quiesce]\n"
"Back up the disks of a VM into the hub.  Each DISK, in order, is disk 0, 1, ...:\n"
"  a QCOW2 image (strata keeps a persistent dirty bitmap in it: incrementals copy\n"
"  only what changed), a raw image or block device (always copied in full), or\n"
"  an NBD URI (nbd://, nbd+unix://, nbds://).  With --libvirt, the disks are the\n"
"  domain's writable disks in target order (vda = 0, ...), backed up live through\n"
"  libvirt with a checkpoint per backup; cdroms, read-only and shareable disks\n"
"  are skipped and listed.\n"
"\n");
  client_opts_usage (fp, 23);
  fprintf (fp,
"  --vm NAME            the VM (required)\n"
"  --repository ID      the repository (default: default)\n"
"  --type T             auto (default: incremental where the VM has a completed\n"
"                       chain, full where not), full or incremental\n"
"  --dirty-bitmap NAME  NBD URI disks: the bitmap the export carries\n"
"                       (meta context qemu:dirty-bitmap:NAME) for an incremental\n"
"  --change-id ID       NBD URI disks: the change id to record (e.g. the new\n"
"                       libvirt checkpoint)\n"
"  --tls-psk-file F     connect to the targets with F's first key (IDENTITY:HEXKEY,\n"
"                       e.g. one of the hub's --nbd-tls-psk-file) instead of\n"
"                       the job's credential from the hub\n"
"  --parallel N         disks copied at once (default 2)\n"
"  --audit[=PERCENT]    after each disk, read its source again (every block, or\n"
"                       a random PERCENT of them, 1-100) and have the hub\n"
"                       compare it with the new point: blocks that differ are\n"
"                       blocks the change tracking missed\n"
"  --json               print a JSON summary on stdout instead of progress\n"
"  --libvirt DOMAIN     back up a libvirt domain, running or shut off (started\n"
"                       paused for the backup); --vm defaults to DOMAIN\n"
"  --connect URI        libvirt URI (default qemu:///system)\n"
"  --quiesce            freeze the guest's file systems (guest agent) around the\n"
"                       start; without an agent the backup is crash-consistent\n"
"\n"
"Exit status: 0 backed up; 1 the backup failed (the job is failed at the hub,\n"
"the previous chain stays usable), or it is complete but its audit found blocks\n"
"that differ; 2 usage error or unusable DISK (nothing is\n"
"sent to the hub); 3 the hub is unreachable or refused the request; 4 a backup\n"
"of the VM is already running (conflict).\n");
}

static const char *
jstr (json_t *o, const char *key)
{
  return json_string_value (json_object_get (o, key));
}

static char *
jdup (json_t *o, const char *key)
{
  const char *s = jstr (o, key);
  return s ? strdup (s) : NULL;
}

/* Parse the word of field key of the hub's answer o into *out with parse
 * (job_status_parse, ...): 0, or -1 with ERR_INTERNAL naming the field and
 * the word (a hub newer than this strata?). */
#define JWORD(o, key, parse, out)                                       \
  jword_check ((key), jstr ((o), (key)), (parse) (jstr ((o), (key)), (out)))

static int
jword_check (const char *key, const char *word, int parsed)
{
  if (parsed == 0)
    return 0;
  if (word)
    error_set (ERR_INTERNAL, "the hub answered %s \"%s\", which this strata does not know",
               key, word);
  else
    error_set (ERR_INTERNAL, "the hub's answer has no %s", key);
  return -1;
}

/* Take the disks of a job answer.  Returns -1 (error set) when they do not
 * match the DISKs given. */
static int
take_job (struct backup *b, json_t *job)
{
  json_t *disks = json_object_get (job, "disks"), *jd;
  size_t i;

  free (b->backup_id);
  b->backup_id = jdup (job, "backup_id");
  if (b->backup_id == NULL || !json_is_array (disks)) {
    error_set (ERR_INTERNAL, "the hub's answer has no backup id or disks");
    return -1;
  }
  /* The targets' key: the job's credential, unless --tls-psk-file. */
  client_psk_file_remove (&b->key_file);
  if (b->psk == NULL && client_psk_file (job, &b->key_file) == -1)
    return -1;
  if ((int) json_array_size (disks) != b->n) {
    error_set (ERR_CONFLICT, "job %s has %zu disks, not %d", b->backup_id,
               json_array_size (disks), b->n);
    return -1;
  }
  json_array_foreach (disks, i, jd) {
    json_int_t idx = json_integer_value (json_object_get (jd, "disk_index"));
    enum disk_status status;
    struct bdisk *d;
    if (idx < 0 || idx >= b->n) {
      error_set (ERR_CONFLICT, "job %s has a disk %lld", b->backup_id, (long long) idx);
      return -1;
    }
    d = &b->disks[idx];
    if (JWORD (jd, "status", disk_status_parse, &status) == -1) {
      error_prefix ("disk %d of job %s", d->index, b->backup_id);
      return -1;
    }
    if (json_integer_value (json_object_get (jd, "size_bytes")) != d->size) {
      error_set (ERR_CONFLICT, "disk %d of job %s is %lld bytes, %s is %lld",
                 d->index, b->backup_id,
                 (long long) json_integer_value (json_object_get (jd, "size_bytes")),
                 d->source, (long long) d->size);
      return -1;
    }
    free (d->target_uri);
    free (d->prev);
    free (d->hub_full_reason);
    free (d->recorded_change_id);
    d->target_uri = jdup (jd, "nbd_uri");
    if (b->psk && d->target_uri) {
      char *uri = client_uri_identity (d->target_uri, b->psk);
      if (uri == NULL)
        return -1;
      free (d->target_uri);
      d->target_uri = uri;
    }
    d->prev = jdup (jd, "previous_change_id");
    d->hub_full_reason = jdup (jd, "full_reason");
    d->skip = status == DISK_COMPLETED;
    d->recorded_change_id = d->skip ? jdup (jd, "change_id") : NULL;
    d->has_backing = jstr (jd, "parent_backup_id") != NULL;
    if (!d->skip && d->target_uri == NULL) {
      error_set (ERR_CONFLICT, "disk %d of job %s has no NBD target", d->index, b->backup_id);
      return -1;
    }
  }
  return 0;
}

/* Whether the running job of the context is an agent's job from before
 * the hub's current start; *job gets it. */
static bool
stale_agent_job (struct backup *b, json_t **job, char *running, size_t len)
{
  CLEANUP_JSON json_t *health = NULL, *list = NULL;
  CLEANUP_FREE char *path = NULL, *vm = NULL;
  const char *started, *created;
  enum job_driver drv;
  json_t *j;

  *job = NULL;
  vm = client_escape (b->vm);
  if (vm == NULL ||
      asprintf (&path, "/api/v1/backups?vm_name=%s&repository_id=%s&status=running",
                vm, b->repo) == -1) {
    path = NULL;
    return false;
  }
  if (client_call (&b->c, "GET", path, NULL, &list) != 200)
    return false;
  j = json_array_get (json_object_get (list, "backups"), 0);
  if (j == NULL || jstr (j, "backup_id") == NULL)
    return false;
  snprintf (running, len, "%s", jstr (j, "backup_id"));
  if (client_call (&b->c, "GET", "/healthz", NULL, &health) != 200 ||
      (started = jstr (health, "started_at")) == NULL)
    return false;
  created = jstr (j, "created_at");
  /* An unknown driver is no job of an agent's: not resumed. */
  if (JWORD (j, "driver", job_driver_parse, &drv) == -1)
    return false;
  /* Same format (UTC, fixed width): the strings order as the times. */
  if (drv == DRIVER_AGENT && created && strcmp (created, started) < 0) {
    *job = json_incref (j);
    return true;
  }
  return false;
}

/* Read each disk's latest completed backup in the context before the job
 * starts.  Its change id: a full replaces that chain, and its bitmap is
 * removed with the previous one once the job has completed (only clean-up
 * depends on it, so a failed lookup leaves the field NULL).  Whether any
 * disk has one: --type auto is incremental only where there is a chain.
 * Returns true when some disk has a completed backup to build on. */
static bool
read_superseded (struct backup *b)
{
  bool chain = false;
  CLEANUP_FREE char *vm = client_escape (b->vm), *repo = client_escape (b->repo);

  if (vm == NULL || repo == NULL)
    return true;
  for (int i = 0; i < b->n; i++) {
    CLEANUP_JSON json_t *resp = NULL;
    CLEANUP_FREE char *path = NULL;
    struct error_saved es;
    const char *cid;

    if (asprintf (&path, "/api/v1/backups/changeid?vm_name=%s&disk_id=%d&repository_id=%s",
                  vm, i, repo) == -1) {
      path = NULL;
      return true;
    }
    error_save (&es);
    if (client_call (&b->c, "GET", path, NULL, &resp) != 200)
      chain = true;           /* unknown: let the hub decide */
    else {
      if (jstr (resp, "backup_id"))
        chain = true;
      if ((cid = jstr (resp, "change_id")) != NULL && *cid) {
        free (b->disks[i].superseded);
        b->disks[i].superseded = strdup (cid);
      }
    }
    error_restore (&es);
  }
  return chain;
}

/* The lease the job asks for: the hub fails it once this agent has not
 * reported for that long (it reports every 2 s while it lives).
 * STRATA_LEASE_SECONDS changes it, for tests. */
static int64_t
lease_seconds (void)
{
  const char *e = getenv ("STRATA_LEASE_SECONDS");
  char *end;
  long long v;

  if (e && *e) {
    errno = 0;
    v = strtoll (e, &end, 10);
    if (errno == 0 && *end == '\0' && v > 0)
      return v;
  }
  return AGENT_LEASE_SECONDS;
}

/* Start the job (or resume a stale one).  Returns an exit status. */
static int
start_job (struct backup *b)
{
  CLEANUP_JSON json_t *body = NULL, *resp = NULL, *disks = NULL;
  enum backup_type type = b->type;
  bool chain = read_superseded (b);
  int i, st, attempt;

  /* auto: incremental where the context has a completed chain (the hub
   * takes a disk without one in full), full where it has none, so that
   * the job is recorded for what it is. */
  if (b->type_auto)
    type = chain ? BACKUP_INCREMENTAL : BACKUP_FULL;

  disks = json_array ();
  for (i = 0; i < b->n; i++)
    json_array_append_new (disks, json_pack ("{s:i,s:I}", "disk_index", i,
                                             "size_bytes", (json_int_t) b->disks[i].size));
  body = json_pack ("{s:s,s:s,s:s,s:O,s:I}", "vm_name", b->vm, "repository_id", b->repo,
                    "backup_type", backup_type_name (type), "disks", disks,
                    "lease_seconds", (json_int_t) lease_seconds ());
  if (body == NULL) {
    error_set (ERR_INTERNAL, "encoding the request");
    return AGENT_EXIT_FAILED;
  }

  for (attempt = 0; attempt < 2; attempt++) {
    json_t *job = NULL;

    json_decref (resp);
    resp = NULL;
    st = client_call (&b->c, "POST", "/api/v1/backups", body, &resp);
    if (st == 201)
      return take_job (b, resp) == -1 ? AGENT_EXIT_FAILED : AGENT_EXIT_OK;
    if (st != 409)
      return client_exit_status (st);

    {
      struct error_saved conflict;
      char running[256] = "";
      error_save (&conflict);
      if (!stale_agent_job (b, &job, running, sizeof running)) {
        error_restore (&conflict);
        if (running[0])
          error_set (ERR_CONFLICT, "a backup of VM %s is already running: %s (%s)",
                     b->vm, running, conflict.msg);
        return AGENT_EXIT_CONFLICT;
      }
    }
    /* The hub restarted under this job's agent: take it over. */
    {
      CLEANUP_JSON json_t *full = NULL, *fb = NULL;
      CLEANUP_FREE char *path = NULL;
      const char *id = jstr (job, "backup_id");

      if (asprintf (&path, "/api/v1/backups/%s", id) == -1) {
        path = NULL;
        json_decref (job);
        return AGENT_EXIT_FAILED;
      }
      json_decref (job);
      st = client_call (&b->c, "GET", path, NULL, &full);
      if (st != 200)
        return client_exit_status (st);
      if (take_job (b, full) == 0) {
        b->resumed = true;
        if (!b->json)
          fprintf (stderr, "strata backup: resuming %s, cut off by a hub restart\n",
                   b->backup_id);
        return AGENT_EXIT_OK;
      }
      /* Its disks are not ours: fail it, start anew. */
      fb = json_pack ("{s:s+}", "error",
                      "abandoned: the rerun agent's disks do not match: ", error_message ());
      free (path);
      if (asprintf (&path, "/api/v1/backups/%s/fail", b->backup_id) == -1) {
        path = NULL;
        return AGENT_EXIT_FAILED;
      }
      if (!b->json)
        fprintf (stderr, "strata backup: failing stale job %s: %s\n", b->backup_id,
                 error_message ());
      st = client_call (&b->c, "POST", path, fb, NULL);
      if (st != 200 && st != 409)
        return client_exit_status (st);
    }
  }
  return AGENT_EXIT_CONFLICT;
}

/* Remove from each QCOW2 source the bitmaps strata made (their names are
 * backup ids, "backup-...") that belong to no backup the hub knows as
 * running, finishing or completed, in any context: those of runs killed
 * before they could fail their job, whose job the hub failed since (its
 * lease lapsed), or of backups deleted since.  Bitmaps of other names are
 * never touched, nor this job's.  Only a warning when it cannot be done:
 * a leftover bitmap costs the source some space, not data. */
static void
remove_orphan_bitmaps (struct backup *b)
{
  for (int i = 0; i < b->n; i++) {
    CLEANUP_STRV char **names = NULL;
    CLEANUP_JSON json_t *body = NULL, *resp = NULL;
    json_t *ids = json_array (), *v;
    size_t k;
    int st;

    body = json_pack ("{s:o}", "change_ids", ids);
    if (body == NULL || engine_source_bitmaps (b->disks[i].source, &names) == -1) {
      fprintf (stderr, "strata backup: disk %d: warning: listing its bitmaps: %s\n", i,
               error_message ());
      continue;
    }
    for (k = 0; names[k]; k++)
      if (strncmp (names[k], AGENT_BITMAP_PREFIX, strlen (AGENT_BITMAP_PREFIX)) == 0 &&
          strcmp (names[k], b->backup_id) != 0 && json_array_size (ids) < 1024)
        json_array_append_new (ids, json_string (names[k]));
    if (json_array_size (ids) == 0)
      continue;
    st = client_call (&b->c, "POST", "/api/v1/backups/changeids", body, &resp);
    if (st != 200 || !json_is_array (json_object_get (resp, "unknown"))) {
      fprintf (stderr, "strata backup: disk %d: warning: the hub could not say which of "
               "its bitmaps are still in use (%s); none removed\n", i,
               st == 200 ? "no answer" : error_message ());
      continue;
    }
    json_array_foreach (json_object_get (resp, "unknown"), k, v) {
      const char *name = json_string_value (v);
      bool asked = false;
      /* Only a name this run asked about, whatever the answer says. */
      for (size_t j = 0; name && j < json_array_size (ids); j++)
        asked |= strcmp (json_string_value (json_array_get (ids, j)), name) == 0;
      if (!asked)
        continue;
      if (engine_source_bitmap_remove (b->disks[i].source, name) == -1)
        fprintf (stderr, "strata backup: disk %d: warning: %s\n", i, error_message ());
      else
        fprintf (stderr, "strata backup: disk %d: removed bitmap %s, of no backup the hub "
                 "knows\n", i, name);
    }
  }
}

/* PUT a map's block part to .../disks/N/<what>, written to an unlinked
 * temporary file ($TMPDIR or /var/tmp) and streamed from it.  Returns the
 * HTTP status, or -1 with the error set. */
static int
put_part (struct backup *b, int disk_index, const struct mf_map *m, const char *what,
          json_t **resp)
{
  const char *tmpdir = getenv ("TMPDIR");
  CLEANUP_FREE char *tmpl = NULL, *path = NULL;
  CLEANUP_FD int fd = -1;

  if (resp)
    *resp = NULL;
  if (tmpdir == NULL || *tmpdir == '\0')
    tmpdir = "/var/tmp";
  if (asprintf (&tmpl, "%s/strata-part.XXXXXX", tmpdir) == -1 ||
      asprintf (&path, "/api/v1/backups/%s/disks/%d/%s", b->backup_id, disk_index,
                what) == -1) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "%s", what);
    return -1;
  }
  fd = mkostemp (tmpl, O_CLOEXEC);
  if (fd == -1) {
    error_set_errno (ERR_INTERNAL, errno, "a temporary file in %s", tmpdir);
    return -1;
  }
  unlink (tmpl);
  if (mf_map_write_part (m, fd) == -1)
    return -1;
  return client_put_file (&b->c, path, fd, resp);
}

/* The disk's block hashes to the hub, before its completion.  Not storing
 * them loses no data: the hub keeps a manifest without hashes. */
static void
upload_hashes (struct backup *b, struct engine_session_disk *sd)
{
  int st;

  if (sd->d.hashes == NULL || b->no_manifests)
    return;
  st = put_part (b, sd->disk_index, sd->d.hashes, "manifest", NULL);
  if (st == 204 || st == 200)
    return;
  if (st == 404 || st == 405) {
    if (!atomic_exchange (&b->no_manifests, true))
      fprintf (stderr, "strata backup: warning: the hub does not take block hashes "
               "(an older hub?); backing up without them\n");
    return;
  }
  fprintf (stderr, "strata backup: disk %d: warning: the block hashes were not stored: %s\n",
           sd->disk_index, error_message ());
}

/* Session callback: the audit's observed blocks to the hub, which compares
 * them with the point's manifests and answers what it found. */
static int
on_audit (struct engine_session *s, struct engine_session_disk *sd)
{
  struct backup *b = s->opaque;
  json_t *resp = NULL;
  int st;

  st = put_part (b, sd->disk_index, sd->audit, "audit", &resp);
  if (st == 404 || st == 405) {
    json_decref (resp);
    error_set (ERR_UNAVAILABLE, "the hub does not take audits (an older hub?)");
    return -1;
  }
  if (st != 200) {
    json_decref (resp);
    return -1;
  }
  if (!json_is_integer (json_object_get (resp, "checked")) ||
      !json_is_integer (json_object_get (resp, "bad"))) {
    json_decref (resp);
    error_set (ERR_INTERNAL, "the hub's answer to the audit has no checked and bad counts");
    return -1;
  }
  b->disks[sd->disk_index].audit = resp;
  return 0;
}

/* Session callback: POST .../complete for a copied, flushed disk. */
static int
on_complete (struct engine_session *s, struct engine_session_disk *sd)
{
  struct backup *b = s->opaque;
  CLEANUP_JSON json_t *body = NULL, *resp = NULL;
  CLEANUP_FREE char *path = NULL;
  enum job_status job_status;
  int st;

  upload_hashes (b, sd);

  body = json_pack ("{s:i,s:I,s:I}", "disk_id", sd->disk_index,
                    "bytes_transferred", (json_int_t) sd->result.bytes_written,
                    "bytes_zeroed", (json_int_t) sd->result.bytes_zero);
  if (sd->result.change_id)
    json_object_set_new (body, "change_id", json_string (sd->result.change_id));
  if (sd->result.full_reason)
    json_object_set_new (body, "full_reason", json_string (sd->result.full_reason));
  if (asprintf (&path, "/api/v1/backups/%s/complete", b->backup_id) == -1) {
    path = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "complete");
    return -1;
  }
  st = client_call (&b->c, "POST", path, body, &resp);
  if (st != 200) {
    if (st == -1)
      b->hub_gone = true;
    return -1;
  }
  if (JWORD (resp, "job_status", job_status_parse, &job_status) == -1)
    return -1;
  if (job_status == JOB_COMPLETED)
    b->job_completed = true;
  return 0;
}

/* Session callback: a disk's line on the progress display. */
static void
on_disk_done (struct engine_session *s, struct engine_session_disk *sd)
{
  struct backup *b = s->opaque;
  struct progress_row *row = &b->rows[sd->disk_index];
  const struct engine_disk_result *r = &sd->result;
  char w[32], z[32];

  if (sd->completed) {
    progress_human (w, sizeof w, r->bytes_written);
    progress_human (z, sizeof z, r->bytes_zero);
    snprintf (row->summary, sizeof row->summary,
              "%s, %s written, %s zeroed, %.1f s%s%s%s", backup_type_name (r->mode), w, z,
              r->seconds,
              r->full_reason ? " (" : "", r->full_reason ? r->full_reason : "",
              r->full_reason ? ")" : "");
  }
  else
    snprintf (row->summary, sizeof row->summary, "failed: %s",
              sd->error ? sd->error : "unknown error");
  progress_row_done (b->pd, sd->disk_index);
}

/* Fail the job at the hub: the bitmaps go, unless the hub could not be
 * told (then the job may be resumed by a rerun, and the disks it recorded
 * keep theirs). */
static enum engine_verdict
fail_at_hub (struct backup *b, const char *why)
{
  CLEANUP_JSON json_t *fb = NULL;
  CLEANUP_FREE char *path = NULL;
  int st;

  free (b->why);
  b->why = strdup (why);
  fb = json_pack ("{s:s+}", "error", "agent: ", why);
  if (asprintf (&path, "/api/v1/backups/%s/fail", b->backup_id) == -1)
    path = NULL;
  st = path ? client_call (&b->c, "POST", path, fb, NULL) : -1;
  if (st == -1)
    b->hub_gone = true;
  return b->hub_gone ? ENGINE_KEEP_COMPLETED : ENGINE_ABORT;
}

/* Session callback: every disk is recorded.  An agent's job is completed
 * by its last disk at the hub. */
static enum engine_verdict
on_all_completed (struct engine_session *s)
{
  struct backup *b = s->opaque;

  if (b->job_completed)
    return ENGINE_COMMIT;
  return fail_at_hub (b, "the hub did not complete the job");
}

/* Session callback: a disk failed, or a signal stopped the copies. */
static enum engine_verdict
on_fail (struct engine_session *s, int disk_index, const char *reason)
{
  struct backup *b = s->opaque;
  CLEANUP_FREE char *why = NULL;

  /* Stopped after the hub completed the job: it is complete. */
  if (b->job_completed)
    return ENGINE_COMMIT;
  if (disk_index >= 0 && asprintf (&why, "disk %d: %s", disk_index, reason) == -1)
    why = NULL;
  return fail_at_hub (b, why ? why : reason);
}

static void
on_warn (struct engine_session *s, struct engine_session_disk *sd, const char *msg)
{
  (void) s;
  fprintf (stderr, "strata backup: disk %d: warning: %s\n", sd->disk_index, msg);
}

static const struct engine_session_ops agent_session_ops = {
  .complete_disk = on_complete,
  .audit_disk = on_audit,
  .disk_done = on_disk_done,
  .all_completed = on_all_completed,
  .fail = on_fail,
  .warn = on_warn,
};

static void *
signal_watch (void *opaque)
{
  struct backup *b = opaque;
  sigset_t set;
  int sig;

  sigemptyset (&set);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGUSR2);
  for (;;) {
    if (sigwait (&set, &sig) != 0 || sig == SIGUSR2)
      return NULL;
    b->signal = sig;
    engine_session_stop (&b->s, "interrupted");
  }
}

static void
print_json (struct backup *b, const char *status, const char *error)
{
  CLEANUP_JSON json_t *o = json_object (), *arr = json_array ();
  CLEANUP_FREE char *s = NULL;
  int i;

  for (i = 0; i < b->n; i++) {
    struct bdisk *d = &b->disks[i];
    static const struct engine_session_disk none;
    const struct engine_session_disk *sd = b->sdisks ? &b->sdisks[i] : &none;
    const struct engine_disk_result *r = &sd->result;
    const char *reason = r->full_reason ? r->full_reason : d->hub_full_reason;
    json_array_append_new (arr, json_pack (
      "{s:i,s:s,s:o,s:s,s:o,s:o,s:I,s:I,s:I,s:f,s:o,s:o}",
      "disk_index", i, "source", d->source,
      "target", d->target ? json_string (d->target) : json_null (),
      "status", disk_status_name (sd->completed ? DISK_COMPLETED : DISK_FAILED),
      "mode", r->copied ? json_string (backup_type_name (r->mode)) : json_null (),
      "change_id", r->change_id ? json_string (r->change_id) : json_null (),
      "bytes_read", (json_int_t) r->bytes_read,
      "bytes_written", (json_int_t) r->bytes_written,
      "bytes_zero", (json_int_t) r->bytes_zero,
      "seconds", r->seconds,
      "full_reason", reason ? json_string (reason) : json_null (),
      "error", sd->error ? json_string (sd->error) : json_null ()));
    if (b->audit_percent > 0)
      json_object_set (json_array_get (arr, i), "audit",
                       d->audit ? d->audit : json_null ());
  }
  json_object_set_new (o, "backup_id", b->backup_id ? json_string (b->backup_id) : json_null ());
  json_object_set_new (o, "status", json_string (status));
  json_object_set_new (o, "resumed", json_boolean (b->resumed));
  json_object_set_new (o, "error", error ? json_string (error) : json_null ());
  if (b->domain)
    json_object_set_new (o, "quiesce", b->quiesce_note ? json_string (b->quiesce_note)
                         : json_string (b->quiesce ? "quiesced" : "not asked"));
  json_object_set (o, "disks", arr);
  s = json_dumps (o, STRATA_JSON_PRETTY);
  if (s)
    printf ("%s\n", s);
  fflush (stdout);
}

int
agent_backup_main (int argc, char **argv)
{
  static const struct option opts[] = {
    CLIENT_LONG_OPTIONS,
    { "vm", required_argument, NULL, 'v' },
    { "repository", required_argument, NULL, 'r' },
    { "type", required_argument, NULL, 't' },
    { "dirty-bitmap", required_argument, NULL, 'b' },
    { "change-id", required_argument, NULL, 'c' },
    { "tls-psk-file", required_argument, NULL, 'k' },
    { "parallel", required_argument, NULL, 'p' },
    { "json", no_argument, NULL, 'j' },
    { "libvirt", required_argument, NULL, 'L' },
    { "connect", required_argument, NULL, 'U' },
    { "quiesce", no_argument, NULL, 'Q' },
    { "audit", optional_argument, NULL, 'A' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct backup b = { .repo = "default", .type_auto = true, .parallel = 2 };
  struct client_opts co = { 0 };
  const char *type = "auto";
  enum engine_verdict verdict;
  struct progress_reporter *reporter = NULL;
  pthread_t sigthread;
  sigset_t set;
  int c, i, rc = AGENT_EXIT_FAILED;
  char *end;

  signal (SIGPIPE, SIG_IGN);
  optind = 1;
  while ((c = getopt_long (argc, argv, "h", opts, NULL)) != -1) {
    if (client_opt (&co, c, optarg))
      continue;
    switch (c) {
    case 'v': b.vm = optarg; break;
    case 'r': b.repo = optarg; break;
    case 't': type = optarg; break;
    case 'b': b.bitmap = optarg; break;
    case 'c': b.change_id = optarg; break;
    case 'k': b.psk = optarg; break;
    case 'j': b.json = true; break;
    case 'L': b.domain = optarg; break;
    case 'U': b.uri = optarg; break;
    case 'Q': b.quiesce = true; break;
    case 'A':
      b.audit_percent = 100;
      if (optarg) {
        errno = 0;
        b.audit_percent = strtol (optarg, &end, 10);
        if (errno || *end || end == optarg || b.audit_percent < 1 || b.audit_percent > 100) {
          fprintf (stderr, "strata backup: --audit=%s: a percent from 1 to 100\n", optarg);
          return AGENT_EXIT_USAGE;
        }
      }
      break;
    case 'p':
      errno = 0;
      b.parallel = strtol (optarg, &end, 10);
      if (errno || *end || b.parallel < 1 || b.parallel > 64) {
        fprintf (stderr, "strata backup: --parallel %s: a number from 1 to 64\n", optarg);
        return AGENT_EXIT_USAGE;
      }
      break;
    case 'h': usage (stdout); return AGENT_EXIT_OK;
    default: usage (stderr); return AGENT_EXIT_USAGE;
    }
  }
  if (b.vm == NULL && b.domain)
    b.vm = b.domain;
  if (b.vm == NULL || *b.vm == '\0') {
    fprintf (stderr, "strata backup: --vm NAME is required\n");
    return AGENT_EXIT_USAGE;
  }
  b.type_auto = strcmp (type, "auto") == 0;
  if (!b.type_auto && backup_type_parse (type, &b.type) == -1) {
    fprintf (stderr, "strata backup: --type %s: auto, full or incremental\n", type);
    return AGENT_EXIT_USAGE;
  }
  if ((b.uri || b.quiesce) && b.domain == NULL) {
    fprintf (stderr, "strata backup: --connect and --quiesce go with --libvirt\n");
    return AGENT_EXIT_USAGE;
  }
  if (b.domain && optind < argc) {
    fprintf (stderr, "strata backup: --libvirt takes the domain's disks; no DISK with it\n");
    return AGENT_EXIT_USAGE;
  }
  if (b.domain == NULL && optind >= argc) {
    fprintf (stderr, "strata backup: no DISK given\n");
    return AGENT_EXIT_USAGE;
  }
  if (argc - optind > 256) {
    fprintf (stderr, "strata backup: at most 256 disks\n");
    return AGENT_EXIT_USAGE;
  }
  if (client_init (&b.c, &co) == -1) {
    fprintf (stderr, "strata backup: %s\n", error_message ());
    return AGENT_EXIT_USAGE;
  }

  b.n = argc - optind;
  if (b.domain) {
    CLEANUP_FREE char *skipped = NULL;
    size_t nd;
    b.vd = virt_open (b.uri, b.domain, &skipped);
    if (b.vd == NULL) {
      fprintf (stderr, "strata backup: %s\n", error_message ());
      rc = error_category () == ERR_UNAVAILABLE ? AGENT_EXIT_FAILED : AGENT_EXIT_USAGE;
      goto out;
    }
    if (skipped && !b.json)
      fprintf (stderr, "strata backup: domain %s: skipped %s\n", b.domain, skipped);
    virt_disks (b.vd, &nd);
    b.n = (int) nd;
  }
  b.disks = calloc (b.n, sizeof *b.disks);
  b.rows = calloc (b.n, sizeof *b.rows);
  if (b.disks == NULL || b.rows == NULL) {
    fprintf (stderr, "strata backup: out of memory\n");
    goto out;
  }
  for (i = 0; i < b.n; i++) {
    struct bdisk *d = &b.disks[i];
    d->index = i;
    snprintf (b.rows[i].label, sizeof b.rows[i].label, "disk %d", i);
    if (b.vd) {
      size_t nd;
      struct virt_disk *vdisk = &virt_disks (b.vd, &nd)[i];
      d->source = vdisk->path;
      d->target = vdisk->target;
      d->size = vdisk->size;
      snprintf (b.rows[i].label, sizeof b.rows[i].label, "disk %d (%s)", i, vdisk->target);
      continue;
    }
    d->source = argv[optind + i];
    if (engine_source_size (d->source, ENGINE_CONNECT_TIMEOUT, &d->size) == -1) {
      fprintf (stderr, "strata backup: disk %d: %s\n", i, error_message ());
      rc = AGENT_EXIT_USAGE;
      goto out;
    }
    if (d->size <= 0 || d->size % 512) {
      fprintf (stderr, "strata backup: disk %d: %s is %lld bytes, not a positive multiple of 512\n",
               i, d->source, (long long) d->size);
      rc = AGENT_EXIT_USAGE;
      goto out;
    }
  }
  rc = start_job (&b);
  if (rc != AGENT_EXIT_OK) {
    fprintf (stderr, "strata backup: %s\n", error_message ());
    if (b.json)
      print_json (&b, "not started", error_message ());
    goto out;
  }
  /* Signals go to the watcher thread only (started below; one that comes
   * before waits for it): every thread from here on blocks them. */
  sigemptyset (&set);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGUSR2);
  pthread_sigmask (SIG_BLOCK, &set, NULL);
  /* From here on the job's lease is renewed every 2 s while this lives. */
  reporter = progress_report_start (&b.c, b.backup_id, b.rows, b.n);
  if (b.vd == NULL)
    remove_orphan_bitmaps (&b);

  b.sdisks = calloc (b.n > 0 ? (size_t) b.n : 1, sizeof *b.sdisks);
  if (b.sdisks == NULL) {
    fprintf (stderr, "strata backup: out of memory\n");
    rc = AGENT_EXIT_FAILED;
    goto out;
  }
  for (i = 0; i < b.n; i++) {
    struct bdisk *d = &b.disks[i];
    struct engine_session_disk *sd = &b.sdisks[i];

    sd->disk_index = i;
    sd->progress = &b.rows[i].p;
    sd->done_before = d->skip;
    sd->d = (struct engine_backup_disk) {
      .source = d->source, .target_uri = d->target_uri,
      .tls_psk_file = b.psk ? b.psk : b.key_file,
      .backup_id = b.backup_id, .previous_change_id = d->prev,
      .superseded_change_id = d->superseded,
      .source_bitmap = b.bitmap, .source_change_id = b.change_id,
      /* A resumed target may hold an earlier attempt's data: zero holes. */
      .target_has_backing = d->has_backing || b.resumed,
    };
    /* The hashes and the audit are this run's: a disk completed by an
     * earlier attempt has neither. */
    if (!d->skip) {
      /* STRATA_COPY_HASH=0 copies without hashing: only to measure what
       * hashing costs (make bench); the hub then keeps facts only. */
      const char *h = getenv ("STRATA_COPY_HASH");
      bool hash = h == NULL || strcmp (h, "0") != 0;
      d->hashes = hash ? mf_map_new (d->size, NULL) : NULL;
      if (hash && d->hashes == NULL)
        fprintf (stderr, "strata backup: disk %d: warning: no block hashes: %s\n", i,
                 error_message ());
      sd->d.hashes = d->hashes;
      sd->audit_percent = b.audit_percent;
      sd->audit_seed = (uint64_t) time (NULL) ^ ((uint64_t) getpid () << 32) ^ (uint64_t) i;
    }
    /* Completed by the attempt this run resumed: its bitmap is ours. */
    if (d->skip)
      sd->result.change_id = strdup (d->recorded_change_id ? d->recorded_change_id
                                                           : b.backup_id);
  }
  engine_session_init (&b.s, &agent_session_ops, &b, b.sdisks, b.n, b.parallel);
  if (b.vd && virt_session_begin (b.vd, &b.s, b.backup_id, b.quiesce, &b.quiesce_note) == -1) {
    char why[1200];
    snprintf (why, sizeof why, "%s", error_message ());
    fail_at_hub (&b, why);
    fprintf (stderr, "strata backup: backup %s failed: %s\n", b.backup_id, why);
    if (b.json)
      print_json (&b, job_status_name (JOB_FAILED), why);
    rc = b.hub_gone ? AGENT_EXIT_HUB : AGENT_EXIT_FAILED;
    engine_session_clear (&b.s);
    goto out;
  }
  if (b.quiesce_note && !b.json)
    fprintf (stderr, "strata backup: domain %s: %s\n", b.domain, b.quiesce_note);

  pthread_create (&sigthread, NULL, signal_watch, &b);

  b.pd = progress_start (b.rows, b.n, b.json);
  verdict = engine_session_run (&b.s);
  progress_report_stop (reporter);
  reporter = NULL;
  progress_stop (b.pd);
  pthread_kill (sigthread, SIGUSR2);
  pthread_join (sigthread, NULL);

  if (verdict == ENGINE_COMMIT) {
    bool missed = false;
    if (b.json)
      print_json (&b, job_status_name (JOB_COMPLETED), NULL);
    else
      printf ("backup %s completed\n", b.backup_id);
    for (i = 0; i < b.n; i++) {
      json_t *a = b.disks[i].audit;
      json_int_t bad = json_integer_value (json_object_get (a, "bad"));
      if (a == NULL)
        continue;
      if (!b.json)
        printf ("disk %d: audit checked %" JSON_INTEGER_FORMAT " blocks, %"
                JSON_INTEGER_FORMAT " differ\n", i,
                json_integer_value (json_object_get (a, "checked")), bad);
      if (bad > 0) {
        missed = true;
        fprintf (stderr, "strata backup: disk %d: change tracking missed %" JSON_INTEGER_FORMAT
                 " blocks (first at offset %" JSON_INTEGER_FORMAT ")\n", i, bad,
                 json_integer_value (json_object_get (a, "first_bad_offset")));
      }
    }
    rc = missed ? AGENT_EXIT_FAILED : AGENT_EXIT_OK;
  }
  else {
    const char *why = b.why ? b.why : "the hub did not complete the job";

    fprintf (stderr, "strata backup: backup %s failed: %s\n", b.backup_id, why);
    if (b.hub_gone)
      fprintf (stderr, "strata backup: the hub could not be told; rerun strata backup "
               "to resume the job\n");
    if (b.json)
      print_json (&b, job_status_name (JOB_FAILED), why);
    rc = b.hub_gone ? AGENT_EXIT_HUB : AGENT_EXIT_FAILED;
  }
  engine_session_clear (&b.s);

 out:
  progress_report_stop (reporter);
  virt_close (b.vd);
  free (b.quiesce_note);
  for (i = 0; b.disks && i < b.n; i++) {
    free (b.disks[i].recorded_change_id);
    free (b.disks[i].target_uri);
    free (b.disks[i].prev);
    free (b.disks[i].hub_full_reason);
    free (b.disks[i].superseded);
    mf_map_free (b.disks[i].hashes);
    json_decref (b.disks[i].audit);
  }
  client_psk_file_remove (&b.key_file);
  free (b.sdisks);
  free (b.why);
  free (b.disks);
  free (b.rows);
  free (b.backup_id);
  client_clear (&b.c);
  return rc;
}
