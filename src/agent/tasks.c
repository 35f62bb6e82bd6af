/* agent/tasks.c - what the commands that start hub tasks share (`strata
 * prune`, `strata verify`): finding a VM's context, and waiting for a task
 * with a bar of its steps. */
#include <errno.h>
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

#define TASK_BAR 30

/* The context of (vm, repository): its id into *out (caller frees). */
int
agent_find_context (struct client *c, const char *prog, const char *vm,
                    const char *repository, char **out)
{
  CLEANUP_FREE char *esc = client_escape (vm), *path = NULL;
  CLEANUP_JSON json_t *resp = NULL;
  json_t *ctxs, *ctx, *found = NULL;
  size_t i;
  int st;

  if (esc == NULL || asprintf (&path, "/api/v1/contexts?vm_name=%s", esc) == -1) {
    path = NULL;
    fprintf (stderr, "%s: out of memory\n", prog);
    return AGENT_EXIT_FAILED;
  }
  st = client_call (c, "GET", path, NULL, &resp);
  if (st != 200) {
    fprintf (stderr, "%s: listing the backups of VM '%s': %s\n", prog, vm,
             error_message ());
    return client_exit_status (st);
  }
  ctxs = json_object_get (resp, "contexts");
  json_array_foreach (ctxs, i, ctx) {
    const char *repo = json_string_value (json_object_get (ctx, "repository_id"));
    if (repository && (repo == NULL || strcmp (repo, repository) != 0))
      continue;
    if (found) {
      fprintf (stderr, "%s: VM '%s' has backups in several repositories; "
               "name one with --repository\n", prog, vm);
      return AGENT_EXIT_USAGE;
    }
    found = ctx;
  }
  if (found == NULL) {
    fprintf (stderr, "%s: VM '%s' has no backups%s%s\n", prog, vm,
             repository ? " in repository " : "", repository ? repository : "");
    return AGENT_EXIT_HUB;
  }
  *out = strdup (json_string_value (json_object_get (found, "context_id")));
  return *out ? AGENT_EXIT_OK : AGENT_EXIT_FAILED;
}

/* Poll the task until it is no longer running, showing its steps. */
int
agent_wait_task (struct client *c, const char *prog, const char *label,
                 const char *steps, const char *task_id, bool quiet, json_t **task)
{
  CLEANUP_FREE char *path = NULL;
  bool tty = !quiet && isatty (STDERR_FILENO);
  char last[600] = "";

  if (asprintf (&path, "/api/v1/tasks/%s", task_id) == -1) {
    path = NULL;
    return AGENT_EXIT_FAILED;
  }
  for (;;) {
    struct timespec ts = { 0, 200 * 1000 * 1000 };
    json_t *t = NULL;
    const char *status, *msg;
    char line[600];
    int st = client_call (c, "GET", path, NULL, &t);

    if (st != 200) {
      json_decref (t);
      fprintf (stderr, "%s: task %s: %s\n", prog, task_id, error_message ());
      return client_exit_status (st);
    }
    status = json_string_value (json_object_get (t, "status"));
    msg = json_string_value (json_object_get (t, "message"));
    {
      int64_t done = json_integer_value (json_object_get (t, "steps_done"));
      int64_t total = json_integer_value (json_object_get (t, "steps_total"));
      char bar[TASK_BAR + 1];
      int filled = total > 0 ? (int) (done * TASK_BAR / total) : 0;

      for (int i = 0; i < TASK_BAR; i++)
        bar[i] = i < filled ? '#' : '-';
      bar[TASK_BAR] = '\0';
      snprintf (line, sizeof line, "%s [%s] %" PRId64 "/%" PRId64 " %s%s%s",
                label, bar, done, total, steps, msg ? " - " : "", msg ? msg : "");
    }
    if (!quiet && strcmp (line, last) != 0) {
      if (tty)
        fprintf (stderr, "\r\033[K%s", line);
      else
        fprintf (stderr, "%s\n", line);
      snprintf (last, sizeof last, "%s", line);
    }
    if (status == NULL || strcmp (status, "running") != 0) {
      if (tty)
        fprintf (stderr, "\n");
      *task = t;
      return AGENT_EXIT_OK;
    }
    json_decref (t);
    nanosleep (&ts, NULL);
  }
}

