/* agent/list.c - the listing commands: `strata vms`, `strata contexts`,
 * `strata backups`, `strata show BACKUP` and `strata jobs`.
 *
 * Each asks the hub (GET, through agent/client.c) and prints either a
 * table for people or, with --json, the hub's own objects (an array, or
 * the object for show) for scripts.  A table is the same on a terminal and
 * in a pipe, columns aligned by their characters (VM names are UTF-8);
 * on a terminal a failed, corrupt or overdue cell is also coloured (never
 * colour alone: the word says it).  Sizes are binary units ("1.5 GiB"),
 * times the local time with the age beside it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/agent-int.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/json.h"
#include "util/state.h"

#define MAX_COLS 12
#define CHAIN_MAX 100000    /* a parent chain longer than this is a loop */

/* ------------------------------------------------------------- table --- */

enum cell_tone { TONE_PLAIN, TONE_BAD, TONE_WARN, TONE_GOOD };

struct cell {
  char *text;
  enum cell_tone tone;
};

struct table {
  int ncols;
  const char *heads[MAX_COLS];
  bool right[MAX_COLS];       /* numbers and sizes align right */
  struct cell *cells;         /* nrows * ncols */
  size_t nrows, cap;
  int col;                    /* the next cell of the last row */
};

/* Columns from "HEAD" or ">HEAD" (aligned right), NULL-terminated. */
static void
table_init (struct table *t, const char *const *heads)
{
  memset (t, 0, sizeof *t);
  for (; *heads && t->ncols < MAX_COLS; heads++, t->ncols++) {
    t->right[t->ncols] = **heads == '>';
    t->heads[t->ncols] = *heads + t->right[t->ncols];
  }
  t->col = t->ncols;
}

static void
table_clear (struct table *t)
{
  for (size_t i = 0; i < t->nrows * t->ncols; i++)
    free (t->cells[i].text);
  free (t->cells);
}

/* Add the next cell (a new row once the last one is full). */
static void
table_add (struct table *t, enum cell_tone tone, const char *fmt, ...)
  __attribute__((format (printf, 3, 4)));

static void
table_add (struct table *t, enum cell_tone tone, const char *fmt, ...)
{
  struct cell *c;
  va_list ap;

  if (t->col == t->ncols) {
    if (t->nrows == t->cap) {
      size_t cap = t->cap ? t->cap * 2 : 16;
      struct cell *nc = realloc (t->cells, cap * t->ncols * sizeof *nc);
      if (nc == NULL)
        return;
      t->cells = nc;
      t->cap = cap;
    }
    memset (&t->cells[t->nrows * t->ncols], 0, t->ncols * sizeof *t->cells);
    t->nrows++;
    t->col = 0;
  }
  c = &t->cells[(t->nrows - 1) * t->ncols + t->col++];
  c->tone = tone;
  va_start (ap, fmt);
  if (vasprintf (&c->text, fmt, ap) == -1)
    c->text = NULL;
  va_end (ap);
}

/* The characters of UTF-8 text (what a terminal shows of a VM name). */
static size_t
text_width (const char *s)
{
  size_t n = 0;
  for (; s && *s; s++)
    n += ((unsigned char) *s & 0xc0) != 0x80;
  return n;
}

static bool
use_colour (void)
{
  const char *term = getenv ("TERM");
  return isatty (STDOUT_FILENO) && getenv ("NO_COLOR") == NULL && term &&
         strcmp (term, "dumb") != 0;
}

static void
table_print (const struct table *t)
{
  static const char *const tones[] = { "", "\033[1;31m", "\033[33m", "\033[32m" };
  size_t width[MAX_COLS];
  bool colour = use_colour ();
  int k;

  for (k = 0; k < t->ncols; k++)
    width[k] = text_width (t->heads[k]);
  for (size_t r = 0; r < t->nrows; r++)
    for (k = 0; k < t->ncols; k++) {
      size_t w = text_width (t->cells[r * t->ncols + k].text);
      if (w > width[k])
        width[k] = w;
    }
  for (size_t r = 0; r <= t->nrows; r++) {
    for (k = 0; k < t->ncols; k++) {
      const struct cell *c = r ? &t->cells[(r - 1) * t->ncols + k] : NULL;
      const char *text = c ? (c->text ? c->text : "") : t->heads[k];
      size_t pad = width[k] - text_width (text);
      bool last = k == t->ncols - 1;
      bool tone = colour && c && c->tone != TONE_PLAIN;

      if (k)
        fputs ("  ", stdout);
      if (t->right[k])
        printf ("%*s", (int) pad, "");
      printf ("%s%s%s", tone ? tones[c->tone] : "", text, tone ? "\033[0m" : "");
      if (!t->right[k] && !last)
        printf ("%*s", (int) pad, "");
    }
    putchar ('\n');
  }
}

