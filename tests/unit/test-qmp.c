/* tests/unit/test-qmp.c - storage/qmp.c against a scripted QMP server.
 *
 * The test plays the server on the other end of a socketpair(2), in a
 * thread, as qemu would: greeting, capabilities, replies matched by id,
 * events in between, errors with class and desc.  Then it misbehaves the
 * ways a real peer can: a reply in pieces, a line that is not JSON, a line
 * that never ends, a close in the middle of a reply, no answer at all.
 * Each case checks what the owner of the connection would see: the value,
 * or an error saying what went wrong, in bounded time.  The server thread
 * only records what it saw; the checks run in the main thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "storage/qmp.h"
#include "util/error.h"

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7}}, " \
                 "\"capabilities\": []}}\n"
#define TIMEOUT_MS 5000

/* The server's end and what it saw. */
struct peer {
  int fd;
  json_t *cmds[8];            /* the commands it read, in order */
  int ncmds;
  pthread_t thread;
};

/* Read one line from the client and keep it as a command.  Returns it
 * (borrowed), or NULL at EOF or on a malformed line. */
static json_t *
peer_read (struct peer *p)
{
  char line[4096];
  size_t n = 0;

  while (n < sizeof line - 1) {
    ssize_t r = read (p->fd, &line[n], 1);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      return NULL;
    if (line[n++] == '\n')
      break;
  }
  line[n] = '\0';
  json_t *cmd = json_loads (line, 0, NULL);
  if (cmd == NULL || p->ncmds == (int) (sizeof p->cmds / sizeof p->cmds[0])) {
    json_decref (cmd);
    return NULL;
  }
  p->cmds[p->ncmds++] = cmd;
  return cmd;
}

/* The id of a command read, for the reply. */
static json_int_t
peer_id (json_t *cmd)
{
  return json_integer_value (json_object_get (cmd, "id"));
}

/* Write all of buf; false once the client has gone. */
static bool
peer_write (struct peer *p, const char *buf, size_t len)
{
  while (len > 0) {
    ssize_t r = send (p->fd, buf, len, MSG_NOSIGNAL);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      return false;
    buf += r;
    len -= r;
  }
  return true;
}

static void __attribute__((format (printf, 2, 3)))
peer_send (struct peer *p, const char *fmt, ...)
{
  char buf[4096];
  va_list ap;
  int n;

  va_start (ap, fmt);
  n = vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  peer_write (p, buf, n);
}

/* Read the next command and answer it with an empty return. */
static void
peer_ack (struct peer *p)
{
  json_t *cmd = peer_read (p);
  if (cmd)
    peer_send (p, "{\"return\": {}, \"id\": %" JSON_INTEGER_FORMAT "}\n",
               peer_id (cmd));
}

/* Wait until the client closes its end. */
static void
peer_wait_eof (struct peer *p)
{
  char c;
  while (read (p->fd, &c, 1) > 0 || errno == EINTR)
    ;
}

/* The name of the i-th command the server read, or NULL. */
static const char *
peer_cmd (struct peer *p, int i)
{
  return i < p->ncmds ? json_string_value (json_object_get (p->cmds[i], "execute"))
                      : NULL;
}

/* Start a case: a socketpair, the client's connection on one end and the
 * server script in a thread on the other. */
static struct qmp *
start (struct peer *p, void *(*script) (void *))
{
  int sv[2];
  struct qmp *m;

  memset (p, 0, sizeof *p);
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
    perror ("socketpair");
    exit (1);
  }
  p->fd = sv[1];
  m = qmp_new (sv[0], "test peer");
  if (m == NULL || pthread_create (&p->thread, NULL, script, p) != 0) {
    fprintf (stderr, "starting a case: %s\n", error_message ());
    exit (1);
  }
  return m;
}

/* Free the commands the server kept. */
static void
peer_clear (struct peer *p)
{
  for (int i = 0; i < p->ncmds; i++)
    json_decref (p->cmds[i]);
  p->ncmds = 0;
}

