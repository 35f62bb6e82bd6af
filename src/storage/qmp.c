/* storage/qmp.c - a QMP client connection: framing, ids, events.
 *
 * QMP is one JSON object per line in each direction.  The server speaks
 * first with a greeting ({"QMP": ...}); the client sends qmp_capabilities,
 * then commands {"execute", "arguments", "id"}.  Each reply carries the
 * command's id back with either "return" or "error" {"class", "desc"};
 * events {"event", "data", "timestamp"} may arrive at any time, also
 * between a command and its reply.
 *
 * The socket is non-blocking and every wait is a poll with a deadline, so a
 * peer that stops answering costs at most the caller's timeout.  Anything
 * that makes the byte stream untrustworthy (EOF, a line that is not a JSON
 * object, a line longer than QMP_MSG_MAX, a reply that is neither return
 * nor error, a timeout after which a late reply may still come) marks the
 * connection broken; from then on every command fails at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "storage/qmp.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/log.h"

struct qmp {
  int fd;
  char *peer;                 /* for messages */
  char *rbuf;                 /* bytes read but not yet parsed */
  size_t rlen, rcap;
  size_t scanned;             /* rbuf[0..scanned) holds no newline */
  uint64_t next_id;
  bool broken;
  qmp_event_fn on_event;
  void *event_opaque;
};

struct qmp *
qmp_new (int fd, const char *peer)
{
  struct qmp *m;
  int fl = fcntl (fd, F_GETFL);

  if (fl == -1 || fcntl (fd, F_SETFL, fl | O_NONBLOCK) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "qmp_new: fcntl");
    close (fd);
    return NULL;
  }
  m = calloc (1, sizeof *m);
  if (m == NULL || (m->peer = strdup (peer ? peer : "QMP peer")) == NULL) {
    free (m);
    close (fd);
    error_set_errno (ERR_INTERNAL, ENOMEM, "qmp_new");
    return NULL;
  }
  m->fd = fd;
  return m;
}

struct qmp *
qmp_connect (const char *path, const char *peer)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd;

  if (strlen (path) >= sizeof sun.sun_path) {
    error_set (ERR_INVALID, "QMP socket path %s is too long", path);
    return NULL;
  }
  memcpy (sun.sun_path, path, strlen (path) + 1);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    error_set_errno (ERR_INTERNAL, errno, "socket");
    return NULL;
  }
  if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1) {
    int e = errno;
    close (fd);
    error_set_errno (ERR_UNAVAILABLE, e, "connect %s", path);
    return NULL;
  }
  return qmp_new (fd, peer);
}

void
qmp_free (struct qmp *m)
{
  if (m == NULL)
    return;
  close (m->fd);
  free (m->rbuf);
  free (m->peer);
  free (m);
}

void
qmp_set_event_handler (struct qmp *m, qmp_event_fn fn, void *opaque)
{
  m->on_event = fn;
  m->event_opaque = opaque;
}

/* Mark the stream untrustworthy; the caller has set the error. */
static int
qmp_break (struct qmp *m)
{
  m->broken = true;
  return -2;
}

/* Read one message (a JSON object on one line) before deadline_ms; what
 * names the awaited answer for the timeout message.  Returns a new
 * reference, or NULL with ERR_UNAVAILABLE set (the caller breaks the
 * connection). */
static json_t *
qmp_read (struct qmp *m, int64_t deadline_ms, int timeout_ms, const char *what)
{
  for (;;) {
    char *nl = m->rlen > m->scanned
               ? memchr (m->rbuf + m->scanned, '\n', m->rlen - m->scanned) : NULL;
    m->scanned = m->rlen;
    if (nl) {
      size_t n = nl - m->rbuf + 1;
      size_t skip = strspn (m->rbuf, " \t\r");
      json_error_t jerr;
      json_t *msg = NULL;
      bool blank = m->rbuf + skip >= nl;

      if (!blank)
        msg = json_loadb (m->rbuf, n, 0, &jerr);
      memmove (m->rbuf, m->rbuf + n, m->rlen - n);
      m->rlen -= n;
      m->scanned = 0;
      if (blank)
        continue;
      if (msg == NULL || !json_is_object (msg)) {
        json_decref (msg);
        error_set (ERR_UNAVAILABLE, "malformed QMP message from %s", m->peer);
        return NULL;
      }
      return msg;
    }

    if (m->rlen == m->rcap) {
      size_t cap = m->rcap ? m->rcap * 2 : 4096;
      char *p;
      if (cap > QMP_MSG_MAX) {
        error_set (ERR_UNAVAILABLE, "QMP message from %s is longer than %d "
                   "bytes", m->peer, QMP_MSG_MAX);
        return NULL;
      }
      p = realloc (m->rbuf, cap);
      if (p == NULL) {
        error_set_errno (ERR_INTERNAL, errno, "realloc");
        return NULL;
      }
      m->rbuf = p;
      m->rcap = cap;
    }

    int64_t left = deadline_ms - clock_mono_ms ();
    struct pollfd pfd = { .fd = m->fd, .events = POLLIN };
    int r = left > 0 ? poll (&pfd, 1, (int) left) : 0;
    if (r == -1) {
      if (errno == EINTR)
        continue;
      error_set_errno (ERR_UNAVAILABLE, errno, "poll on the QMP socket");
      return NULL;
    }
    if (r == 0) {
      error_set (ERR_UNAVAILABLE, "%s did not answer %s within %d ms",
                 m->peer, what, timeout_ms);
      return NULL;
    }
    ssize_t got = read (m->fd, m->rbuf + m->rlen, m->rcap - m->rlen);
    if (got == -1) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      error_set_errno (ERR_UNAVAILABLE, errno, "reading from %s's QMP socket",
                       m->peer);
      return NULL;
    }
    if (got == 0) {
      error_set (ERR_UNAVAILABLE, "%s closed its QMP socket (it is exiting)",
                 m->peer);
      return NULL;
    }
    m->rlen += got;
  }
}

