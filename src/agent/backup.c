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
 * 3. The disks copy in parallel (at most --parallel at a time).  Each is
 *    flushed by the engine and then completed at the hub with its change id.
 * 4. Only when the hub reports the job completed are the older bitmaps
 *    removed (engine_backup_disk_commit).  On any error, a signal or a
 *    refused completion, the job is failed at the hub and every disk's new
 *    bitmap removed, so the previous chain stays usable.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/agent-int.h"
#include "util/cleanup.h"
#include "util/error.h"

struct bdisk {
  int index;
  const char *source;
  int64_t size;
  bool skip;                  /* completed before (a resumed job) */
  char *target_uri, *prev, *hub_full_reason;
  char *superseded;           /* the context's latest change id before this job */
  bool has_backing;
  struct engine_backup_disk d;
  struct engine_disk_result r;
  bool copied, completed;
  char *error;
};

struct backup {
  struct client c;
  const char *vm, *repo, *type, *psk, *bitmap, *change_id;
  bool json, resumed;
  int parallel;
  char *backup_id;
  struct bdisk *disks;
  int n;
  struct progress_row *rows;
  struct progress_display *pd;

  pthread_mutex_t lock;
  int next;
  bool job_completed;
  bool hub_gone;              /* a call to the hub got no answer */
  _Atomic bool failed;
  _Atomic int signal;
};

