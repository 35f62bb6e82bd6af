/* agent/restore.c - `strata restore`: bring a backup point back out, into
 * a local file (--output) or as a read-only NBD export the user reads with
 * any NBD tool (--export).  Both ask the hub for a restore export
 * (POST /api/v1/restores) and always remove it (DELETE) when done. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent/agent.h"
#include "agent/agent-int.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/json.h"

static void
usage (FILE *fp)
{
  fprintf (fp,
"Usage: strata restore [--hub URL] [--token-file F] --backup ID --disk N\n"
"                      (--output PATH [--format raw|qcow2] | --export)\n"
"                      [--tls-psk-file F] [--json]\n"
"Bring disk N of a backup back as it was at that backup.\n"
"\n"
"  --output PATH    write it to PATH, which must not exist: raw (default; sparse,\n"
"                   holes stay holes) or qcow2 (--format)\n"
"  --export         ask the hub for a read-only NBD export of it, print its URI\n"
"                   and keep it until Ctrl-C (SIGINT) or SIGTERM; the URI ends\n"
"                   in ?tls-psk-file=FILE, a private file holding the export's\n"
"                   key (removed when the export ends), so nbdcopy, nbdinfo\n"
"                   and nbdfuse read it as printed\n");
  client_opts_usage (fp, 19);
  fprintf (fp,
"  --tls-psk-file F connect with F's first key (IDENTITY:HEXKEY, e.g. one of\n"
"                   the hub's --nbd-tls-psk-file) instead of the restore's\n"
"                   credential from the hub\n"
"  --json           print a JSON summary on stdout\n"
"\n"
"Exit status: 0 restored (or export ended by a signal); 1 the restore failed\n"
"(a partial output is removed); 2 usage error or the output exists; 3 the hub\n"
"is unreachable or refused the request (unknown backup or disk); 4 conflict.\n");
}

struct rjob {
  pthread_t waiter;           /* told with SIGUSR1 when the copy is over */
  struct engine_progress *p;
  const char *uri, *psk, *output, *format;
  struct engine_disk_result r;
  int rc;
  char err[1024];
};

static void *
restore_thread (void *opaque)
{
  struct rjob *j = opaque;
  j->rc = engine_restore (j->uri, j->psk, j->output, j->format, j->p, &j->r);
  if (j->rc == -1)
    snprintf (j->err, sizeof j->err, "%s", error_message ());
  pthread_kill (j->waiter, SIGUSR1);
  return NULL;
}

