/* agent/prune.c - `strata prune`: prune one VM's backups in one repository
 * by retention rules (the given ones, or its policy's), through the hub's
 * POST /api/v1/contexts/{id}/prune, and wait for the task to end, showing
 * its progress. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
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

static const char *const keep_names[] = {
  "keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly",
};

static void
usage (FILE *fp)
{
  fprintf (fp,
"Usage: strata prune [--hub URL] [--token-file F] --vm NAME [--repository ID]\n"
"                    [--keep-last N] [--keep-hourly N] [--keep-daily N]\n"
"                    [--keep-weekly N] [--keep-monthly N] [--keep-yearly N]\n"
"                    [--dry-run] [--json]\n"
"Remove the backups of a VM in one repository that the retention rules do not\n"
"keep, merging them into the points that stay, and wait until it is done.\n"
"\n"
"  --vm NAME          the VM\n"
"  --repository ID    its repository (needed when it has backups in several)\n"
"  --keep-X N         the rules (Proxmox Backup Server's meaning): the newest N\n"
"                     points, and the newest point of each of the N newest hours,\n"
"                     days, ISO weeks, months and years that hold one, in the\n"
"                     hub's local time.  Without rules, the VM's policy's.\n"
"                     The newest backup and protected ones always stay.\n"
"  --dry-run          print what would be kept and removed; change nothing\n");
  client_opts_usage (fp, 21);
  fprintf (fp,
"  --json             print the task (or the dry run's answer) as JSON on stdout\n"
"\n"
"Exit status: 0 done; 1 the prune task failed; 2 usage error; 3 the hub is\n"
"unreachable or refused the request; 4 conflict (another prune of the same\n"
"backups is running).\n");
}

static void
print_ids (const char *what, json_t *ids)
{
  size_t i;
  json_t *v;

  printf ("%s (%zu):\n", what, json_array_size (ids));
  json_array_foreach (ids, i, v)
    printf ("  %s\n", json_string_value (v));
}

int
agent_prune_main (int argc, char **argv)
{
  static const struct option opts[] = {
    CLIENT_LONG_OPTIONS,
    { "vm", required_argument, NULL, 'v' },
    { "repository", required_argument, NULL, 'r' },
    { "keep-last", required_argument, NULL, 0 },
    { "keep-hourly", required_argument, NULL, 1 },
    { "keep-daily", required_argument, NULL, 2 },
    { "keep-weekly", required_argument, NULL, 3 },
    { "keep-monthly", required_argument, NULL, 4 },
    { "keep-yearly", required_argument, NULL, 5 },
    { "dry-run", no_argument, NULL, 'n' },
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct client_opts co = { 0 };
  const char *vm = NULL, *repository = NULL;
  bool dry_run = false, json = false;
  CLEANUP_JSON json_t *body = json_object (), *resp = NULL, *task = NULL;
  CLEANUP_FREE char *ctx = NULL, *path = NULL;
  const char *task_id, *task_status;
  struct client c;
  int ch, st, rc;

  optind = 1;
  while ((ch = getopt_long (argc, argv, "h", opts, NULL)) != -1) {
    if (client_opt (&co, ch, optarg))
      continue;
    switch (ch) {
    case 'v': vm = optarg; break;
    case 'r': repository = optarg; break;
    case 'n': dry_run = true; break;
    case 'j': json = true; break;
    case 0: case 1: case 2: case 3: case 4: case 5: {
      char *end, key[32];
      long long n;
      errno = 0;
      n = strtoll (optarg, &end, 10);
      if (errno || *end || *optarg == '\0' || n < 0 || n > 100000) {
        fprintf (stderr, "strata prune: --%s %s: a count from 0 to 100000\n",
                 keep_names[ch], optarg);
        return AGENT_EXIT_USAGE;
      }
      snprintf (key, sizeof key, "%s", keep_names[ch]);
      key[4] = '_';
      json_object_set_new (body, key, json_integer (n));
      break;
    }
    case 'h': usage (stdout); return AGENT_EXIT_OK;
    default: usage (stderr); return AGENT_EXIT_USAGE;
    }
  }
  if (optind < argc) {
    fprintf (stderr, "strata prune: unexpected argument '%s'\n", argv[optind]);
    return AGENT_EXIT_USAGE;
  }
  if (vm == NULL || body == NULL) {
    fprintf (stderr, "strata prune: --vm NAME is required\n");
    return AGENT_EXIT_USAGE;
  }
  if (dry_run)
    json_object_set_new (body, "dry_run", json_true ());
  if (client_init (&c, &co) == -1) {
    fprintf (stderr, "strata prune: %s\n", error_message ());
    return AGENT_EXIT_USAGE;
  }
  rc = agent_find_context (&c, "strata prune", vm, repository, &ctx);
  if (rc != AGENT_EXIT_OK)
    goto out;
  if (asprintf (&path, "/api/v1/contexts/%s/prune", ctx) == -1) {
    path = NULL;
    rc = AGENT_EXIT_FAILED;
    goto out;
  }
  st = client_call (&c, "POST", path, body, &resp);
  if (st != 200 && st != 202) {
    fprintf (stderr, "strata prune: %s\n", error_message ());
    rc = client_exit_status (st);
    goto out;
  }
  task_id = json_string_value (json_object_get (resp, "task_id"));
  if (!json) {
    print_ids (dry_run ? "would keep" : "keeping", json_object_get (resp, "keep"));
    print_ids (dry_run ? "would remove" : "removing", json_object_get (resp, "remove"));
  }
  if (dry_run || task_id == NULL) {
    if (json)
      json_dumpf (resp, stdout, STRATA_JSON_PRETTY), putchar ('\n');
    rc = AGENT_EXIT_OK;
    goto out;
  }
  rc = agent_wait_task (&c, "strata prune", "prune", "merge steps", task_id, json, &task);
  if (rc != AGENT_EXIT_OK)
    goto out;
  if (json)
    json_dumpf (task, stdout, STRATA_JSON_PRETTY), putchar ('\n');
  task_status = json_string_value (json_object_get (task, "status"));
  if (task_status && strcmp (task_status, "completed") == 0) {
    if (!json)
      printf ("done: %" PRId64 " bytes freed\n", (int64_t) json_integer_value (
                json_object_get (json_object_get (task, "result"), "bytes_freed")));
    rc = AGENT_EXIT_OK;
  }
  else {
    fprintf (stderr, "strata prune: task %s failed: %s\n", task_id,
             json_string_value (json_object_get (task, "error")));
    rc = AGENT_EXIT_FAILED;
  }
 out:
  client_clear (&c);
  return rc;
}