/* End a case: close the client, which lets the script finish.  What the
 * server saw stays for the checks, until peer_clear. */
static void
finish (struct peer *p, struct qmp *m)
{
  qmp_free (m);
  pthread_join (p->thread, NULL);
  close (p->fd);
}

/* ---- greeting, capabilities, a command and its return ---- */

static void *
script_basic (void *arg)
{
  struct peer *p = arg;
  json_t *cmd;

  peer_write (p, GREETING, strlen (GREETING));
  peer_ack (p);
  if ((cmd = peer_read (p)) != NULL)
    peer_send (p, "{\"return\": [{\"id\": \"exp1\", \"type\": \"nbd\"}], "
               "\"id\": %" JSON_INTEGER_FORMAT "}\n", peer_id (cmd));
  peer_ack (p);
  peer_wait_eof (p);
  return NULL;
}

static void
test_basic (void)
{
  struct peer p;
  struct qmp *m = start (&p, script_basic);
  json_t *ret = NULL;

  ok (qmp_handshake (m, TIMEOUT_MS) == 0, "greeting and qmp_capabilities");
  is_int (qmp_execute (m, "query-block-exports", NULL, TIMEOUT_MS, &ret), 0,
          "a command returns");
  is_str (json_string_value (json_object_get (json_array_get (ret, 0), "id")),
          "exp1", "its return value reaches the caller");
  json_decref (ret);
  is_int (qmp_execute (m, "blockdev-del", json_pack ("{s:s}", "node-name", "n1"),
                       TIMEOUT_MS, NULL), 0, "a command with arguments returns");
  finish (&p, m);

  is_str (peer_cmd (&p, 0), "qmp_capabilities", "the client left negotiation mode first");
  is_str (peer_cmd (&p, 1), "query-block-exports", "then sent the command");
  ok (p.ncmds >= 3 && json_object_get (p.cmds[1], "arguments") == NULL &&
      strcmp (json_string_value (json_object_get (json_object_get (p.cmds[2], "arguments"),
                                                  "node-name")) ?: "", "n1") == 0,
      "arguments are sent only when given");
  ok (p.ncmds >= 3 && peer_id (p.cmds[0]) != peer_id (p.cmds[1]) &&
      peer_id (p.cmds[1]) != peer_id (p.cmds[2]), "each command has its own id");
  peer_clear (&p);
}

/* ---- a greeting that is not QMP ---- */

static void *
script_not_qmp (void *arg)
{
  struct peer *p = arg;

  peer_send (p, "{\"hello\": \"world\"}\n");
  peer_wait_eof (p);
  return NULL;
}

static void
test_not_qmp (void)
{
  struct peer p;
  struct qmp *m = start (&p, script_not_qmp);

  int r = qmp_handshake (m, TIMEOUT_MS);

  ok (r == -1 && error_category () == ERR_UNAVAILABLE &&
      strstr (error_message (), "test peer does not speak QMP"),
      "a peer that does not greet with QMP is refused: %s", error_message ());
  finish (&p, m);
  is_int (p.ncmds, 0, "and nothing is sent to it");
}

/* ---- error replies ---- */

static void *
script_errors (void *arg)
{
  struct peer *p = arg;
  json_t *cmd;

  if ((cmd = peer_read (p)) != NULL)
    peer_send (p, "{\"error\": {\"class\": \"GenericError\", \"desc\": "
               "\"Could not open '/nope.qcow2': No such file or directory\"}, "
               "\"id\": %" JSON_INTEGER_FORMAT "}\n", peer_id (cmd));
  if ((cmd = peer_read (p)) != NULL)
    peer_send (p, "{\"error\": {\"class\": \"CommandNotFound\"}, "
               "\"id\": %" JSON_INTEGER_FORMAT "}\n", peer_id (cmd));
  /* Found by fuzz-qmp: empty strings say nothing either. */
  if ((cmd = peer_read (p)) != NULL)
    peer_send (p, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"\"}, "
               "\"id\": %" JSON_INTEGER_FORMAT "}\n", peer_id (cmd));
  if ((cmd = peer_read (p)) != NULL)
    peer_send (p, "{\"error\": {\"class\": \"\", \"desc\": \"\"}, "
               "\"id\": %" JSON_INTEGER_FORMAT "}\n", peer_id (cmd));
  peer_ack (p);
  peer_wait_eof (p);
  return NULL;
}

