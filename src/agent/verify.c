/* agent/verify.c - `strata verify`: have the hub verify one backup, or every
 * completed backup of a VM in one repository (one task: a block shared by
 * several points is read once), wait for the task and report per point and
 * disk. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/agent-int.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/json.h"

static void
usage (FILE *fp)
{
  fprintf (fp,
"Usage: strata verify [--hub URL] [--token-file F] (--backup ID | --vm NAME\n"
"                     [--repository ID]) [--json]\n"
"Read back every block a backup's chain holds and check it against the hashes\n"
"taken from the source when it was copied, and check each file of the chain\n"
"(present, a sound QCOW2, the size and backing file the catalog expects).\n"
"\n"
"  --backup ID        one backup\n"
"  --vm NAME          every completed backup of the VM (in --repository ID, needed\n"
"                     when it has backups in several)\n");
  client_opts_usage (fp, 21);
  fprintf (fp,
"  --json             print the task as JSON on stdout\n"
"\n"
"Exit status: 0 every point is ok; 1 a point is corrupt, or the task failed;\n"
"2 usage error; 3 the hub is unreachable or refused the request (unknown\n"
"backup, one not completed); 4 conflict.\n");
}

/* One line per point and disk (unless quiet); whether every point is ok. */
static bool
report (json_t *result, bool quiet)
{
  json_t *points = json_object_get (result, "points"), *p;
  bool all_ok = true;
  size_t i;

  json_array_foreach (points, i, p) {
    const char *id = json_string_value (json_object_get (p, "backup_id"));
    const char *state = json_string_value (json_object_get (p, "verify_state"));
    json_t *disks = json_object_get (p, "disks"), *d;
    size_t k;

    if (state == NULL || (strcmp (state, "ok") != 0 && strcmp (state, "skipped") != 0))
      all_ok = false;
    if (quiet)
      continue;
    printf ("%s: %s%s%s\n", id ? id : "?", state ? state : "?",
            json_object_get (p, "error") ? ": " : "",
            json_string_value (json_object_get (p, "error")) ?: "");
    json_array_foreach (disks, k, d) {
      json_t *probs = json_object_get (d, "problems"), *pr;
      size_t m;
      printf ("  disk %d: %s, %" PRId64 " blocks checked%s\n",
              (int) json_integer_value (json_object_get (d, "disk_index")),
              json_string_value (json_object_get (d, "verify_state")),
              (int64_t) json_integer_value (json_object_get (d, "blocks_checked")),
              json_is_false (json_object_get (d, "hashed"))
              ? " (no hashes: the files' structure only)" : "");
      json_array_foreach (probs, m, pr) {
        const char *file = json_string_value (json_object_get (pr, "file"));
        printf ("    %s%s%s\n", file ? file : "", file ? ": " : "",
                json_string_value (json_object_get (pr, "message")));
      }
    }
  }
  return all_ok;
}

int
agent_verify_main (int argc, char **argv)
{
  static const struct option opts[] = {
    CLIENT_LONG_OPTIONS,
    { "backup", required_argument, NULL, 'b' },
    { "vm", required_argument, NULL, 'v' },
    { "repository", required_argument, NULL, 'r' },
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct client_opts co = { 0 };
  const char *backup = NULL, *vm = NULL, *repository = NULL;
  CLEANUP_JSON json_t *resp = NULL, *task = NULL;
  CLEANUP_FREE char *ctx = NULL, *path = NULL;
  const char *task_id, *task_status;
  bool json = false;
  struct client c;
  int ch, st, rc;

  optind = 1;
  while ((ch = getopt_long (argc, argv, "h", opts, NULL)) != -1) {
    if (client_opt (&co, ch, optarg))
      continue;
    switch (ch) {
    case 'b': backup = optarg; break;
    case 'v': vm = optarg; break;
    case 'r': repository = optarg; break;
    case 'j': json = true; break;
    case 'h': usage (stdout); return AGENT_EXIT_OK;
    default: usage (stderr); return AGENT_EXIT_USAGE;
    }
  }
  if (optind < argc) {
    fprintf (stderr, "strata verify: unexpected argument '%s'\n", argv[optind]);
    return AGENT_EXIT_USAGE;
  }
  if ((backup == NULL) == (vm == NULL) || (backup && repository) ||
      (backup && *backup == '\0') || (vm && *vm == '\0') ||
      (repository && *repository == '\0')) {
    fprintf (stderr, "strata verify: give either --backup ID or --vm NAME "
             "[--repository ID]\n");
    return AGENT_EXIT_USAGE;
  }
  if (client_init (&c, &co) == -1) {
    fprintf (stderr, "strata verify: %s\n", error_message ());
    return AGENT_EXIT_USAGE;
  }
  if (vm) {
    rc = agent_find_context (&c, "strata verify", vm, repository, &ctx);
    if (rc != AGENT_EXIT_OK)
      goto out;
  }
  else {
    CLEANUP_FREE char *esc = client_escape (backup);
    ctx = NULL;
    if (esc == NULL || asprintf (&path, "/api/v1/backups/%s/verify", esc) == -1)
      path = NULL;
  }
  if (ctx && asprintf (&path, "/api/v1/contexts/%s/verify", ctx) == -1)
    path = NULL;
  if (path == NULL) {
    fprintf (stderr, "strata verify: out of memory\n");
    rc = AGENT_EXIT_FAILED;
    goto out;
  }
  st = client_call (&c, "POST", path, NULL, &resp);
  if (st != 202) {
    fprintf (stderr, "strata verify: %s\n", error_message ());
    rc = client_exit_status (st);
    goto out;
  }
  task_id = json_string_value (json_object_get (resp, "task_id"));
  if (task_id == NULL) {
    fprintf (stderr, "strata verify: the hub answered no task\n");
    rc = AGENT_EXIT_HUB;
    goto out;
  }
  rc = agent_wait_task (&c, "strata verify", "verify", "points", task_id, json, &task);
  if (rc != AGENT_EXIT_OK)
    goto out;
  if (json)
    json_dumpf (task, stdout, STRATA_JSON_PRETTY), putchar ('\n');
  task_status = json_string_value (json_object_get (task, "status"));
  if (task_status == NULL || strcmp (task_status, "completed") != 0) {
    fprintf (stderr, "strata verify: task %s failed: %s\n", task_id,
             json_string_value (json_object_get (task, "error")));
    rc = AGENT_EXIT_FAILED;
  }
  else
    rc = report (json_object_get (task, "result"), json) ? AGENT_EXIT_OK : AGENT_EXIT_FAILED;
 out:
  client_clear (&c);
  return rc;
}
