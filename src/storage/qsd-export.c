/* storage/qsd-export.c - the daemon's NBD server and its exports.
 *
 * Everything the hub asks of the qemu-storage-daemon once it runs: start
 * the NBD server (with the TLS-PSK credentials when configured), open an
 * image as a block node and export it, and take an export down again,
 * which flushes and closes its image.  All of it is QMP over the connection
 * that qsd.c keeps; every public call here first waits for the daemon to be
 * up (qsd_acquire) and holds qmp_lock for its whole conversation.
 *
 * The export map, name -> node, is what this daemon exports now.  It is
 * only ever changed together with the daemon, so it is the truth as long as
 * the daemon runs; when the daemon dies it is emptied, since the exports
 * died with it, and the restart callback adds them again.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "storage/qsd-int.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

/* "host:port", with brackets around an IPv6 host, into buf. */
const char *
qsd_addr (const struct qsd *q, char *buf, size_t len)
{
  snprintf (buf, len, strchr (q->nbd_host, ':') ? "[%s]:%d" : "%s:%d",
            q->nbd_host, q->nbd_port);
  return buf;
}

/* ---- the export map (qmp_lock held) ---- */

/* The entry for name, or NULL.  The map keeps ownership. */
static struct qsd_export *
qsd_export_find (struct qsd *q, const char *name)
{
  for (struct qsd_export *e = q->exports; e; e = e->next)
    if (strcmp (e->name, name) == 0)
      return e;
  return NULL;
}

static void
qsd_export_free (struct qsd_export *e)
{
  if (e) {
    free (e->name);
    free (e->node);
    free (e->path);
    free (e);
  }
}

/* Take e out of the map and free it. */
static void
qsd_export_unlink (struct qsd *q, struct qsd_export *e)
{
  for (struct qsd_export **p = &q->exports; *p; p = &(*p)->next)
    if (*p == e) {
      *p = e->next;
      qsd_export_free (e);
      return;
    }
}

/* Forget every export: the daemon that held them is gone. */
void
qsd_exports_clear (struct qsd *q)
{
  while (q->exports) {
    struct qsd_export *e = q->exports;
    q->exports = e->next;
    qsd_export_free (e);
  }
}

/* ---- the NBD server ---- */

/* Open the NBD listening socket (q->nbd_fd) that every daemon the hub
 * spawns serves on (--nbd-server addr.type=fd): the hub binds it once, so a
 * restarted daemon never races anyone for the port, and sets TCP_NODELAY on
 * it, which the connections it accepts inherit.  qemu's NBD server over TLS
 * sends each reply as separate records without corking them, and with
 * Nagle's algorithm on, the tail of each waited for the client's delayed
 * acknowledgement: some 40 ms per request (a 128 MiB read with 256 KiB
 * requests took 29 s instead of 5 s).  Returns 0 or -1 with the error
 * set (ERR_CONFLICT when the port is taken). */
int
qsd_listen (struct qsd *q)
{
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE };
  struct addrinfo *ai = NULL;
  char addr[300], port[16];
  int one = 1, fd, rc;

  snprintf (port, sizeof port, "%d", q->nbd_port);
  rc = getaddrinfo (q->nbd_host, port, &hints, &ai);
  if (rc != 0) {
    error_set (ERR_INVALID, "NBD address %s: %s", qsd_addr (q, addr, sizeof addr),
               gai_strerror (rc));
    return -1;
  }
  fd = socket (ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 ||
      setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1 ||
      (ai->ai_family == AF_INET6 &&
       setsockopt (fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == -1) ||
      setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1 ||
      bind (fd, ai->ai_addr, ai->ai_addrlen) == -1 || listen (fd, SOMAXCONN) == -1) {
    int e = errno;
    if (e == EADDRINUSE)
      error_set (ERR_CONFLICT, "NBD port %s is in use", qsd_addr (q, addr, sizeof addr));
    else
      error_set_errno (ERR_INTERNAL, e, "listening for NBD on %s",
                       qsd_addr (q, addr, sizeof addr));
    if (fd != -1)
      close (fd);
    freeaddrinfo (ai);
    return -1;
  }
  freeaddrinfo (ai);
  q->nbd_fd = fd;
  return 0;
}