static void
test_errors (void)
{
  struct peer p;
  struct qmp *m = start (&p, script_errors);
  json_t *ret = json_true ();

  is_int (qmp_execute (m, "blockdev-add", NULL, TIMEOUT_MS, &ret), -1,
          "an error reply fails the command, not the connection");
  is_str (error_message (), "Could not open '/nope.qcow2': No such file or directory",
          "its desc is the message");
  is_int (error_category (), ERR_INTERNAL, "as an internal error the caller may refine");
  ok (ret == NULL, "and no return value is handed out");
  is_int (qmp_execute (m, "no-such-command", NULL, TIMEOUT_MS, NULL), -1,
          "an error with only a class fails the command");
  is_str (error_message (), "CommandNotFound", "its class is the message");
  is_int (qmp_execute (m, "blockdev-del", NULL, TIMEOUT_MS, NULL), -1,
          "an error with an empty desc fails the command");
  is_str (error_message (), "GenericError", "its class is the message");
  is_int (qmp_execute (m, "blockdev-del", NULL, TIMEOUT_MS, NULL), -1,
          "an error with an empty desc and class fails the command");
  is_str (error_message (), "QMP error", "and the message still says what it was");
  is_int (qmp_execute (m, "query-block-exports", NULL, TIMEOUT_MS, NULL), 0,
          "the connection still works after error replies");
  finish (&p, m);
  peer_clear (&p);
}

/* ---- events, stray replies, pieces ---- */

static void *
script_events (void *arg)
{
  struct peer *p = arg;
  json_t *cmd;
  char buf[512];
  int n;

  /* An event and a reply to some other id come before the reply. */
  if ((cmd = peer_read (p)) != NULL) {
    peer_send (p, "{\"event\": \"BLOCK_EXPORT_DELETED\", \"data\": {\"id\": \"exp1\"}, "
               "\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n"
               "\n"
               "{\"return\": {\"stale\": true}, \"id\": 999999}\n");
    peer_send (p, "{\"return\": {\"mine\": true}, \"id\": %" JSON_INTEGER_FORMAT "}\n",
               peer_id (cmd));
  }

  /* A reply in three writes, cut inside a key and inside a number, each
   * given time to be read on its own. */
  if ((cmd = peer_read (p)) != NULL) {
    struct timespec gap = { 0, 20 * 1000000L };
    n = snprintf (buf, sizeof buf, "{\"return\": {\"size\": 1048576}, "
                  "\"id\": %" JSON_INTEGER_FORMAT "}\n", peer_id (cmd));
    peer_write (p, buf, 7);
    nanosleep (&gap, NULL);
    peer_write (p, buf + 7, 20);
    nanosleep (&gap, NULL);
    peer_write (p, buf + 27, n - 27);
  }

  /* Two replies' worth in one write: an event, then ours, then the start
   * of the next event, which must wait in the buffer. */
  if ((cmd = peer_read (p)) != NULL) {
    peer_send (p, "{\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"id\": \"j\"}}\n"
               "{\"return\": 7, \"id\": %" JSON_INTEGER_FORMAT "}\n"
               "{\"event\": \"SHUT", peer_id (cmd));
    peer_send (p, "DOWN\"}\n");
  }
  if ((cmd = peer_read (p)) != NULL)
    peer_send (p, "{\"return\": {}, \"id\": %" JSON_INTEGER_FORMAT "}\n", peer_id (cmd));
  peer_wait_eof (p);
  return NULL;
}

struct seen {
  char names[8][64];
  char data_id[64];
  int n;
};