static void
usage (FILE *fp)
{
  fprintf (fp,
"Usage: strata backup [--hub URL] [--token-file F] --vm NAME [--repository ID]\n"
"                     [--type auto|full|incremental] [--dirty-bitmap NAME]\n"
"                     [--change-id ID] [--tls-psk-file F] [--parallel N]\n"
"                     [--json] DISK...\n"
"Back up the disks of a VM into the hub.  Each DISK, in order, is disk 0, 1, ...:\n"
"  a QCOW2 image (strata keeps a persistent dirty bitmap in it: incrementals copy\n"
"  only what changed), a raw image or block device (always copied in full), or\n"
"  an NBD URI (nbd://, nbd+unix://, nbds://).\n"
"\n"
"  --hub URL            the hub (default $STRATA_HUB or http://127.0.0.1:8082)\n"
"  --token-file F       API token (first line of F) for a hub with --api-token-file\n"
"  --vm NAME            the VM (required)\n"
"  --repository ID      the repository (default: default)\n"
"  --type T             auto (default: incremental where the VM has a completed\n"
"                       chain, full where not), full or incremental\n"
"  --dirty-bitmap NAME  NBD URI disks: the bitmap the export carries\n"
"                       (meta context qemu:dirty-bitmap:NAME) for an incremental\n"
"  --change-id ID       NBD URI disks: the change id to record (e.g. the new\n"
"                       libvirt checkpoint)\n"
"  --tls-psk-file F     PSK file for the hub's nbds:// targets\n"
"  --parallel N         disks copied at once (default 2)\n"
"  --json               print a JSON summary on stdout instead of progress\n"
"\n"
"Exit status: 0 backed up; 1 the backup failed (the job is failed at the hub,\n"
"the previous chain stays usable); 2 usage error or unusable DISK (nothing is\n"
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

static void
cancel_all (struct backup *b)
{
  int i;
  for (i = 0; i < b->n; i++)
    b->rows[i].p.cancel = true;
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
  if ((int) json_array_size (disks) != b->n) {
    error_set (ERR_CONFLICT, "job %s has %zu disks, not %d", b->backup_id,
               json_array_size (disks), b->n);
    return -1;
  }
  json_array_foreach (disks, i, jd) {
    json_int_t idx = json_integer_value (json_object_get (jd, "disk_index"));
    struct bdisk *d;
    if (idx < 0 || idx >= b->n) {
      error_set (ERR_CONFLICT, "job %s has a disk %lld", b->backup_id, (long long) idx);
      return -1;
    }
    d = &b->disks[idx];
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
    d->target_uri = jdup (jd, "nbd_uri");
    d->prev = jdup (jd, "previous_change_id");
    d->hub_full_reason = jdup (jd, "full_reason");
    d->skip = jstr (jd, "status") && strcmp (jstr (jd, "status"), "completed") == 0;
    d->completed = d->skip;
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
  const char *started, *drv, *created;
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
  drv = jstr (j, "driver");
  created = jstr (j, "created_at");
  /* Same format (UTC, fixed width): the strings order as the times. */
  if (drv && strcmp (drv, "agent") == 0 && created && strcmp (created, started) < 0) {
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

/* Start the job (or resume a stale one).  Returns an exit status. */
static int
start_job (struct backup *b)
{
  CLEANUP_JSON json_t *body = NULL, *resp = NULL, *disks = NULL;
  const char *type = b->type;
  int i, st, attempt;

  /* auto: incremental where the context has a completed chain (the hub
   * takes a disk without one in full), full where it has none, so that
   * the job is recorded for what it is. */
  if (!read_superseded (b) && strcmp (type, "auto") == 0)
    type = "full";
  else if (strcmp (type, "auto") == 0)
    type = "incremental";

  disks = json_array ();
  for (i = 0; i < b->n; i++)
    json_array_append_new (disks, json_pack ("{s:i,s:I}", "disk_index", i,
                                             "size_bytes", (json_int_t) b->disks[i].size));
  body = json_pack ("{s:s,s:s,s:s,s:O}", "vm_name", b->vm, "repository_id", b->repo,
                    "backup_type", type, "disks", disks);
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

static int
complete_disk (struct backup *b, struct bdisk *d)
{
  CLEANUP_JSON json_t *body = NULL, *resp = NULL;
  CLEANUP_FREE char *path = NULL;
  int st;

  body = json_pack ("{s:i,s:I}", "disk_id", d->index,
                    "bytes_transferred", (json_int_t) d->r.bytes_written);
  if (d->r.change_id)
    json_object_set_new (body, "change_id", json_string (d->r.change_id));
  if (d->r.full_reason)
    json_object_set_new (body, "full_reason", json_string (d->r.full_reason));
  if (asprintf (&path, "/api/v1/backups/%s/complete", b->backup_id) == -1) {
    path = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "complete");
    return -1;
  }
  st = client_call (&b->c, "POST", path, body, &resp);
  if (st != 200) {
    if (st == -1)
      b->hub_gone = true;
    error_prefix ("completing disk %d", d->index);
    return -1;
  }
  if (jstr (resp, "job_status") && strcmp (jstr (resp, "job_status"), "completed") == 0) {
    pthread_mutex_lock (&b->lock);
    b->job_completed = true;
    pthread_mutex_unlock (&b->lock);
  }
  return 0;
}

static void *
disk_worker (void *opaque)
{
  struct backup *b = opaque;

  for (;;) {
    struct bdisk *d;
    struct progress_row *row;
    int i;

    pthread_mutex_lock (&b->lock);
    while (b->next < b->n && b->disks[b->next].skip)
      b->next++;
    i = b->next < b->n ? b->next++ : -1;
    pthread_mutex_unlock (&b->lock);
    if (i < 0)
      return NULL;
    d = &b->disks[i];
    row = &b->rows[i];
    if (b->failed) {
      d->error = strdup ("not started: another disk failed");
      continue;
    }
    d->d = (struct engine_backup_disk) {
      .source = d->source, .target_uri = d->target_uri, .tls_psk_file = b->psk,
      .backup_id = b->backup_id, .previous_change_id = d->prev,
      .superseded_change_id = d->superseded,
      .source_bitmap = b->bitmap, .source_change_id = b->change_id,
      /* A resumed target may hold an earlier attempt's data: zero holes. */
      .target_has_backing = d->has_backing || b->resumed,
    };
    if (engine_backup_disk (&d->d, &row->p, &d->r) == 0) {
      char w[32], z[32];
      d->copied = true;
      if (complete_disk (b, d) == 0) {
        d->completed = true;
        progress_human (w, sizeof w, d->r.bytes_written);
        progress_human (z, sizeof z, d->r.bytes_zero);
        snprintf (row->summary, sizeof row->summary,
                  "%s, %s written, %s zeroed, %.1f s%s%s%s", d->r.mode, w, z, d->r.seconds,
                  d->r.full_reason ? " (" : "",
                  d->r.full_reason ? d->r.full_reason : "",
                  d->r.full_reason ? ")" : "");
        progress_row_done (b->pd, i);
        continue;
      }
    }
    error_prefix ("disk %d", i);
    d->error = strdup (error_message ());
    snprintf (row->summary, sizeof row->summary, "failed: %s", error_message ());
    progress_row_done (b->pd, i);
    b->failed = true;
    cancel_all (b);
  }
}

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
    b->failed = true;
    cancel_all (b);
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
    const char *reason = d->r.full_reason ? d->r.full_reason : d->hub_full_reason;
    json_array_append_new (arr, json_pack (
      "{s:i,s:s,s:s,s:o,s:o,s:I,s:I,s:I,s:f,s:o,s:o}",
      "disk_index", i, "source", d->source,
      "status", d->completed ? "completed" : "failed",
      "mode", d->r.mode ? json_string (d->r.mode) : json_null (),
      "change_id", d->r.change_id ? json_string (d->r.change_id) : json_null (),
      "bytes_read", (json_int_t) d->r.bytes_read,
      "bytes_written", (json_int_t) d->r.bytes_written,
      "bytes_zero", (json_int_t) d->r.bytes_zero,
      "seconds", d->r.seconds,
      "full_reason", reason ? json_string (reason) : json_null (),
      "error", d->error ? json_string (d->error) : json_null ()));
  }
  json_object_set_new (o, "backup_id", b->backup_id ? json_string (b->backup_id) : json_null ());
  json_object_set_new (o, "status", json_string (status));
  json_object_set_new (o, "resumed", json_boolean (b->resumed));
  json_object_set_new (o, "error", error ? json_string (error) : json_null ());
  json_object_set (o, "disks", arr);
  s = json_dumps (o, JSON_INDENT (2));
  if (s)
    printf ("%s\n", s);
  fflush (stdout);
}

int
agent_backup_main (int argc, char **argv)
{
  static const struct option opts[] = {
    { "hub", required_argument, NULL, 'H' },
    { "token-file", required_argument, NULL, 'T' },
    { "vm", required_argument, NULL, 'v' },
    { "repository", required_argument, NULL, 'r' },
    { "type", required_argument, NULL, 't' },
    { "dirty-bitmap", required_argument, NULL, 'b' },
    { "change-id", required_argument, NULL, 'c' },
    { "tls-psk-file", required_argument, NULL, 'k' },
    { "parallel", required_argument, NULL, 'p' },
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct backup b = { .repo = "default", .type = "auto", .parallel = 2 };
  const char *hub = NULL, *token = NULL;
  CLEANUP_FREE char *first_error = NULL;
  pthread_t *threads = NULL, sigthread;
  sigset_t set;
  int c, i, rc = AGENT_EXIT_FAILED, nthreads;
  char *end;

  signal (SIGPIPE, SIG_IGN);
  optind = 1;
  while ((c = getopt_long (argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'H': hub = optarg; break;
    case 'T': token = optarg; break;
    case 'v': b.vm = optarg; break;
    case 'r': b.repo = optarg; break;
    case 't': b.type = optarg; break;
    case 'b': b.bitmap = optarg; break;
    case 'c': b.change_id = optarg; break;
    case 'k': b.psk = optarg; break;
    case 'j': b.json = true; break;
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
  if (b.vm == NULL || *b.vm == '\0') {
    fprintf (stderr, "strata backup: --vm NAME is required\n");
    return AGENT_EXIT_USAGE;
  }
  if (strcmp (b.type, "auto") && strcmp (b.type, "full") && strcmp (b.type, "incremental")) {
    fprintf (stderr, "strata backup: --type %s: auto, full or incremental\n", b.type);
    return AGENT_EXIT_USAGE;
  }
  if (optind >= argc) {
    fprintf (stderr, "strata backup: no DISK given\n");
    return AGENT_EXIT_USAGE;
  }
  if (argc - optind > 256) {
    fprintf (stderr, "strata backup: at most 256 disks\n");
    return AGENT_EXIT_USAGE;
  }
  if (client_init (&b.c, hub, token) == -1) {
    fprintf (stderr, "strata backup: %s\n", error_message ());
    return AGENT_EXIT_USAGE;
  }

  b.n = argc - optind;
  b.disks = calloc (b.n, sizeof *b.disks);
  b.rows = calloc (b.n, sizeof *b.rows);
  if (b.disks == NULL || b.rows == NULL) {
    fprintf (stderr, "strata backup: out of memory\n");
    goto out;
  }
  for (i = 0; i < b.n; i++) {
    struct bdisk *d = &b.disks[i];
    d->index = i;
    d->source = argv[optind + i];
    snprintf (b.rows[i].label, sizeof b.rows[i].label, "disk %d", i);
    if (engine_source_size (d->source, &d->size) == -1) {
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
  pthread_mutex_init (&b.lock, NULL);

  rc = start_job (&b);
  if (rc != AGENT_EXIT_OK) {
    fprintf (stderr, "strata backup: %s\n", error_message ());
    if (b.json)
      print_json (&b, "not started", error_message ());
    goto out;
  }

  /* Signals go to the watcher thread only. */
  sigemptyset (&set);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGUSR2);
  pthread_sigmask (SIG_BLOCK, &set, NULL);
  pthread_create (&sigthread, NULL, signal_watch, &b);

  b.pd = progress_start (b.rows, b.n, b.json);
  nthreads = b.parallel < b.n ? b.parallel : b.n;
  threads = calloc (nthreads, sizeof *threads);
  for (i = 0; threads && i < nthreads; i++)
    if (pthread_create (&threads[i], NULL, disk_worker, &b) != 0)
      break;
  nthreads = threads ? i : 0;
  if (nthreads == 0)
    disk_worker (&b);
  for (i = 0; i < nthreads; i++)
    pthread_join (threads[i], NULL);
  free (threads);
  progress_stop (b.pd);
  pthread_kill (sigthread, SIGUSR2);
  pthread_join (sigthread, NULL);

  for (i = 0; i < b.n && first_error == NULL; i++)
    if (b.disks[i].error)
      first_error = strdup (b.disks[i].error);
  if (b.signal && first_error == NULL)
    first_error = strdup ("interrupted");

  if (!b.failed && b.job_completed) {
    for (i = 0; i < b.n; i++) {
      struct bdisk *d = &b.disks[i];
      if (d->skip) {
        /* Completed by the attempt this run resumed: its bitmap is ours. */
        d->d = (struct engine_backup_disk) { .source = d->source, .backup_id = b.backup_id,
                                             .previous_change_id = d->prev,
                                             .superseded_change_id = d->superseded };
        free (d->r.change_id);
        d->r.change_id = strdup (b.backup_id);
      }
      if ((d->copied || d->skip) && d->r.change_id &&
          engine_backup_disk_commit (&d->d, &d->r) == -1)
        fprintf (stderr, "strata backup: disk %d: warning: %s\n", i, error_message ());
    }
    if (b.json)
      print_json (&b, "completed", NULL);
    else
      printf ("backup %s completed\n", b.backup_id);
    rc = AGENT_EXIT_OK;
  }
  else {
    CLEANUP_JSON json_t *fb = NULL;
    CLEANUP_FREE char *path = NULL;
    const char *why = first_error ? first_error : "the hub did not complete the job";
    int st;

    fb = json_pack ("{s:s+}", "error", "agent: ", why);
    if (asprintf (&path, "/api/v1/backups/%s/fail", b.backup_id) == -1)
      path = NULL;
    st = path ? client_call (&b.c, "POST", path, fb, NULL) : -1;
    if (st == -1)
      b.hub_gone = true;
    /* The job failed: the chain continues from the older bitmaps, so the
     * new ones go.  When the hub could not be told, the job may be resumed
     * by a rerun: disks it recorded completed keep theirs. */
    for (i = 0; i < b.n; i++) {
      struct bdisk *d = &b.disks[i];
      if (b.hub_gone && d->completed)
        continue;
      if (d->skip)
        d->d = (struct engine_backup_disk) { .source = d->source, .backup_id = b.backup_id,
                                             .previous_change_id = d->prev };
      if (d->d.source)
        engine_backup_disk_abort (&d->d, &d->r);
    }
    fprintf (stderr, "strata backup: backup %s failed: %s\n", b.backup_id, why);
    if (b.hub_gone)
      fprintf (stderr, "strata backup: the hub could not be told; rerun strata backup "
               "to resume the job\n");
    if (b.json)
      print_json (&b, "failed", why);
    rc = b.hub_gone ? AGENT_EXIT_HUB : AGENT_EXIT_FAILED;
  }

 out:
  for (i = 0; b.disks && i < b.n; i++) {
    engine_disk_result_clear (&b.disks[i].r);
    free (b.disks[i].target_uri);
    free (b.disks[i].prev);
    free (b.disks[i].hub_full_reason);
    free (b.disks[i].superseded);
    free (b.disks[i].error);
  }
  free (b.disks);
  free (b.rows);
  free (b.backup_id);
  client_clear (&b.c);
  return rc;
}
