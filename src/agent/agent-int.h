/* agent/agent-int.h - private interfaces of the agent: the hub client
 * (client.c) and the progress display (progress.c). */
#ifndef STRATA_AGENT_AGENT_INT_H
#define STRATA_AGENT_AGENT_INT_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "engine/engine.h"

/* The lease a backup job asks for, in seconds (agent/backup.c), and the
 * prefix of the bitmaps strata adds to QCOW2 sources (each named after its
 * backup id, util/id.h): the only bitmaps the agent ever removes. */
#define AGENT_LEASE_SECONDS 60
#define AGENT_BITMAP_PREFIX "backup-"

/* ------------------------------------------------------------ client --- */

struct client {
  char *base;                 /* "http://host:port", no trailing slash */
  char *auth;                 /* "Authorization: Bearer ..." or NULL */
  char *ca_file;              /* --ca-file, or NULL: the system's CAs */
  char *pin;                  /* "sha256//BASE64" (--pin-sha256) or NULL */
  long timeout;               /* seconds a request may take; 0: 300 */
};

/* The options of every command that talks to a hub, in one place: the
 * command puts CLIENT_LONG_OPTIONS in its getopt_long table, hands each
 * option to client_opt, and prints client_opts_usage in its --help. */
struct client_opts {
  const char *hub;            /* --hub URL */
  const char *token_file;     /* --token-file F */
  const char *ca_file;        /* --ca-file F */
  const char *pin;            /* --pin-sha256 PIN */
};
enum { CLIENT_OPT_HUB = 0x100, CLIENT_OPT_TOKEN, CLIENT_OPT_CA, CLIENT_OPT_PIN };
#define CLIENT_LONG_OPTIONS                                     \
  { "hub", required_argument, NULL, CLIENT_OPT_HUB },           \
  { "token-file", required_argument, NULL, CLIENT_OPT_TOKEN },  \
  { "ca-file", required_argument, NULL, CLIENT_OPT_CA },        \
  { "pin-sha256", required_argument, NULL, CLIENT_OPT_PIN }
/* True when ch was one of CLIENT_LONG_OPTIONS (arg stored in o). */
bool client_opt (struct client_opts *o, int ch, const char *arg);
/* Their --help lines, descriptions starting at column col. */
void client_opts_usage (FILE *fp, int col);

/* Default hub: $STRATA_HUB or http://127.0.0.1:8082.  The token is the
 * first line of o->token_file (NULL: none); an https:// hub is trusted by
 * o->ca_file, o->pin or both (neither: the system's CAs).  -1 with the
 * error set (ERR_INVALID: a usage error). */
int client_init (struct client *c, const struct client_opts *o);
void client_clear (struct client *c);

/* One request: body (may be NULL) is sent as JSON; *resp gets the parsed
 * answer (NULL when empty or not JSON; the caller owns it).  Returns the
 * HTTP status, or -1 when the hub did not answer (ERR_UNAVAILABLE). For a
 * status >= 400 the hub's error message is in the thread's error record
 * (ERR_CONFLICT for 409, ERR_NOT_FOUND for 404, ERR_INVALID otherwise). */
int client_call (struct client *c, const char *method, const char *path,
                 json_t *body, json_t **resp);

/* PUT path with the file open at fd, whole, as the body
 * (application/octet-stream), streamed from disk, never held in memory.
 * Answers as client_call. */
int client_put_file (struct client *c, const char *path, int fd, json_t **resp);

/* s percent-encoded for a URL (caller frees), or NULL. */
char *client_escape (const char *s);

/* The exit status for a failed client_call (-1 or >= 400). */
int client_exit_status (int status);

/* The NBD credential of a hub's answer ("nbd_tls": {identity, psk}) put in
 * a private temporary file ($TMPDIR or /tmp, mode 0600), the form libnbd's
 * nbd_set_tls_psk_file reads: 0 with *path that file (remove it with
 * client_psk_file_remove), or with *path NULL when the answer has none
 * (NBD without TLS); -1 with the error set. */
int client_psk_file (json_t *answer, char **path);
void client_psk_file_remove (char **path);
/* --tls-psk-file: the nbds:// uri with its identity replaced by the
 * file's first (the key used is the file's, not the hub's credential).
 * Caller frees; NULL with the error set. */
char *client_uri_identity (const char *uri, const char *psk_file);

/* ------------------------------------------------------------- tasks --- */
/* The context of (vm, repository; NULL: the VM's only one): its id into
 * *out (caller frees).  Returns an exit status (AGENT_EXIT_OK on success),
 * having told stderr why not, prefixed with prog. */
int agent_find_context (struct client *c, const char *prog, const char *vm,
                        const char *repository, char **out);
/* Poll a hub task until it is no longer running, with a bar of its steps
 * ("LABEL [###---] 1/3 STEPS") on stderr unless quiet.  *task receives its
 * last state.  Returns an exit status. */
int agent_wait_task (struct client *c, const char *prog, const char *label,
                     const char *steps, const char *task_id, bool quiet, json_t **task);

/* ---------------------------------------------------------- progress --- */

struct progress_row {
  char label[64];
  struct engine_progress p;
  _Atomic bool done;
  char summary[256];          /* printed when done (no TTY), set before done */
};

struct progress_display;
/* Start showing rows (a live bar per row on a TTY on stderr, redrawn by a
 * thread; otherwise one line per row when it is done).  quiet: print
 * nothing (--json). */
struct progress_display *progress_start (struct progress_row *rows, int n, bool quiet);
/* Mark row i done and print its line (no TTY). */
void progress_row_done (struct progress_display *d, int i);
void progress_stop (struct progress_display *d);

/* Tell the hub every 2 s how the rows' copies of backup_id go (in a
 * thread, with c's hub and token, which must outlive it; each report may
 * take 5 s at most).  NULL when it cannot start
 * (the backup goes on without).  progress_report_stop (NULL) is a no-op. */
struct progress_reporter;
struct progress_reporter *progress_report_start (struct client *c, const char *backup_id,
                                                 struct progress_row *rows, int n);
void progress_report_stop (struct progress_reporter *r);

/* "1.5 GiB" */
void progress_human (char *buf, size_t len, double bytes);

#endif