static void
on_event (const char *name, json_t *data, void *opaque)
{
  struct seen *s = opaque;
  const char *id = json_string_value (json_object_get (data, "id"));

  if (s->n < 8)
    snprintf (s->names[s->n++], sizeof s->names[0], "%s", name);
  if (id && s->data_id[0] == '\0')
    snprintf (s->data_id, sizeof s->data_id, "%s", id);
}

static void
test_events (void)
{
  struct peer p;
  struct qmp *m = start (&p, script_events);
  struct seen seen = { .n = 0 };
  json_t *ret = NULL;

  qmp_set_event_handler (m, on_event, &seen);
  is_int (qmp_execute (m, "block-export-del", NULL, TIMEOUT_MS, &ret), 0,
          "a command whose reply follows an event returns");
  ok (json_is_true (json_object_get (ret, "mine")),
      "with its own reply, not one to another id");
  json_decref (ret);
  ok (seen.n == 1 && strcmp (seen.names[0], "BLOCK_EXPORT_DELETED") == 0 &&
      strcmp (seen.data_id, "exp1") == 0,
      "the event reached the handler with its data");

  ret = NULL;
  is_int (qmp_execute (m, "query-block-node", NULL, TIMEOUT_MS, &ret), 0,
          "a reply split across three writes is read whole");
  is_int (json_integer_value (json_object_get (ret, "size")), 1048576,
          "and parsed right");
  json_decref (ret);

  ret = NULL;
  is_int (qmp_execute (m, "x-count", NULL, TIMEOUT_MS, &ret), 0,
          "a reply sharing one write with events returns");
  is_int (json_integer_value (ret), 7, "with its value");
  json_decref (ret);
  is_int (qmp_execute (m, "x-last", NULL, TIMEOUT_MS, NULL), 0,
          "the rest of that write is kept for the next command");
  ok (seen.n == 3 && strcmp (seen.names[1], "JOB_STATUS_CHANGE") == 0 &&
      strcmp (seen.names[2], "SHUTDOWN") == 0,
      "every event arrives, in order, the one cut in two included");
  finish (&p, m);
  peer_clear (&p);
}

/* ---- a broken stream ---- */

/* The line script_say answers the command with. */
static const char *say_line;

static void *
script_say (void *arg)
{
  struct peer *p = arg;

  if (peer_read (p))
    peer_send (p, "%s", say_line);
  peer_wait_eof (p);
  return NULL;
}

/* A line that never ends: more than QMP_MSG_MAX bytes without a newline.
 * The client gives up and closes, which ends the writes. */
static void *
script_oversized (void *arg)
{
  struct peer *p = arg;
  static char chunk[65536];
  size_t sent = 0;

  memset (chunk, 'x', sizeof chunk);
  if (peer_read (p)) {
    peer_send (p, "{\"return\": \"");
    while (sent <= QMP_MSG_MAX && peer_write (p, chunk, sizeof chunk))
      sent += sizeof chunk;
  }
  peer_wait_eof (p);
  return NULL;
}

static void *
script_close_mid_reply (void *arg)
{
  struct peer *p = arg;
  json_t *cmd = peer_read (p);

  if (cmd)
    peer_send (p, "{\"return\": {\"id\": \"exp1\"}, \"i");
  shutdown (p->fd, SHUT_RDWR);
  return NULL;
}

static void *
script_silent (void *arg)
{
  struct peer *p = arg;

  peer_read (p);
  peer_wait_eof (p);
  return NULL;
}

/* Run cmd against a server that breaks the stream; the command must fail
 * as a transport failure with a message containing want, well within the
 * timeout (or, for the silent server, at it), and leave the connection
 * refusing further commands. */