int
agent_restore_main (int argc, char **argv)
{
  static const struct option opts[] = {
    CLIENT_LONG_OPTIONS,
    { "backup", required_argument, NULL, 'b' },
    { "disk", required_argument, NULL, 'd' },
    { "output", required_argument, NULL, 'o' },
    { "format", required_argument, NULL, 'f' },
    { "export", no_argument, NULL, 'e' },
    { "tls-psk-file", required_argument, NULL, 'k' },
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct client_opts co = { 0 };
  const char *backup = NULL, *output = NULL;
  const char *format = "raw", *psk = NULL;
  bool export = false, json = false;
  long disk = -1;
  struct client c;
  CLEANUP_JSON json_t *body = NULL, *resp = NULL;
  CLEANUP_FREE char *restore_id = NULL, *uri = NULL, *path = NULL, *shown = NULL;
  char *key_file = NULL;
  struct stat sb;
  sigset_t set;
  char *end;
  int ch, st, rc = AGENT_EXIT_FAILED;

  signal (SIGPIPE, SIG_IGN);
  optind = 1;
  while ((ch = getopt_long (argc, argv, "h", opts, NULL)) != -1) {
    if (client_opt (&co, ch, optarg))
      continue;
    switch (ch) {
    case 'b': backup = optarg; break;
    case 'o': output = optarg; break;
    case 'f': format = optarg; break;
    case 'e': export = true; break;
    case 'k': psk = optarg; break;
    case 'j': json = true; break;
    case 'd':
      errno = 0;
      disk = strtol (optarg, &end, 10);
      if (errno || *end || *optarg == '\0' || disk < 0 || disk > 1023) {
        fprintf (stderr, "strata restore: --disk %s: a disk index from 0 to 1023\n", optarg);
        return AGENT_EXIT_USAGE;
      }
      break;
    case 'h': usage (stdout); return AGENT_EXIT_OK;
    default: usage (stderr); return AGENT_EXIT_USAGE;
    }
  }
  if (optind < argc) {
    fprintf (stderr, "strata restore: unexpected argument '%s'\n", argv[optind]);
    return AGENT_EXIT_USAGE;
  }
  if (backup == NULL || disk < 0) {
    fprintf (stderr, "strata restore: --backup ID and --disk N are required\n");
    return AGENT_EXIT_USAGE;
  }
  if ((output == NULL) == !export) {
    fprintf (stderr, "strata restore: give either --output PATH or --export\n");
    return AGENT_EXIT_USAGE;
  }
  if (strcmp (format, "raw") != 0 && strcmp (format, "qcow2") != 0) {
    fprintf (stderr, "strata restore: --format %s: raw or qcow2\n", format);
    return AGENT_EXIT_USAGE;
  }
  if (output && lstat (output, &sb) == 0) {
    fprintf (stderr, "strata restore: %s already exists\n", output);
    return AGENT_EXIT_USAGE;
  }
  if (client_init (&c, &co) == -1) {
    fprintf (stderr, "strata restore: %s\n", error_message ());
    return AGENT_EXIT_USAGE;
  }

  /* Block the signals before any thread starts; sigwait takes them. */
  sigemptyset (&set);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGUSR1);
  pthread_sigmask (SIG_BLOCK, &set, NULL);

  body = json_pack ("{s:s,s:i}", "backup_id", backup, "disk_index", (int) disk);
  st = client_call (&c, "POST", "/api/v1/restores", body, &resp);
  if (st != 201) {
    fprintf (stderr, "strata restore: %s\n", st == -1 || st >= 400 ? error_message ()
             : "unexpected answer from the hub");
    rc = st >= 400 || st == -1 ? client_exit_status (st) : AGENT_EXIT_FAILED;
    goto out;
  }
  if (json_string_value (json_object_get (resp, "restore_id")))
    restore_id = strdup (json_string_value (json_object_get (resp, "restore_id")));
  if (json_string_value (json_object_get (resp, "nbd_uri")))
    uri = strdup (json_string_value (json_object_get (resp, "nbd_uri")));
  if (restore_id == NULL || uri == NULL) {
    fprintf (stderr, "strata restore: the hub's answer has no restore_id or nbd_uri\n");
    goto out;
  }
  /* The export's key: the restore's credential, unless --tls-psk-file. */
  if (psk) {
    char *u = client_uri_identity (uri, psk);
    if (u == NULL) {
      fprintf (stderr, "strata restore: %s\n", error_message ());
      goto out;
    }
    free (uri);
    uri = u;
  }
  else if (client_psk_file (resp, &key_file) == -1) {
    fprintf (stderr, "strata restore: %s\n", error_message ());
    goto out;
  }
  else
    psk = key_file;

  if (export) {
    int sig;
    if (psk && asprintf (&shown, "%s?tls-psk-file=%s", uri, psk) == -1)
      shown = NULL;
    if (json) {
      json_t *o = json_pack ("{s:s, s:s, s:I}", "restore_id", restore_id,
                             "nbd_uri", shown ? shown : uri, "size_bytes",
                             json_integer_value (json_object_get (resp, "size_bytes")));
      if (o == NULL || json_dumpf (o, stdout, STRATA_JSON_COMPACT) == -1)
        fprintf (stderr, "strata restore: out of memory\n");
      putchar ('\n');
      json_decref (o);
    }
    else
      printf ("%s\n", shown ? shown : uri);
    fflush (stdout);
    if (!json)
      fprintf (stderr, "strata restore: exporting disk %ld of %s read-only; Ctrl-C ends it\n",
               disk, backup);
    do
      sigwait (&set, &sig);
    while (sig == SIGUSR1);
    rc = AGENT_EXIT_OK;
  }
  else {
    struct progress_row row = { 0 };
    struct progress_display *pd;
    struct rjob j = { .waiter = pthread_self (), .p = &row.p, .uri = uri, .psk = psk,
                      .output = output, .format = format };
    pthread_t t;

    snprintf (row.label, sizeof row.label, "disk %ld", disk);
    pd = progress_start (&row, 1, json);
    if (pthread_create (&t, NULL, restore_thread, &j) != 0)
      restore_thread (&j);
    else {
      /* Wait for the copy (it ends with SIGUSR1), turning SIGINT or
       * SIGTERM into a cancel. */
      for (;;) {
        int sig = 0;
        sigwait (&set, &sig);
        if (sig == SIGUSR1)
          break;
        row.p.cancel = true;
      }
      pthread_join (t, NULL);
    }
    if (j.rc == 0) {
      char w[32];
      progress_human (w, sizeof w, j.r.bytes_written);
      snprintf (row.summary, sizeof row.summary, "restored to %s (%s), %s written, %.1f s",
                output, format, w, j.r.seconds);
    }
    else
      snprintf (row.summary, sizeof row.summary, "failed: %.200s", j.err);
    progress_row_done (pd, 0);
    progress_stop (pd);
    if (json)
      printf ("{\"backup_id\":\"%s\",\"disk_index\":%ld,\"output\":\"%s\",\"format\":\"%s\","
              "\"status\":\"%s\",\"size_bytes\":%lld,\"bytes_read\":%lld,"
              "\"bytes_written\":%lld,\"seconds\":%.3f}\n",
              backup, disk, output, format, j.rc == 0 ? "completed" : "failed",
              (long long) j.r.size_bytes, (long long) j.r.bytes_read,
              (long long) j.r.bytes_written, j.r.seconds);
    if (j.rc == -1)
      fprintf (stderr, "strata restore: %s\n", j.err);
    rc = j.rc == 0 ? AGENT_EXIT_OK : AGENT_EXIT_FAILED;
    engine_disk_result_clear (&j.r);
  }

 out:
  client_psk_file_remove (&key_file);
  if (restore_id) {
    if (asprintf (&path, "/api/v1/restores/%s", restore_id) == -1)
      path = NULL;
    st = path ? client_call (&c, "DELETE", path, NULL, NULL) : -1;
    if (st != 204 && st != 200 && st != 404)
      fprintf (stderr, "strata restore: warning: removing restore export %s: %s\n",
               restore_id, error_message ());
  }
  client_clear (&c);
  return rc;
}