/* ---- exports ---- */

/* Export names reach QMP and NBD clients: only id characters. */
static int
qsd_check_name (const char *name)
{
  if (!id_valid (name)) {
    error_set (ERR_INVALID, "invalid NBD export name");
    return -1;
  }
  return 0;
}

/* The body of qsd_export_add, with qmp_lock held.  Returns 0, -1 with the
 * error set, or -2 when the daemon was declared broken along the way. */
static int
qsd_export_add_locked (struct qsd *q, const char *name, const char *path,
                       bool writable)
{
  char node[32];
  struct qsd_export *e;
  json_t *args;
  int r;

  if ((e = qsd_export_find (q, name)) != NULL) {
    if (strcmp (e->path, path) == 0 && e->writable == writable)
      return 0;
    error_set (ERR_CONFLICT, "export %s already exists for %s (%s)", name,
               e->path, e->writable ? "writable" : "read-only");
    return -1;
  }

  /* Node names are at most 31 characters and start with a letter, so they
   * can't be derived from the export name; a counter never repeats. */
  snprintf (node, sizeof node, "n%" PRIu64, ++q->next_node);
  /* Allocate the record first: once the daemon exports, nothing may fail. */
  e = calloc (1, sizeof *e);
  if (e == NULL || (e->name = strdup (name)) == NULL ||
      (e->node = strdup (node)) == NULL || (e->path = strdup (path)) == NULL) {
    qsd_export_free (e);
    error_set_errno (ERR_INTERNAL, ENOMEM, "qsd_export_add");
    return -1;
  }
  e->writable = writable;

  args = json_pack ("{s:s, s:s, s:{s:s, s:s}, s:b}",
                    "driver", "qcow2", "node-name", node,
                    "file", "driver", "file", "filename", path,
                    "read-only", !writable);
  r = qsd_qmp (q, "blockdev-add", args, NULL);
  if (r == -1) {
    struct error_saved err;
    struct stat st;
    error_save (&err);
    err.cat = stat (path, &st) == -1 && errno == ENOENT ? ERR_NOT_FOUND
                                                         : ERR_INTERNAL;
    error_set (err.cat, "cannot open image %s: %s", path, err.msg);
  }
  if (r != 0) {
    qsd_export_free (e);
    return r;
  }

  args = json_pack ("{s:s, s:s, s:s, s:s, s:b}", "type", "nbd", "id", name,
                    "node-name", node, "name", name, "writable", writable);
  r = qsd_qmp (q, "block-export-add", args, NULL);
  if (r == -1) {
    struct error_saved err;
    error_prefix ("exporting %s", path);
    error_save (&err);
    /* Don't leave the image open in the daemon. */
    if (qsd_qmp (q, "blockdev-del", json_pack ("{s:s}", "node-name", node),
                 NULL) == -1)
      log_warn ("blockdev-del %s after a failed export: %s", node,
                error_message ());
    error_restore (&err);
  }
  if (r != 0) {
    qsd_export_free (e);
    return r;
  }

  e->next = q->exports;
  q->exports = e;
  log_debug ("exported %s as %s (%s, node %s)", path, name,
             writable ? "writable" : "read-only", node);
  return 0;
}

int
qsd_export_add (struct qsd *q, const char *name, const char *path,
                bool writable)
{
  int64_t deadline = clock_mono_ms () + QSD_WAIT_UP_MS;
  int r;

  if (qsd_check_name (name) == -1)
    return -1;
  if (path == NULL || path[0] != '/') {
    error_set (ERR_INVALID, "export %s: the image path must be absolute",
               name);
    return -1;
  }
  /* A daemon that dies under us is restarted with nothing exported, so the
   * add can simply be tried again on the new one. */
  do {
    if (qsd_acquire (q, false, deadline) == -1)
      return -1;
    r = qsd_export_add_locked (q, name, path, writable);
    pthread_mutex_unlock (&q->qmp_lock);
  } while (r == -2 && !pthread_equal (pthread_self (), q->thread) &&
           clock_mono_ms () < deadline);
  return r == 0 ? 0 : -1;
}