static void
broken_case (const char *what, void *(*script) (void *), int timeout_ms,
             const char *want)
{
  struct peer p;
  struct qmp *m = start (&p, script);
  json_t *ret = json_true ();
  struct timespec t0, t1;
  int64_t took;
  int r;

  clock_gettime (CLOCK_MONOTONIC, &t0);
  r = qmp_execute (m, "query-block-exports", NULL, timeout_ms, &ret);
  clock_gettime (CLOCK_MONOTONIC, &t1);
  took = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
  is_int (r, -2, "%s: a transport failure", what);
  ok (error_category () == ERR_UNAVAILABLE && strstr (error_message (), want),
      "%s: the error says so: %s", what, error_message ());
  ok (ret == NULL, "%s: no return value is handed out", what);
  if (timeout_ms < TIMEOUT_MS)
    ok (took >= timeout_ms - 10 && took < timeout_ms + 2000,
        "%s: it took the timeout (%" PRId64 " ms)", what, took);
  else
    ok (took < TIMEOUT_MS / 2, "%s: no wait for the timeout (%" PRId64 " ms)",
        what, took);
  r = qmp_execute (m, "query-block-exports", json_object (), timeout_ms, NULL);
  ok (r == -2 && strstr (error_message (), "broken"),
      "%s: later commands fail at once: %s", what, error_message ());
  finish (&p, m);
  is_int (p.ncmds, 1, "%s: and are not sent", what);
  peer_clear (&p);
}

static void
test_broken (void)
{
  say_line = "this is not json\n";
  broken_case ("a line that is not JSON", script_say, TIMEOUT_MS, "malformed");
  say_line = "[1, 2, 3]\n";
  broken_case ("a line that is not an object", script_say, TIMEOUT_MS, "malformed");
  broken_case ("a line longer than QMP_MSG_MAX", script_oversized, TIMEOUT_MS,
               "longer than");
  broken_case ("the peer closing mid-reply", script_close_mid_reply, TIMEOUT_MS,
               "closed its QMP socket");
  broken_case ("no reply", script_silent, 200, "did not answer query-block-exports");
}

/* ---- connecting by path ---- */

struct listener {
  int fd;
  struct peer peer;
};

static void *
script_accept (void *arg)
{
  struct listener *l = arg;

  l->peer.fd = accept (l->fd, NULL, NULL);
  if (l->peer.fd >= 0) {
    peer_write (&l->peer, GREETING, strlen (GREETING));
    peer_ack (&l->peer);
    peer_wait_eof (&l->peer);
    close (l->peer.fd);
  }
  return NULL;
}

static void
test_connect (void)
{
  char dir[] = "/tmp/test-qmp.XXXXXX", path[64];
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct listener l = { .fd = -1 };
  pthread_t t;
  struct qmp *m;

  if (mkdtemp (dir) == NULL) {
    perror ("mkdtemp");
    exit (1);
  }
  snprintf (path, sizeof path, "%s/qmp.sock", dir);
  m = qmp_connect (path, "test peer");
  ok (m == NULL && error_errno () == ENOENT,
      "connecting where nothing listens fails with ENOENT, for a retry: %s",
      error_message ());

  snprintf (sun.sun_path, sizeof sun.sun_path, "%s", path);
  l.fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l.fd == -1 || bind (l.fd, (struct sockaddr *) &sun, sizeof sun) == -1 ||
      listen (l.fd, 1) == -1 || pthread_create (&t, NULL, script_accept, &l) != 0) {
    perror ("listening");
    exit (1);
  }
  m = qmp_connect (path, "test peer");
  ok (m != NULL && qmp_handshake (m, TIMEOUT_MS) == 0,
      "connect by path and negotiate");
  qmp_free (m);
  pthread_join (t, NULL);
  is_str (peer_cmd (&l.peer, 0), "qmp_capabilities", "the server saw the client");
  peer_clear (&l.peer);
  close (l.fd);
  unlink (path);
  rmdir (dir);
  qmp_free (NULL);
  ok (true, "qmp_free (NULL) is a no-op");
}

int
main (void)
{
  test_basic ();
  test_not_qmp ();
  test_errors ();
  test_events ();
  test_broken ();
  test_connect ();
  return done_testing ();
}