/* ---------------------------------------------------------- values --- */

static const char *
jstr (json_t *o, const char *key)
{
  return json_string_value (json_object_get (o, key));
}

static int64_t
jint (json_t *o, const char *key)
{
  return json_integer_value (json_object_get (o, key));
}

/* A hub time (UTC, "YYYY-MM-DDTHH:MM:SS.mmmZ") as seconds, or -1. */
static time_t
parse_time (const char *s)
{
  struct tm tm = { 0 };
  const char *end;

  if (s == NULL || (end = strptime (s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
    return -1;
  return timegm (&tm);
}

/* "2026-12-02 14:05 (3h ago)" in local time, or "-". */
static void
fmt_time (char *buf, size_t len, const char *s, bool with_age)
{
  time_t t = parse_time (s), now = time (NULL);
  struct tm tm;
  char when[32];
  long age;

  if (t == -1 || localtime_r (&t, &tm) == NULL) {
    snprintf (buf, len, "-");
    return;
  }
  strftime (when, sizeof when, "%Y-%m-%d %H:%M", &tm);
  age = (long) difftime (now, t);
  if (!with_age)
    snprintf (buf, len, "%s", when);
  else if (age < 0)
    snprintf (buf, len, "%s (in %ldm)", when, (-age + 59) / 60);
  else if (age < 120)
    snprintf (buf, len, "%s (%lds ago)", when, age);
  else if (age < 2 * 3600)
    snprintf (buf, len, "%s (%ldm ago)", when, age / 60);
  else if (age < 2 * 86400)
    snprintf (buf, len, "%s (%ldh ago)", when, age / 3600);
  else
    snprintf (buf, len, "%s (%ldd ago)", when, age / 86400);
}

static void
fmt_size (char *buf, size_t len, json_t *v)
{
  if (!json_is_integer (v))
    snprintf (buf, len, "-");
  else
    progress_human (buf, len, (double) json_integer_value (v));
}

/* A disk's progress object ({bytes_done, bytes_total, rate_bytes_per_sec}
 * or null) as words: "-" for what is not known. */
struct progress_text {
  char done[32], total[32], pct[8], rate[40], eta[32];
};

static void
fmt_progress (struct progress_text *t, json_t *p)
{
  int64_t done = jint (p, "bytes_done"), total = jint (p, "bytes_total");
  int64_t rate = jint (p, "rate_bytes_per_sec");

  *t = (struct progress_text) { "-", "-", "-", "-", "-" };
  if (!json_is_object (p))
    return;
  progress_human (t->done, sizeof t->done, (double) done);
  progress_human (t->total, sizeof t->total, (double) total);
  progress_human (t->rate, sizeof t->rate - 2, (double) rate);
  strcat (t->rate, "/s");
  if (total > 0)
    snprintf (t->pct, sizeof t->pct, "%d", (int) (done * 100 / total));
  if (rate > 0 && total >= done) {
    int64_t s = (total - done) / rate;
    snprintf (t->eta, sizeof t->eta, "%" PRId64 ":%02d", s / 60, (int) (s % 60));
  }
}

static enum cell_tone
status_tone (const char *s)
{
  if (s == NULL)
    return TONE_PLAIN;
  if (strcmp (s, "failed") == 0 || strcmp (s, "corrupt") == 0)
    return TONE_BAD;
  if (strcmp (s, "cancelled") == 0)
    return TONE_WARN;
  if (strcmp (s, "completed") == 0 || strcmp (s, "ok") == 0)
    return TONE_GOOD;
  return TONE_PLAIN;
}

/* --------------------------------------------------------- commands --- */

struct list {
  const char *prog;           /* "strata vms" */
  struct client c;
  bool json;
  const char *vm, *repository, *status;
  int64_t limit;
};

/* GET path into *resp; an exit status, having said why on stderr. */
static int
get (struct list *l, const char *path, json_t **resp)
{
  int st = client_call (&l->c, "GET", path, NULL, resp);
  if (st != 200) {
    fprintf (stderr, "%s: %s\n", l->prog, error_message ());
    return client_exit_status (st);
  }
  return AGENT_EXIT_OK;
}

static void
print_json (json_t *j)
{
  json_dumpf (j, stdout, STRATA_JSON_PRETTY);
  putchar ('\n');
}

/* Append "&key=escaped value" to *path (value NULL: nothing).  -1 when
 * out of memory. */
static int
add_query (char **path, const char *key, const char *value)
{
  CLEANUP_FREE char *esc = NULL, *old = *path;
  if (value == NULL) {
    old = NULL;
    return 0;
  }
  esc = client_escape (value);
  if (esc == NULL || asprintf (path, "%s%c%s=%s", old, strchr (old, '?') ? '&' : '?',
                               key, esc) == -1) {
    *path = NULL;
    return -1;
  }
  return 0;
}

static int
list_vms (struct list *l)
{
  static const char *const heads[] = {
    "VM", "POLICY", ">DISKS", ">SIZE", "NEXT RUN", "LAST RUN", NULL
  };
  CLEANUP_JSON json_t *resp = NULL;
  json_t *vms, *vm, *d;
  struct table t;
  size_t i, k;
  int rc = get (l, "/api/v1/vms", &resp);

  if (rc != AGENT_EXIT_OK)
    return rc;
  vms = json_object_get (resp, "vms");
  if (l->json) {
    print_json (vms);
    return rc;
  }
  table_init (&t, heads);
  json_array_foreach (vms, i, vm) {
    json_t *disks = json_object_get (vm, "disks");
    int64_t size = 0;
    char sz[32], next[80], last[80];

    json_array_foreach (disks, k, d)
      size += jint (d, "size_bytes");
    progress_human (sz, sizeof sz, (double) size);
    fmt_time (next, sizeof next, jstr (vm, "next_run_at"), false);
    fmt_time (last, sizeof last, jstr (vm, "last_run_at"), true);
    table_add (&t, TONE_PLAIN, "%s", jstr (vm, "vm_name"));
    table_add (&t, TONE_PLAIN, "%s", jstr (vm, "policy") ?: "-");
    table_add (&t, TONE_PLAIN, "%zu", json_array_size (disks));
    table_add (&t, TONE_PLAIN, "%s", sz);
    table_add (&t, TONE_PLAIN, "%s", next);
    table_add (&t, TONE_PLAIN, "%s", last);
  }
  table_print (&t);
  table_clear (&t);
  return rc;
}

static int
list_contexts (struct list *l)
{
  static const char *const heads[] = {
    "VM", "REPOSITORY", ">POINTS", "LAST BACKUP", "LAST STATUS", ">USED", "VERIFY",
    "OVERDUE", "CONTEXT", NULL
  };
  CLEANUP_FREE char *path = strdup ("/api/v1/contexts");
  CLEANUP_JSON json_t *resp = NULL;
  json_t *ctxs, *ctx;
  struct table t;
  size_t i;
  int rc;

  if (path == NULL || add_query (&path, "vm_name", l->vm) == -1) {
    fprintf (stderr, "%s: out of memory\n", l->prog);
    return AGENT_EXIT_FAILED;
  }
  if ((rc = get (l, path, &resp)) != AGENT_EXIT_OK)
    return rc;
  ctxs = json_object_get (resp, "contexts");
  if (l->json) {
    print_json (ctxs);
    return rc;
  }
  table_init (&t, heads);
  json_array_foreach (ctxs, i, ctx) {
    /* The hub's summary when it has one; an older hub's counters else. */
    json_t *s = json_object_get (ctx, "summary");
    const char *last_status = s ? jstr (s, "last_status") : NULL;
    const char *verify = s ? jstr (s, "verify_state") : NULL;
    const char *reason = s ? jstr (s, "overdue_reason") : NULL;
    bool overdue = json_is_true (json_object_get (s, "overdue"));
    char when[80], used[32];

    fmt_time (when, sizeof when, s ? jstr (s, "last_completed_at")
                                   : jstr (ctx, "last_backup_at"), true);
    fmt_size (used, sizeof used, json_object_get (s, "bytes_used"));
    table_add (&t, TONE_PLAIN, "%s", jstr (ctx, "vm_name"));
    table_add (&t, TONE_PLAIN, "%s", jstr (ctx, "repository_id"));
    table_add (&t, TONE_PLAIN, "%" PRId64,
               s ? jint (s, "points") : jint (ctx, "successful_backups"));
    table_add (&t, TONE_PLAIN, "%s", when);
    table_add (&t, status_tone (last_status), "%s", last_status ?: "-");
    table_add (&t, TONE_PLAIN, "%s", used);
    table_add (&t, status_tone (verify), "%s", verify ?: "-");
    if (overdue)
      table_add (&t, TONE_BAD, "overdue%s%s", reason ? ": " : "", reason ?: "");
    else
      table_add (&t, TONE_PLAIN, "%s", s ? "no" : "-");
    table_add (&t, TONE_PLAIN, "%s", jstr (ctx, "context_id"));
  }
  table_print (&t);
  table_clear (&t);
  return rc;
}

/* The bytes a backup's disks wrote. */
static int64_t
job_bytes (json_t *job)
{
  json_t *disks = json_object_get (job, "disks"), *d;
  int64_t sum = 0;
  size_t k;

  json_array_foreach (disks, k, d)
    sum += jint (d, "bytes_transferred");
  return sum;
}

static int
list_backups (struct list *l)
{
  static const char *const heads[] = {
    "BACKUP", "VM", "REPOSITORY", "TYPE", "STATUS", ">DISKS", ">WRITTEN", "CREATED",
    "VERIFY", NULL
  };
  CLEANUP_FREE char *path = strdup ("/api/v1/backups"), *limit = NULL;
  CLEANUP_JSON json_t *resp = NULL;
  json_t *jobs, *job;
  struct table t;
  size_t i;
  int rc;

  if (l->limit > 0 && asprintf (&limit, "%" PRId64, l->limit) == -1)
    limit = NULL;
  if (path == NULL || (l->limit > 0 && limit == NULL) ||
      add_query (&path, "vm_name", l->vm) == -1 ||
      add_query (&path, "repository_id", l->repository) == -1 ||
      add_query (&path, "status", l->status) == -1 ||
      add_query (&path, "limit", limit) == -1) {
    fprintf (stderr, "%s: out of memory\n", l->prog);
    return AGENT_EXIT_FAILED;
  }
  if ((rc = get (l, path, &resp)) != AGENT_EXIT_OK)
    return rc;
  jobs = json_object_get (resp, "backups");
  if (l->json) {
    print_json (jobs);
    return rc;
  }
  table_init (&t, heads);
  json_array_foreach (jobs, i, job) {
    char written[32], created[80];
    const char *status = jstr (job, "status"), *verify = jstr (job, "verify_state");

    progress_human (written, sizeof written, (double) job_bytes (job));
    fmt_time (created, sizeof created, jstr (job, "created_at"), true);
    table_add (&t, TONE_PLAIN, "%s", jstr (job, "backup_id"));
    table_add (&t, TONE_PLAIN, "%s", jstr (job, "vm_name"));
    table_add (&t, TONE_PLAIN, "%s", jstr (job, "repository_id"));
    table_add (&t, TONE_PLAIN, "%s", jstr (job, "backup_type"));
    table_add (&t, status_tone (status), "%s%s", status,
               json_is_true (json_object_get (job, "protected")) ? " (protected)" : "");
    table_add (&t, TONE_PLAIN, "%zu", json_array_size (json_object_get (job, "disks")));
    table_add (&t, TONE_PLAIN, "%s", written);
    table_add (&t, TONE_PLAIN, "%s", created);
    table_add (&t, status_tone (verify), "%s", verify);
  }
  table_print (&t);
  table_clear (&t);
  if ((int64_t) json_array_size (jobs) < jint (resp, "total"))
    fprintf (stderr, "%s: %zu of %" PRId64 " backups shown (--limit N for more)\n",
             l->prog, json_array_size (jobs), jint (resp, "total"));
  return rc;
}

/* GET one backup into *out; an exit status. */
static int
get_backup (struct list *l, const char *id, json_t **out)
{
  CLEANUP_FREE char *esc = client_escape (id), *path = NULL;

  if (esc == NULL || asprintf (&path, "/api/v1/backups/%s", esc) == -1) {
    path = NULL;
    fprintf (stderr, "%s: out of memory\n", l->prog);
    return AGENT_EXIT_FAILED;
  }
  return get (l, path, out);
}

/* A disk's chain, from its full up to this backup, by the parents' links
 * (parent_backup_id of the same disk index), never by time. */
static int
print_chain (struct list *l, json_t *job, int disk_index)
{
  CLEANUP_JSON json_t *seen = json_array ();   /* oldest last */
  const char *parent;
  json_t *d = NULL, *x;
  size_t k;
  int rc = AGENT_EXIT_OK;

  json_array_foreach (json_object_get (job, "disks"), k, x)
    if (jint (x, "disk_index") == disk_index)
      d = x;
  parent = jstr (d, "parent_backup_id");
  json_array_append_new (seen, json_pack ("{s:s?,s:s?}", "id", jstr (job, "backup_id"),
                                          "type", jstr (d, "backup_type")));
  while (parent && json_array_size (seen) < CHAIN_MAX) {
    CLEANUP_JSON json_t *pj = NULL;
    json_t *pd = NULL;

    rc = get_backup (l, parent, &pj);
    if (rc != AGENT_EXIT_OK)
      return rc;
    json_array_foreach (json_object_get (pj, "disks"), k, x)
      if (jint (x, "disk_index") == disk_index)
        pd = x;
    json_array_append_new (seen, json_pack ("{s:s?,s:s?}", "id", jstr (pj, "backup_id"),
                                            "type", jstr (pd, "backup_type")));
    parent = jstr (pd, "parent_backup_id");
  }
  printf ("  chain:");
  for (k = json_array_size (seen); k-- > 0; ) {
    x = json_array_get (seen, k);
    printf ("%s %s (%s)", k + 1 < json_array_size (seen) ? " <-" : "", jstr (x, "id"),
            jstr (x, "type") ?: "?");
  }
  putchar ('\n');
  return rc;
}

static int
show_backup (struct list *l, const char *id)
{
  CLEANUP_JSON json_t *job = NULL;
  json_t *disks, *d;
  char when[80], done[80];
  size_t k;
  int rc = get_backup (l, id, &job);

  if (rc != AGENT_EXIT_OK)
    return rc;
  if (l->json) {
    print_json (job);
    return rc;
  }
  fmt_time (when, sizeof when, jstr (job, "created_at"), true);
  fmt_time (done, sizeof done, jstr (job, "completed_at"), true);
  printf ("backup:      %s\n", jstr (job, "backup_id"));
  printf ("vm:          %s\n", jstr (job, "vm_name"));
  printf ("repository:  %s\n", jstr (job, "repository_id"));
  printf ("context:     %s\n", jstr (job, "context_id"));
  printf ("type:        %s (%s-driven)\n", jstr (job, "backup_type"), jstr (job, "driver"));
  printf ("status:      %s%s\n", jstr (job, "status"),
          json_is_true (json_object_get (job, "protected")) ? ", protected" : "");
  if (jstr (job, "error"))
    printf ("error:       %s\n", jstr (job, "error"));
  printf ("created:     %s\n", when);
  printf ("completed:   %s\n", done);
  printf ("verify:      %s\n", jstr (job, "verify_state"));
  disks = json_object_get (job, "disks");
  json_array_foreach (disks, k, d) {
    char size[32], written[32];
    int index = (int) jint (d, "disk_index");

    fmt_size (size, sizeof size, json_object_get (d, "size_bytes"));
    fmt_size (written, sizeof written, json_object_get (d, "bytes_transferred"));
    printf ("\ndisk %d: %s %s, %s, %s written\n", index, jstr (d, "backup_type"),
            jstr (d, "status"), size, written);
    if (jstr (d, "full_reason"))
      printf ("  full because: %s\n", jstr (d, "full_reason"));
    if (json_is_object (json_object_get (d, "progress"))) {
      struct progress_text pt;
      fmt_progress (&pt, json_object_get (d, "progress"));
      printf ("  progress:           %s of %s (%s%%), %s, %s left\n", pt.done, pt.total,
              pt.pct, pt.rate, pt.eta);
    }
    printf ("  file:               %s\n", jstr (d, "qcow2_path") ?: "-");
    printf ("  change id:          %s\n", jstr (d, "change_id") ?: "-");
    printf ("  previous change id: %s\n", jstr (d, "previous_change_id") ?: "-");
    printf ("  parent:             %s\n", jstr (d, "parent_backup_id") ?: "- (a full)");
    printf ("  verify:             %s%s%s\n", jstr (d, "verify_state"),
            jstr (d, "verify_error") ? ": " : "", jstr (d, "verify_error") ?: "");
    if (jstr (d, "error"))
      printf ("  error:              %s\n", jstr (d, "error"));
    rc = print_chain (l, job, index);
    if (rc != AGENT_EXIT_OK)
      return rc;
  }
  return rc;
}

static int
list_jobs (struct list *l)
{
  static const char *const heads[] = {
    "BACKUP", "VM", "DRIVER", ">DISK", "STATUS", ">DONE", ">TOTAL", ">%", ">RATE", ">ETA",
    "STARTED", NULL
  };
  static const char *const paths[] = {
    "/api/v1/backups?status=running&limit=1000",
    "/api/v1/backups?status=finishing&limit=1000",
  };
  CLEANUP_JSON json_t *all = json_array ();
  struct table t;
  json_t *job, *d;
  size_t i, k;
  int rc;

  for (i = 0; i < 2; i++) {
    CLEANUP_JSON json_t *resp = NULL;
    if ((rc = get (l, paths[i], &resp)) != AGENT_EXIT_OK)
      return rc;
    json_array_extend (all, json_object_get (resp, "backups"));
  }
  if (l->json) {
    print_json (all);
    return AGENT_EXIT_OK;
  }
  table_init (&t, heads);
  json_array_foreach (all, i, job) {
    char started[80];

    fmt_time (started, sizeof started, jstr (job, "created_at"), true);
    json_array_foreach (json_object_get (job, "disks"), k, d) {
      struct progress_text pt;

      fmt_progress (&pt, json_object_get (d, "progress"));
      table_add (&t, TONE_PLAIN, "%s", jstr (job, "backup_id"));
      table_add (&t, TONE_PLAIN, "%s", jstr (job, "vm_name"));
      table_add (&t, TONE_PLAIN, "%s", jstr (job, "driver"));
      table_add (&t, TONE_PLAIN, "%" PRId64, jint (d, "disk_index"));
      table_add (&t, status_tone (jstr (d, "status")), "%s", jstr (d, "status"));
      table_add (&t, TONE_PLAIN, "%s", pt.done);
      table_add (&t, TONE_PLAIN, "%s", pt.total);
      table_add (&t, TONE_PLAIN, "%s", pt.pct);
      table_add (&t, TONE_PLAIN, "%s", pt.rate);
      table_add (&t, TONE_PLAIN, "%s", pt.eta);
      table_add (&t, TONE_PLAIN, "%s", started);
    }
  }
  table_print (&t);
  table_clear (&t);
  return AGENT_EXIT_OK;
}

/* ------------------------------------------------------------- main --- */

enum list_cmd { CMD_VMS, CMD_CONTEXTS, CMD_BACKUPS, CMD_SHOW, CMD_JOBS };

static const struct {
  const char *name, *synopsis, *what;
  const char *opts;           /* the filters it takes: v vm, r repository, s status, l limit */
} commands[] = {
  [CMD_VMS] = { "vms", "", "List the VMs of the hub's inventory: policy, disks, next and last\n"
                "scheduled run.", "" },
  [CMD_CONTEXTS] = { "contexts", " [--vm NAME]",
                     "List the backup contexts (one per VM and repository): restore points,\n"
                     "the last backup and its status, bytes used, verify state, overdue.", "v" },
  [CMD_BACKUPS] = { "backups", " [--vm NAME] [--repository ID] [--status S] [--limit N]",
                    "List backups, newest first (the hub's default: the latest 100).", "vrsl" },
  [CMD_SHOW] = { "show", " BACKUP",
                 "Show one backup: its disks, their files, change ids and parents, and\n"
                 "each disk's chain from its full.", "" },
  [CMD_JOBS] = { "jobs", "", "List the running backups, a row per disk with its progress (bytes,\n"
                 "percent, rate, ETA): hub-driven copies and agents' alike.", "" },
};

static void
usage (FILE *fp, enum list_cmd cmd)
{
  const char *o = commands[cmd].opts;

  fprintf (fp, "Usage: strata %s [--hub URL] [--token-file F] [--json]%s\n%s\n\n",
           commands[cmd].name, commands[cmd].synopsis, commands[cmd].what);
  if (strchr (o, 'v'))
    fprintf (fp, "  --vm NAME          only this VM's\n");
  if (strchr (o, 'r'))
    fprintf (fp, "  --repository ID    only those in this repository\n");
  if (strchr (o, 's'))
    fprintf (fp, "  --status S         only those with this status (running, finishing,\n"
                 "                     completed, failed, cancelled, removing)\n");
  if (strchr (o, 'l'))
    fprintf (fp, "  --limit N          at most N (1 to 1000)\n");
  client_opts_usage (fp, 21);
  fprintf (fp,
"  --json             print the hub's JSON %s instead of a table\n"
"\n"
"Exit status: 0 success; 1 failure; 2 usage error; 3 the hub is unreachable or\n"
"refused the request (an unknown backup, a bad token).\n",
           cmd == CMD_SHOW ? "object" : "objects, as an array,");
}

static int
list_main (enum list_cmd cmd, int argc, char **argv)
{
  static const struct option opts[] = {
    CLIENT_LONG_OPTIONS,
    { "json", no_argument, NULL, 'j' },
    { "vm", required_argument, NULL, 'v' },
    { "repository", required_argument, NULL, 'r' },
    { "status", required_argument, NULL, 's' },
    { "limit", required_argument, NULL, 'l' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  char prog[32];
  struct list l = { .prog = prog };
  struct client_opts co = { 0 };
  enum job_status status;
  char *end;
  int ch, rc;

  snprintf (prog, sizeof prog, "strata %s", commands[cmd].name);
  optind = 1;
  while ((ch = getopt_long (argc, argv, "h", opts, NULL)) != -1) {
    if (client_opt (&co, ch, optarg))
      continue;
    if (strchr ("vrsl", ch) && !strchr (commands[cmd].opts, ch)) {
      fprintf (stderr, "%s: option '%s' is not one of this command's\n", prog,
               argv[optind - 1]);
      usage (stderr, cmd);
      return AGENT_EXIT_USAGE;
    }
    switch (ch) {
    case 'j': l.json = true; break;
    case 'v': l.vm = optarg; break;
    case 'r': l.repository = optarg; break;
    case 's': l.status = optarg; break;
    case 'l':
      errno = 0;
      l.limit = strtoll (optarg, &end, 10);
      if (errno || *end || end == optarg || l.limit < 1 || l.limit > 1000) {
        fprintf (stderr, "%s: --limit %s: a number from 1 to 1000\n", prog, optarg);
        return AGENT_EXIT_USAGE;
      }
      break;
    case 'h': usage (stdout, cmd); return AGENT_EXIT_OK;
    default: usage (stderr, cmd); return AGENT_EXIT_USAGE;
    }
  }
  if ((l.vm && *l.vm == '\0') || (l.repository && *l.repository == '\0')) {
    fprintf (stderr, "%s: --vm and --repository need a value\n", prog);
    return AGENT_EXIT_USAGE;
  }
  if (l.status && job_status_parse (l.status, &status) == -1) {
    fprintf (stderr, "%s: --status %s: %s\n", prog, l.status, error_message ());
    return AGENT_EXIT_USAGE;
  }
  if (argc - optind != (cmd == CMD_SHOW ? 1 : 0)) {
    if (cmd == CMD_SHOW)
      fprintf (stderr, "%s: give one BACKUP id\n", prog);
    else
      fprintf (stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
    return AGENT_EXIT_USAGE;
  }
  if (cmd == CMD_SHOW && *argv[optind] == '\0') {
    fprintf (stderr, "%s: give one BACKUP id\n", prog);
    return AGENT_EXIT_USAGE;
  }
  if (client_init (&l.c, &co) == -1) {
    fprintf (stderr, "%s: %s\n", prog, error_message ());
    return AGENT_EXIT_USAGE;
  }
  switch (cmd) {
  case CMD_VMS: rc = list_vms (&l); break;
  case CMD_CONTEXTS: rc = list_contexts (&l); break;
  case CMD_BACKUPS: rc = list_backups (&l); break;
  case CMD_SHOW: rc = show_backup (&l, argv[optind]); break;
  default: rc = list_jobs (&l); break;
  }
  fflush (stdout);
  client_clear (&l.c);
  return rc;
}

/* The listing command of that name, or -1. */
static int
list_cmd_of (const char *name)
{
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp (commands[i].name, name) == 0)
      return (int) i;
  return -1;
}

bool
agent_is_listing (const char *command)
{
  return list_cmd_of (command) >= 0;
}

int
agent_list_main (int argc, char **argv)
{
  int cmd = list_cmd_of (argv[0]);
  return cmd < 0 ? AGENT_EXIT_USAGE : list_main ((enum list_cmd) cmd, argc, argv);
}