/* True when query-block-exports still lists id (including one that is
 * shutting down).  qmp_lock held.  Returns 1, 0, or -1/-2 as
 * qsd_qmp. */
static int
qsd_export_listed (struct qsd *q, const char *id)
{
  CLEANUP_JSON json_t *list = NULL;
  size_t i;
  json_t *v;
  int r = qsd_qmp (q, "query-block-exports", NULL, &list);

  if (r != 0)
    return r;
  json_array_foreach (list, i, v) {
    const char *s = json_string_value (json_object_get (v, "id"));
    if (s && strcmp (s, id) == 0)
      return 1;
  }
  return 0;
}

/* The body of qsd_export_remove, with qmp_lock held.  Returns 0, -1 with
 * the error set, or -2 when the daemon was declared broken (and is being
 * killed) along the way. */
static int
qsd_export_remove_locked (struct qsd *q, const char *name)
{
  struct qsd_export *e = qsd_export_find (q, name);
  int64_t deadline;
  int r;

  if (e == NULL)
    return 0;

  /* "hard" drops connected clients instead of waiting for them. */
  r = qsd_qmp (q, "block-export-del",
                   json_pack ("{s:s, s:s}", "id", name, "mode", "hard"), NULL);
  if (r == -1 && qsd_export_listed (q, name) == 1) {
    error_prefix ("removing export %s", name);
    return -1;
  }
  /* Deletion completes asynchronously, once in-flight requests drain. */
  deadline = clock_mono_ms () + QSD_EXPORT_DEL_MS;
  while (r != -2 && (r = qsd_export_listed (q, name)) == 1) {
    if (clock_mono_ms () > deadline) {
      error_set (ERR_INTERNAL, "export %s is still shutting down after %d s",
                 name, QSD_EXPORT_DEL_MS / 1000);
      return -1;
    }
    qsd_sleep_ms (10);
  }
  if (r == -2)
    return -2;
  /* Closing the node flushes the image; only then is the backup on disk. */
  r = qsd_qmp (q, "blockdev-del",
                   json_pack ("{s:s}", "node-name", e->node), NULL);
  if (r == -1)
    error_prefix ("closing the image of export %s", name);
  if (r != 0)
    return r;
  qsd_export_unlink (q, e);
  log_debug ("removed export %s", name);
  return 0;
}

int
qsd_export_remove (struct qsd *q, const char *name)
{
  uint64_t gen;
  int r;

  if (qsd_check_name (name) == -1)
    return -1;
  r = qsd_acquire (q, true, clock_mono_ms () + QSD_WAIT_UP_MS);
  if (r != 0)
    return r == 1 ? 0 : -1;
  {
    SCOPED_LOCK (&q->state_lock);
    gen = q->up_gen;
  }
  r = qsd_export_remove_locked (q, name);
  pthread_mutex_unlock (&q->qmp_lock);
  if (r != -2)
    return r;

  /* The daemon is being killed, and its exit closes the image.  Wait for
   * that (without qmp_lock, which the supervisor needs to reap it). */
  if (!qsd_wait_reaped (q, gen)) {
    error_set (ERR_UNAVAILABLE, "removing export %s: " QSD_PROGRAM
               " does not exit", name);
    return -1;
  }
  return 0;
}

bool
qsd_export_exists (struct qsd *q, const char *name)
{
  bool ret;

  if (name == NULL ||
      qsd_acquire (q, false, clock_mono_ms () + QSD_WAIT_UP_MS) == -1)
    return false;
  ret = qsd_export_find (q, name) != NULL;
  pthread_mutex_unlock (&q->qmp_lock);
  return ret;
}