/* Write all of buf before deadline_ms.  Returns 0, or -1 with
 * ERR_UNAVAILABLE set. */
static int
qmp_write (struct qmp *m, const char *buf, size_t len, int64_t deadline_ms)
{
  while (len > 0) {
    ssize_t r = send (m->fd, buf, len, MSG_NOSIGNAL);
    if (r >= 0) {
      buf += r;
      len -= r;
      continue;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN) {
      error_set_errno (ERR_UNAVAILABLE, errno, "writing to %s's QMP socket",
                       m->peer);
      return -1;
    }
    int64_t left = deadline_ms - clock_mono_ms ();
    struct pollfd pfd = { .fd = m->fd, .events = POLLOUT };
    if (left <= 0 || poll (&pfd, 1, (int) left) == 0) {
      error_set (ERR_UNAVAILABLE, "%s is not reading its QMP socket", m->peer);
      return -1;
    }
  }
  return 0;
}

/* Hand an event to the handler, or just log it. */
static void
qmp_event (struct qmp *m, json_t *msg, json_t *name)
{
  const char *s = json_string_value (name) ?: "?";

  log_debug ("qmp event %s", s);
  if (m->on_event)
    m->on_event (s, json_object_get (msg, "data"), m->event_opaque);
}

int
qmp_handshake (struct qmp *m, int timeout_ms)
{
  CLEANUP_JSON json_t *greeting = NULL;

  if (m->broken) {
    error_set (ERR_UNAVAILABLE, "the QMP connection to %s is broken", m->peer);
    return -1;
  }
  greeting = qmp_read (m, clock_mono_ms () + timeout_ms, timeout_ms,
                       "the connection");
  if (greeting == NULL) {
    qmp_break (m);
    return -1;
  }
  if (json_object_get (greeting, "QMP") == NULL) {
    error_set (ERR_UNAVAILABLE, "%s does not speak QMP", m->peer);
    qmp_break (m);
    return -1;
  }
  if (qmp_execute (m, "qmp_capabilities", NULL, timeout_ms, NULL) != 0) {
    error_prefix ("qmp_capabilities");
    return -1;
  }
  return 0;
}

int
qmp_execute (struct qmp *m, const char *cmd, json_t *args, int timeout_ms,
             json_t **ret)
{
  CLEANUP_JSON json_t *req = NULL;
  CLEANUP_FREE char *text = NULL;
  uint64_t id = ++m->next_id;
  int64_t deadline = clock_mono_ms () + timeout_ms;

  if (ret)
    *ret = NULL;
  if (m->broken) {
    json_decref (args);
    error_set (ERR_UNAVAILABLE, "the QMP connection to %s is broken", m->peer);
    return -2;
  }
  req = json_pack ("{s:s, s:I}", "execute", cmd, "id", (json_int_t) id);
  if (req == NULL || (args && json_object_set_new (req, "arguments", args))) {
    if (req == NULL)
      json_decref (args);
    error_set (ERR_INTERNAL, "building the QMP command %s", cmd);
    return -1;
  }
  text = json_dumps (req, JSON_COMPACT);
  if (text == NULL) {
    error_set (ERR_INTERNAL, "serialising the QMP command %s", cmd);
    return -1;
  }
  log_debug ("qmp> %s", text);
  if (qmp_write (m, text, strlen (text), deadline) == -1 ||
      qmp_write (m, "\n", 1, deadline) == -1)
    return qmp_break (m);

  for (;;) {
    CLEANUP_JSON json_t *msg = qmp_read (m, deadline, timeout_ms, cmd);
    json_t *v;

    if (msg == NULL)
      return qmp_break (m);
    if ((v = json_object_get (msg, "event")) != NULL) {
      qmp_event (m, msg, v);
      continue;
    }
    v = json_object_get (msg, "id");
    if (!json_is_integer (v) || (uint64_t) json_integer_value (v) != id)
      continue;                 /* not a reply to this command */
    if ((v = json_object_get (msg, "return")) != NULL) {
      if (ret)
        *ret = json_incref (v);
      return 0;
    }
    if ((v = json_object_get (msg, "error")) != NULL) {
      const char *desc = json_string_value (json_object_get (v, "desc"));
      const char *cls = json_string_value (json_object_get (v, "class"));
      /* An empty string says no more than a missing one. */
      if (desc && *desc == '\0')
        desc = NULL;
      if (cls && *cls == '\0')
        cls = NULL;
      error_set (ERR_INTERNAL, "%s", desc ? desc : cls ? cls : "QMP error");
      log_debug ("qmp< error %s: %s", cls ?: "?", desc ?: "?");
      return -1;
    }
    error_set (ERR_UNAVAILABLE, "unexpected QMP reply from %s to %s",
               m->peer, cmd);
    return qmp_break (m);
  }
}
