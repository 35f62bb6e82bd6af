/* storage/qsd.c - the hub's qemu-storage-daemon: spawn, supervise, QMP.
 *
 * THREADS AND LOCKING
 *
 * qsd_start creates one supervisor thread that lives until qsd_stop.  It is
 * the only thread that forks the daemon, and it waits for that one pid
 * (never for -1: other modules reap their own qemu-img children).  Because
 * the child asks for PR_SET_PDEATHSIG, which fires when the *forking thread*
 * exits, forking from a long-lived thread is what guarantees that the daemon
 * dies with the hub and never before it.
 *
 * Two mutexes, always taken in this order when both are needed:
 *
 *   qmp_lock    serialises QMP conversations: the socket, its read buffer,
 *               the command id counter and the export map.  A command holds
 *               it from sending the request until the reply is read.
 *   state_lock  the process state (pid, up, stopping, generations) and
 *               state_cond, which is broadcast whenever that state changes.
 *               It is never held across blocking I/O, so qsd_pid and the
 *               waiters in qsd_acquire never wait for a slow daemon.
 *
 * A pid is cleared only under state_lock, in the same critical section that
 * reaps it (waitid(WNOWAIT) first waits without reaping), so kill() under
 * state_lock can never hit a recycled pid.
 *
 * The daemon is "up" once QMP is connected and the NBD server listens.  Any
 * QMP transport failure (EOF, a malformed message, or no reply within
 * QMP_TIMEOUT_MS) declares it broken: the socket is closed, the export map
 * cleared and the daemon SIGKILLed.  A wedged daemon stalls every NBD client
 * too, because QMP and NBD share its main loop, so a restart is the only
 * useful recovery; it also avoids guessing what a command that timed out did.
 * The supervisor then reaps it, restarts it with backoff, and calls the
 * restart callback, which re-adds the exports.
 *
 * Generations: each spawn gets a number.  up_gen is the daemon that last
 * came up (the only one that can hold exports), reaped_gen the last one
 * reaped.  reaped_gen >= up_gen means every image ever exported is closed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "storage/qsd.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

#define QSD_PROGRAM "qemu-storage-daemon"
#define QMP_TIMEOUT_MS 30000        /* a command's reply */
#define QSD_STARTUP_MS 10000        /* from fork to a connected QMP socket */
#define QSD_WAIT_UP_MS 10000        /* API calls wait this long for a restart */
#define QSD_EXPORT_DEL_MS 10000     /* an export's asynchronous deletion */
#define QSD_TERM_MS 5000            /* SIGTERM to SIGKILL in qsd_stop */
#define QSD_LEFTOVER_MS 5000        /* a leftover daemon to disappear */
#define QSD_BACKOFF_MIN_MS 100
#define QSD_BACKOFF_MAX_MS 5000
#define QSD_STABLE_MS 10000         /* up this long resets the backoff */
#define QMP_MSG_MAX (16 * 1024 * 1024)

struct qsd_export {
  struct qsd_export *next;
  char *name;                 /* NBD export name, also the block export id */
  char *node;                 /* block node name in the daemon */
  char *path;
  bool writable;
};

struct qsd {
  /* Set by qsd_start, then read-only. */
  char *run_dir, *nbd_host, *sock_path, *pid_path, *log_path;
  char *chardev_arg;
  char *tls_arg;              /* --object for the PSK credentials, or NULL */
  int nbd_port;
  qsd_restart_fn on_restart;
  void *opaque;
  pthread_t thread;
  int max_fd;

  /* Protected by qmp_lock. */
  pthread_mutex_t qmp_lock;
  int qmp_fd;
  char *rbuf;
  size_t rlen, rcap;
  uint64_t next_cmd_id;
  uint64_t next_node;
  int qmp_timeout_ms;
  struct qsd_export *exports;

  /* Protected by state_lock. */
  pthread_mutex_t state_lock;
  pthread_cond_t state_cond;
  pid_t pid;                  /* our child until it is reaped, else 0 */
  bool up;
  bool stopping;
  bool thread_done;
  uint64_t spawn_gen, up_gen, reaped_gen;
  bool started;               /* the first launch finished ... */
  int start_rc;               /* ... with this result */
  enum error_category start_cat;
  char start_msg[1024];
};

/* Milliseconds on the monotonic clock. */
static int64_t
qsd_now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait on state_cond (state_lock held) until deadline_ms on the monotonic
 * clock.  Returns ETIMEDOUT once the deadline has passed, else 0. */
static int
qsd_cond_wait_until (struct qsd *q, int64_t deadline_ms)
{
  struct timespec ts;
  if (qsd_now_ms () >= deadline_ms)
    return ETIMEDOUT;
  ts.tv_sec = deadline_ms / 1000;
  ts.tv_nsec = (deadline_ms % 1000) * 1000000;
  return pthread_cond_timedwait (&q->state_cond, &q->state_lock, &ts);
}

/* Sleep the whole of ms even when a signal interrupts. */
static void
qsd_sleep_ms (int ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* "host:port", with brackets around an IPv6 host, into buf. */
static const char *
qsd_addr (const struct qsd *q, char *buf, size_t len)
{
  snprintf (buf, len, strchr (q->nbd_host, ':') ? "[%s]:%d" : "%s:%d",
            q->nbd_host, q->nbd_port);
  return buf;
}

/* The calling thread's error, saved so that the QMP commands of a cleanup
 * path can't clobber it. */
struct qsd_saved_error {
  enum error_category cat;
  char msg[1024];
};

static void
qsd_save_error (struct qsd_saved_error *s)
{
  s->cat = error_category ();
  snprintf (s->msg, sizeof s->msg, "%s", error_message ());
}

static void
qsd_restore_error (const struct qsd_saved_error *s)
{
  error_set (s->cat, "%s", s->msg);
}

/* ---- the export map (qmp_lock held) ----
 *
 * What this daemon exports now, name -> node.  It is only ever changed
 * together with the daemon, so it is the truth as long as the daemon runs;
 * when the daemon dies it is emptied, since the exports died with it. */

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

static void
qsd_exports_clear (struct qsd *q)
{
  while (q->exports) {
    struct qsd_export *e = q->exports;
    q->exports = e->next;
    qsd_export_free (e);
  }
}

/* ---- QMP (qmp_lock held) ---- */

/* Drop the QMP connection and forget the exports, with nothing else.  The
 * supervisor uses this once the daemon is reaped. */
static void
qmp_disconnect (struct qsd *q)
{
  if (q->qmp_fd >= 0)
    close (q->qmp_fd);
  q->qmp_fd = -1;
  q->rlen = 0;
  qsd_exports_clear (q);
}

/* The QMP stream can't be trusted any more: disconnect, mark the daemon
 * down and SIGKILL it so that the supervisor restarts it from a known
 * state.  The caller's error stays set. */
static void
qmp_broken (struct qsd *q)
{
  qmp_disconnect (q);
  SCOPED_LOCK (&q->state_lock);
  if (q->pid > 0) {
    log_warn (QSD_PROGRAM " (pid %d): %s; killing it so that it restarts",
              (int) q->pid, error_message ());
    kill (q->pid, SIGKILL);
  }
  q->up = false;
  pthread_cond_broadcast (&q->state_cond);
}

/* Read one QMP message (a JSON object on one line) before deadline_ms.
 * Returns a new reference, or NULL with ERR_UNAVAILABLE set. */
static json_t *
qmp_read (struct qsd *q, int64_t deadline_ms, const char *what)
{
  for (;;) {
    char *nl = q->rlen ? memchr (q->rbuf, '\n', q->rlen) : NULL;
    if (nl) {
      size_t n = nl - q->rbuf + 1;
      size_t skip = strspn (q->rbuf, " \t\r");
      json_error_t jerr;
      json_t *msg = NULL;
      bool blank = q->rbuf + skip >= nl;

      if (!blank)
        msg = json_loadb (q->rbuf, n, 0, &jerr);
      memmove (q->rbuf, q->rbuf + n, q->rlen - n);
      q->rlen -= n;
      if (blank)
        continue;
      if (msg == NULL || !json_is_object (msg)) {
        json_decref (msg);
        error_set (ERR_UNAVAILABLE, "malformed QMP message from "
                   "qemu-storage-daemon");
        return NULL;
      }
      return msg;
    }

    if (q->rlen == q->rcap) {
      size_t cap = q->rcap ? q->rcap * 2 : 4096;
      char *p;
      if (cap > QMP_MSG_MAX) {
        error_set (ERR_UNAVAILABLE, "QMP message from qemu-storage-daemon "
                   "is longer than %d bytes", QMP_MSG_MAX);
        return NULL;
      }
      p = realloc (q->rbuf, cap);
      if (p == NULL) {
        error_set_errno (ERR_INTERNAL, errno, "realloc");
        return NULL;
      }
      q->rbuf = p;
      q->rcap = cap;
    }

    int64_t left = deadline_ms - qsd_now_ms ();
    struct pollfd pfd = { .fd = q->qmp_fd, .events = POLLIN };
    int r = left > 0 ? poll (&pfd, 1, (int) left) : 0;
    if (r == -1) {
      if (errno == EINTR)
        continue;
      error_set_errno (ERR_UNAVAILABLE, errno, "poll on the QMP socket");
      return NULL;
    }
    if (r == 0) {
      error_set (ERR_UNAVAILABLE, "qemu-storage-daemon did not answer %s "
                 "within %d ms", what, q->qmp_timeout_ms);
      return NULL;
    }
    ssize_t got = read (q->qmp_fd, q->rbuf + q->rlen, q->rcap - q->rlen);
    if (got == -1) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      error_set_errno (ERR_UNAVAILABLE, errno,
                       "reading from qemu-storage-daemon's QMP socket");
      return NULL;
    }
    if (got == 0) {
      error_set (ERR_UNAVAILABLE, "qemu-storage-daemon closed its QMP "
                 "socket (it is exiting)");
      return NULL;
    }
    q->rlen += got;
  }
}

/* Write all of buf to the QMP socket before deadline_ms.  Returns 0, or -1
 * with ERR_UNAVAILABLE set. */
static int
qmp_write (struct qsd *q, const char *buf, size_t len, int64_t deadline_ms)
{
  while (len > 0) {
    ssize_t r = send (q->qmp_fd, buf, len, MSG_NOSIGNAL);
    if (r >= 0) {
      buf += r;
      len -= r;
      continue;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN) {
      error_set_errno (ERR_UNAVAILABLE, errno,
                       "writing to qemu-storage-daemon's QMP socket");
      return -1;
    }
    int64_t left = deadline_ms - qsd_now_ms ();
    struct pollfd pfd = { .fd = q->qmp_fd, .events = POLLOUT };
    if (left <= 0 || poll (&pfd, 1, (int) left) == 0) {
      error_set (ERR_UNAVAILABLE, "qemu-storage-daemon is not reading its "
                 "QMP socket");
      return -1;
    }
  }
  return 0;
}

/* Run one QMP command and wait for its reply, skipping events and stale
 * replies.  args (may be NULL) is stolen.
 *
 * Returns 0 with *ret (if not NULL) a new reference to the "return" value;
 * -1 when the daemon answered with an error, whose desc becomes the error
 * message (ERR_INTERNAL; callers refine it); or -2 on a transport failure,
 * after which the daemon has been declared broken (see the top of the
 * file) and the error is ERR_UNAVAILABLE. */
static int
qmp_execute (struct qsd *q, const char *cmd, json_t *args, json_t **ret)
{
  CLEANUP_JSON json_t *req = NULL;
  CLEANUP_FREE char *text = NULL;
  uint64_t id = ++q->next_cmd_id;
  int64_t deadline = qsd_now_ms () + q->qmp_timeout_ms;

  if (ret)
    *ret = NULL;
  if (q->qmp_fd < 0) {
    json_decref (args);
    error_set (ERR_UNAVAILABLE, "not connected to qemu-storage-daemon");
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
  if (qmp_write (q, text, strlen (text), deadline) == -1 ||
      qmp_write (q, "\n", 1, deadline) == -1) {
    qmp_broken (q);
    return -2;
  }

  for (;;) {
    CLEANUP_JSON json_t *msg = qmp_read (q, deadline, cmd);
    json_t *v;

    if (msg == NULL) {
      qmp_broken (q);
      return -2;
    }
    if ((v = json_object_get (msg, "event")) != NULL) {
      log_debug ("qmp event %s", json_string_value (v) ?: "?");
      continue;
    }
    v = json_object_get (msg, "id");
    if (!json_is_integer (v) || (uint64_t) json_integer_value (v) != id)
      continue;                 /* a reply to a command we gave up on */
    if ((v = json_object_get (msg, "return")) != NULL) {
      if (ret)
        *ret = json_incref (v);
      return 0;
    }
    if ((v = json_object_get (msg, "error")) != NULL) {
      const char *desc = json_string_value (json_object_get (v, "desc"));
      const char *cls = json_string_value (json_object_get (v, "class"));
      error_set (ERR_INTERNAL, "%s", desc ? desc : cls ? cls : "QMP error");
      log_debug ("qmp< error %s: %s", cls ?: "?", desc ?: "?");
      return -1;
    }
    error_set (ERR_UNAVAILABLE, "unexpected QMP reply to %s", cmd);
    qmp_broken (q);
    return -2;
  }
}

/* ---- processes ---- */

/* True when pid no longer runs: no such process, or a zombie nobody has
 * reaped yet (the container's init may never reap it).  A zombie leader
 * still counts as running until its other threads are gone too: until the
 * last one exits, the fds (the NBD listening socket) stay open. */
static bool
qsd_proc_gone (pid_t pid)
{
  char path[64], buf[2048];
  ssize_t n;
  CLEANUP_FD int fd = -1;
  const char *state, *threads;

  snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return errno == ENOENT || errno == ESRCH;
  n = read (fd, buf, sizeof buf - 1);
  if (n <= 0)
    return true;
  buf[n] = '\0';
  state = strstr (buf, "\nState:");
  threads = strstr (buf, "\nThreads:");
  if (state == NULL)
    return false;
  state += strspn (state + 7, " \t") + 7;
  if (*state != 'Z' && *state != 'X')
    return false;
  return threads == NULL || atoi (threads + 9) <= 1;
}

/* True when pid is a live qemu-storage-daemon, judged by its comm (which
 * the kernel truncates to 15 characters) or by argv[0]. */
static bool
qsd_proc_is_daemon (pid_t pid)
{
  char path[64], buf[4096];
  ssize_t n;
  int fd;

  if (qsd_proc_gone (pid))
    return false;
  snprintf (path, sizeof path, "/proc/%d/comm", (int) pid);
  if ((fd = open (path, O_RDONLY | O_CLOEXEC)) >= 0) {
    n = read (fd, buf, sizeof buf - 1);
    close (fd);
    if (n > 0) {
      buf[n] = '\0';
      buf[strcspn (buf, "\n")] = '\0';
      if (strcmp (buf, "qemu-storage-da") == 0 || strcmp (buf, QSD_PROGRAM) == 0)
        return true;
    }
  }
  snprintf (path, sizeof path, "/proc/%d/cmdline", (int) pid);
  if ((fd = open (path, O_RDONLY | O_CLOEXEC)) >= 0) {
    n = read (fd, buf, sizeof buf - 1);
    close (fd);
    if (n > 0) {
      buf[n] = '\0';            /* argv[0] ends at the first NUL */
      const char *base = strrchr (buf, '/');
      if (strcmp (base ? base + 1 : buf, QSD_PROGRAM) == 0)
        return true;
    }
  }
  return false;
}

/* A daemon left behind by an earlier hub in this run_dir (it crashed and
 * PDEATHSIG did not fire, or it ran an older build) still holds the NBD
 * port and the images.  Kill it and wait for it to go.  A pid file naming
 * some other process is just stale.  Returns 0 or -1 with the error set. */
static int
qsd_kill_leftover (struct qsd *q)
{
  char buf[32];
  ssize_t n;
  long pid;
  char *end;
  int fd = open (q->pid_path, O_RDONLY | O_CLOEXEC);

  if (fd == -1) {
    if (errno == ENOENT)
      return 0;
    error_set_errno (ERR_INTERNAL, errno, "open %s", q->pid_path);
    return -1;
  }
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  buf[n > 0 ? n : 0] = '\0';
  pid = strtol (buf, &end, 10);
  if (end != buf && pid > 1 && pid != getpid () && pid <= INT32_MAX &&
      qsd_proc_is_daemon ((pid_t) pid)) {
    log_warn ("killing qemu-storage-daemon (pid %ld) left behind by an "
              "earlier hub in %s", pid, q->run_dir);
    kill ((pid_t) pid, SIGKILL);
    int64_t deadline = qsd_now_ms () + QSD_LEFTOVER_MS;
    while (!qsd_proc_gone ((pid_t) pid)) {
      if (qsd_now_ms () > deadline) {
        error_set (ERR_INTERNAL, "qemu-storage-daemon (pid %ld) left behind "
                   "in %s does not die", pid, q->run_dir);
        return -1;
      }
      qsd_sleep_ms (20);
    }
  }
  unlink (q->pid_path);
  return 0;
}

/* Write the pid file atomically, so that a reader never sees it half done. */
static void
qsd_write_pid_file (struct qsd *q, pid_t pid)
{
  char tmp[4096 + 8], buf[32];
  int fd, len;

  snprintf (tmp, sizeof tmp, "%s.tmp", q->pid_path);
  len = snprintf (buf, sizeof buf, "%d\n", (int) pid);
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1 || write (fd, buf, len) != len || close (fd) == -1 ||
      rename (tmp, q->pid_path) == -1) {
    log_warn ("cannot write %s: %m", q->pid_path);
    if (fd >= 0)
      unlink (tmp);
  }
}

/* The last non-empty line of the daemon's log, for startup errors, into
 * buf ("" when there is none). */
static const char *
qsd_log_tail (struct qsd *q, char *buf, size_t len)
{
  char tail[1024];
  CLEANUP_FD int fd = open (q->log_path, O_RDONLY | O_CLOEXEC);
  off_t size;
  ssize_t n;

  buf[0] = '\0';
  if (fd == -1 || (size = lseek (fd, 0, SEEK_END)) <= 0)
    return buf;
  size = size > (off_t) sizeof tail - 1 ? (off_t) sizeof tail - 1 : size;
  n = pread (fd, tail, size, lseek (fd, 0, SEEK_END) - size);
  if (n <= 0)
    return buf;
  tail[n] = '\0';
  while (n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == '\r'))
    tail[--n] = '\0';
  const char *line = strrchr (tail, '\n');
  line = line ? line + 1 : tail;
  n = strlen (line);
  if ((size_t) n >= len)
    n = len - 1;
  memcpy (buf, line, n);
  buf[n] = '\0';
  return buf;
}

/* In the child between fork and exec: only async-signal-safe calls. */
static void __attribute__((noreturn))
qsd_child (struct qsd *q, pid_t parent, int null_fd, int log_fd, int err_fd)
{
  char *argv[] = {
    (char *) QSD_PROGRAM,
    (char *) "--chardev", q->chardev_arg,
    (char *) "--monitor", (char *) "chardev=qmp0",
    q->tls_arg ? (char *) "--object" : NULL, q->tls_arg,
    NULL
  };
  int e;
  sigset_t all;

  /* Die with the hub.  If it already died, the signal was never armed. */
  if (prctl (PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid () != parent)
    _exit (127);
  /* Out of the hub's process group, so that a terminal's ^C reaches only
   * the hub, which then stops the daemon cleanly. */
  setpgid (0, 0);

  /* Move our fds out of the way, then put them in place. */
  null_fd = fcntl (null_fd, F_DUPFD, 10);
  log_fd = fcntl (log_fd, F_DUPFD, 10);
  err_fd = fcntl (err_fd, F_DUPFD_CLOEXEC, 10);
  if (null_fd == -1 || log_fd == -1 || err_fd == -1 ||
      dup2 (null_fd, 0) == -1 || dup2 (log_fd, 1) == -1 ||
      dup2 (log_fd, 2) == -1 || dup2 (err_fd, 3) == -1 ||
      fcntl (3, F_SETFD, FD_CLOEXEC) == -1)
    goto fail;
  /* Nothing else of the hub's (listening sockets, the catalog, pipes) may
   * leak into the daemon. */
  if (close_range (4, ~0U, 0) == -1)
    for (int fd = 4; fd < q->max_fd; fd++)
      close (fd);

  /* The hub may block or ignore signals; the daemon needs the defaults. */
  signal (SIGTERM, SIG_DFL);
  signal (SIGINT, SIG_DFL);
  signal (SIGHUP, SIG_DFL);
  signal (SIGPIPE, SIG_DFL);
  sigemptyset (&all);
  sigprocmask (SIG_SETMASK, &all, NULL);

  execvp (QSD_PROGRAM, argv);
 fail:
  e = errno;
  if (write (3, &e, sizeof e) < 0) {
    /* The parent will see a short read. */
  }
  _exit (127);
}

/* Fork and exec the daemon.  Called by the supervisor thread with
 * state_lock held, so that qsd_stop either sees the new pid or prevents the
 * fork.  Returns 0 (q->pid set) or -1 with the error set. */
static int
qsd_spawn (struct qsd *q)
{
  CLEANUP_FD int null_fd = -1, log_fd = -1, rfd = -1;
  int pfd[2], child_errno = 0;
  char stamp[32], banner[128];
  pid_t parent = getpid (), pid;
  ssize_t n;

  null_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  log_fd = open (q->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (null_fd == -1 || log_fd == -1) {
    error_set_errno (ERR_INTERNAL, errno, "open %s",
                     null_fd == -1 ? "/dev/null" : q->log_path);
    return -1;
  }
  id_now (stamp, sizeof stamp);
  n = snprintf (banner, sizeof banner, "--- %s strata: starting "
                QSD_PROGRAM " ---\n", stamp);
  if (write (log_fd, banner, n) < 0) {
    /* The log is only a diagnostic. */
  }
  if (pipe2 (pfd, O_CLOEXEC) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "pipe2");
    return -1;
  }
  rfd = pfd[0];

  pid = fork ();
  if (pid == 0)
    qsd_child (q, parent, null_fd, log_fd, pfd[1]);
  close (pfd[1]);
  if (pid == -1) {
    error_set_errno (ERR_INTERNAL, errno, "fork");
    return -1;
  }

  /* The pipe closes on a successful exec, or carries exec's errno. */
  while ((n = read (rfd, &child_errno, sizeof child_errno)) == -1 &&
         errno == EINTR)
    ;
  if (n > 0) {
    while (waitpid (pid, NULL, 0) == -1 && errno == EINTR)
      ;
    error_set_errno (ERR_INTERNAL, n == sizeof child_errno ? child_errno : 0,
                     "cannot run " QSD_PROGRAM);
    return -1;
  }
  q->pid = pid;
  q->spawn_gen++;
  return 0;
}

/* Wait (holding no lock) until the child exits, then reap it and mark the
 * daemon down in one critical section.  Returns the wait status, or -1 when
 * the status was lost (someone else reaped it). */
static int
qsd_reap (struct qsd *q)
{
  pid_t pid;
  siginfo_t si;
  int status = -1;

  {
    SCOPED_LOCK (&q->state_lock);
    pid = q->pid;
  }
  if (pid <= 0)
    return -1;
  while (waitid (P_PID, pid, &si, WEXITED | WNOWAIT) == -1 && errno == EINTR)
    ;

  SCOPED_LOCK (&q->state_lock);
  while (waitpid (pid, &status, 0) == -1) {
    if (errno != EINTR) {
      status = -1;
      break;
    }
  }
  q->pid = 0;
  q->up = false;
  q->reaped_gen = q->spawn_gen;
  pthread_cond_broadcast (&q->state_cond);
  return status;
}

/* Describe a wait status for the log. */
static const char *
qsd_status_str (int status, char *buf, size_t len)
{
  if (status == -1)
    snprintf (buf, len, "exited (status unknown)");
  else if (WIFEXITED (status))
    snprintf (buf, len, "exited with status %d", WEXITSTATUS (status));
  else if (WIFSIGNALED (status))
    snprintf (buf, len, "was killed by signal %d (SIG%s)", WTERMSIG (status),
              sigabbrev_np (WTERMSIG (status)) ?: "?");
  else
    snprintf (buf, len, "stopped (status 0x%x)", status);
  return buf;
}

/* Connect to the QMP socket of the daemon just spawned, retrying until it
 * listens.  qmp_lock held.  Returns 0 or -1 with the error set. */
static int
qsd_connect (struct qsd *q)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int64_t deadline = qsd_now_ms () + QSD_STARTUP_MS;
  char tail[512];

  memcpy (sun.sun_path, q->sock_path, strlen (q->sock_path) + 1);
  for (;;) {
    int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
      error_set_errno (ERR_INTERNAL, errno, "socket");
      return -1;
    }
    if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == 0) {
      fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) | O_NONBLOCK);
      q->qmp_fd = fd;
      q->rlen = 0;
      return 0;
    }
    int e = errno;
    close (fd);
    if (e != ENOENT && e != ECONNREFUSED && e != EAGAIN) {
      error_set_errno (ERR_INTERNAL, e, "connect %s", q->sock_path);
      return -1;
    }

    pid_t pid;
    bool stopping;
    {
      SCOPED_LOCK (&q->state_lock);
      pid = q->pid;
      stopping = q->stopping;
    }
    siginfo_t si = { .si_pid = 0 };
    if (waitid (P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
        si.si_pid == pid) {
      error_set (ERR_UNAVAILABLE, QSD_PROGRAM " exited during startup: %s "
                 "(see %s)", qsd_log_tail (q, tail, sizeof tail), q->log_path);
      return -1;
    }
    if (stopping) {
      error_set (ERR_UNAVAILABLE, QSD_PROGRAM " is stopping");
      return -1;
    }
    if (qsd_now_ms () > deadline) {
      error_set (ERR_UNAVAILABLE, QSD_PROGRAM " did not open %s within %d s "
                 "(see %s)", q->sock_path, QSD_STARTUP_MS / 1000, q->log_path);
      return -1;
    }
    qsd_sleep_ms (10);
  }
}

/* Read the greeting, leave capabilities negotiation mode and start the NBD
 * server.  qmp_lock held.  Returns 0 or -1 with the error set. */
static int
qsd_handshake (struct qsd *q)
{
  CLEANUP_JSON json_t *greeting = NULL;
  char addr[300], port[16];
  json_t *args;
  int r;

  greeting = qmp_read (q, qsd_now_ms () + QSD_STARTUP_MS, "the connection");
  if (greeting == NULL)
    return -1;
  if (json_object_get (greeting, "QMP") == NULL) {
    error_set (ERR_UNAVAILABLE, "%s does not speak QMP", q->sock_path);
    return -1;
  }
  if (qmp_execute (q, "qmp_capabilities", NULL, NULL) != 0) {
    error_prefix ("qmp_capabilities");
    return -1;
  }

  snprintf (port, sizeof port, "%d", q->nbd_port);
  args = json_pack ("{s:{s:s, s:{s:s, s:s}}}", "addr", "type", "inet",
                    "data", "host", q->nbd_host, "port", port);
  /* With credentials, qemu refuses every option, the export list included,
   * until the client has done the TLS handshake with a known key. */
  if (args && q->tls_arg && json_object_set_new (args, "tls-creds", json_string ("tls0")) == -1) {
    json_decref (args);
    args = NULL;
  }
  r = qmp_execute (q, "nbd-server-start", args, NULL);
  if (r == -1) {
    if (strstr (error_message (), "in use"))
      error_set (ERR_CONFLICT, "NBD port %s is in use",
                 qsd_addr (q, addr, sizeof addr));
    else
      error_prefix ("starting the NBD server on %s",
                    qsd_addr (q, addr, sizeof addr));
  }
  return r == 0 ? 0 : -1;
}

/* Bring up one daemon: spawn, connect, NBD server, mark it up.  Runs in the
 * supervisor thread.  On failure the child is killed and reaped, and the
 * error is set. */
static int
qsd_launch (struct qsd *q)
{
  char addr[300];

  unlink (q->sock_path);
  {
    SCOPED_LOCK (&q->state_lock);
    if (q->stopping) {
      error_set (ERR_UNAVAILABLE, QSD_PROGRAM " is stopping");
      return -1;
    }
    if (qsd_spawn (q) == -1)
      return -1;
  }
  qsd_write_pid_file (q, q->pid);

  pthread_mutex_lock (&q->qmp_lock);
  if (qsd_connect (q) == -1 || qsd_handshake (q) == -1) {
    struct qsd_saved_error err;
    qsd_save_error (&err);
    qmp_disconnect (q);
    pthread_mutex_unlock (&q->qmp_lock);
    {
      SCOPED_LOCK (&q->state_lock);
      if (q->pid > 0)
        kill (q->pid, SIGKILL);
    }
    qsd_reap (q);
    unlink (q->pid_path);
    qsd_restore_error (&err);
    return -1;
  }
  {
    SCOPED_LOCK (&q->state_lock);
    q->up = true;
    q->up_gen = q->spawn_gen;
    pthread_cond_broadcast (&q->state_cond);
    log_info (QSD_PROGRAM " running (pid %d), NBD on %s", (int) q->pid,
              qsd_addr (q, addr, sizeof addr));
  }
  pthread_mutex_unlock (&q->qmp_lock);
  return 0;
}

/* True once qsd_stop has begun. */
static bool
qsd_stopping (struct qsd *q)
{
  SCOPED_LOCK (&q->state_lock);
  return q->stopping;
}

/* Sleep ms unless qsd_stop is called first.  Returns true when stopping. */
static bool
qsd_backoff (struct qsd *q, int ms)
{
  int64_t deadline = qsd_now_ms () + ms;
  SCOPED_LOCK (&q->state_lock);
  while (!q->stopping && qsd_cond_wait_until (q, deadline) != ETIMEDOUT)
    ;
  return q->stopping;
}

/* The supervisor thread: the first launch, then reap and restart until
 * qsd_stop. */
static void *
qsd_supervise (void *arg)
{
  struct qsd *q = arg;
  int rc, backoff = QSD_BACKOFF_MIN_MS;
  int64_t started_at;
  char what[128];

  rc = qsd_launch (q);
  {
    SCOPED_LOCK (&q->state_lock);
    q->started = true;
    q->start_rc = rc;
    if (rc == -1) {
      q->start_cat = error_category ();
      snprintf (q->start_msg, sizeof q->start_msg, "%s", error_message ());
      q->thread_done = true;
    }
    pthread_cond_broadcast (&q->state_cond);
  }
  if (rc == -1)
    return NULL;
  started_at = qsd_now_ms ();

  for (;;) {
    pid_t pid;
    {
      SCOPED_LOCK (&q->state_lock);
      pid = q->pid;
    }
    int status = qsd_reap (q);

    pthread_mutex_lock (&q->qmp_lock);
    qmp_disconnect (q);
    pthread_mutex_unlock (&q->qmp_lock);
    if (qsd_stopping (q))
      break;

    log_warn (QSD_PROGRAM " (pid %d) %s; restarting it", (int) pid,
              qsd_status_str (status, what, sizeof what));
    if (qsd_now_ms () - started_at > QSD_STABLE_MS)
      backoff = QSD_BACKOFF_MIN_MS;
    for (;;) {
      if (qsd_backoff (q, backoff))
        goto out;
      backoff = backoff * 2 > QSD_BACKOFF_MAX_MS ? QSD_BACKOFF_MAX_MS
                                                 : backoff * 2;
      if (qsd_launch (q) == 0)
        break;
      if (qsd_stopping (q))
        goto out;
      log_error ("restarting " QSD_PROGRAM ": %s", error_message ());
    }
    started_at = qsd_now_ms ();
    if (q->on_restart)
      q->on_restart (q, q->opaque);
  }

 out:
  {
    SCOPED_LOCK (&q->state_lock);
    q->thread_done = true;
    pthread_cond_broadcast (&q->state_cond);
  }
  return NULL;
}

/* ---- API ---- */

/* Free q and everything it owns; the thread and the daemon are gone. */
static void
qsd_free (struct qsd *q)
{
  if (q->qmp_fd >= 0)
    close (q->qmp_fd);
  qsd_exports_clear (q);
  free (q->rbuf);
  free (q->run_dir);
  free (q->nbd_host);
  free (q->sock_path);
  free (q->pid_path);
  free (q->log_path);
  free (q->chardev_arg);
  free (q->tls_arg);
  pthread_mutex_destroy (&q->qmp_lock);
  pthread_mutex_destroy (&q->state_lock);
  pthread_cond_destroy (&q->state_cond);
  free (q);
}

/* An option value: "PREFIX" + path (with commas doubled, as QEMU's option
 * parser requires) + "SUFFIX".  Caller frees. */
static char *
qsd_option_arg (const char *prefix, const char *path, const char *suffix)
{
  size_t len = strlen (path);
  char *s = malloc (strlen (prefix) + 2 * len + strlen (suffix) + 1), *p;

  if (s == NULL)
    return NULL;
  p = stpcpy (s, prefix);
  for (const char *c = path; *c; c++) {
    *p++ = *c;
    if (*c == ',')
      *p++ = ',';
  }
  strcpy (p, suffix);
  return s;
}

struct qsd *
qsd_start (const struct qsd_config *cfg, qsd_restart_fn on_restart,
           void *opaque)
{
  struct qsd *q;
  pthread_condattr_t ca;
  int err;

  if (cfg == NULL || cfg->run_dir == NULL || cfg->nbd_host == NULL ||
      cfg->nbd_port <= 0 || cfg->nbd_port > 65535) {
    error_set (ERR_INVALID, "qsd_start: run_dir, nbd_host and a port in "
               "1..65535 are required");
    return NULL;
  }
  if (strlen (cfg->run_dir) + sizeof "/qmp.sock" >
      sizeof ((struct sockaddr_un *) 0)->sun_path) {
    error_set (ERR_INVALID, "run directory %s is too long for a unix socket "
               "path", cfg->run_dir);
    return NULL;
  }
  if (mkdir (cfg->run_dir, 0700) == -1 && errno != EEXIST) {
    error_set_errno (ERR_INTERNAL, errno, "mkdir %s", cfg->run_dir);
    return NULL;
  }

  q = calloc (1, sizeof *q);
  if (q == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "calloc");
    return NULL;
  }
  q->qmp_fd = -1;
  q->qmp_timeout_ms = QMP_TIMEOUT_MS;
  q->nbd_port = cfg->nbd_port;
  q->on_restart = on_restart;
  q->opaque = opaque;
  q->max_fd = (int) sysconf (_SC_OPEN_MAX);
  if (q->max_fd <= 0 || q->max_fd > 65536)
    q->max_fd = 65536;
  pthread_mutex_init (&q->qmp_lock, NULL);
  pthread_mutex_init (&q->state_lock, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&q->state_cond, &ca);
  pthread_condattr_destroy (&ca);

  q->run_dir = strdup (cfg->run_dir);
  q->nbd_host = strdup (cfg->nbd_host);
  if (q->run_dir == NULL || q->nbd_host == NULL ||
      asprintf (&q->sock_path, "%s/qmp.sock", cfg->run_dir) == -1 ||
      asprintf (&q->pid_path, "%s/qsd.pid", cfg->run_dir) == -1 ||
      asprintf (&q->log_path, "%s/qsd.log", cfg->run_dir) == -1 ||
      (q->chardev_arg = qsd_option_arg ("socket,path=", q->sock_path,
                                        ",server=on,wait=off,id=qmp0")) == NULL ||
      (cfg->tls_psk_dir &&
       (q->tls_arg = qsd_option_arg ("tls-creds-psk,id=tls0,endpoint=server,dir=",
                                     cfg->tls_psk_dir, "")) == NULL)) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "qsd_start");
    qsd_free (q);
    return NULL;
  }

  if (qsd_kill_leftover (q) == -1) {
    qsd_free (q);
    return NULL;
  }

  err = pthread_create (&q->thread, NULL, qsd_supervise, q);
  if (err) {
    error_set_errno (ERR_INTERNAL, err, "pthread_create");
    qsd_free (q);
    return NULL;
  }
  {
    SCOPED_LOCK (&q->state_lock);
    while (!q->started)
      pthread_cond_wait (&q->state_cond, &q->state_lock);
  }
  if (q->start_rc == -1) {
    pthread_join (q->thread, NULL);
    error_set (q->start_cat, "%s", q->start_msg);
    unlink (q->sock_path);
    qsd_free (q);
    return NULL;
  }
  return q;
}

void
qsd_stop (struct qsd *q)
{
  if (q == NULL)
    return;
  {
    SCOPED_LOCK (&q->state_lock);
    int64_t deadline = qsd_now_ms () + QSD_TERM_MS;

    q->stopping = true;
    if (q->pid > 0)
      kill (q->pid, SIGTERM);
    pthread_cond_broadcast (&q->state_cond);
    while (!q->thread_done && qsd_cond_wait_until (q, deadline) != ETIMEDOUT)
      ;
    if (!q->thread_done && q->pid > 0) {
      log_warn (QSD_PROGRAM " (pid %d) ignored SIGTERM for %d s; killing it",
                (int) q->pid, QSD_TERM_MS / 1000);
      kill (q->pid, SIGKILL);
    }
  }
  pthread_join (q->thread, NULL);
  unlink (q->pid_path);
  unlink (q->sock_path);
  log_info (QSD_PROGRAM " stopped");
  qsd_free (q);
}

/* Wait until the daemon is up and take qmp_lock, for one API call; give up
 * at deadline (monotonic ms).
 *
 * Returns 0 with qmp_lock held.  With gone_ok (export removal), a daemon
 * that is down is not waited for: once the last daemon that served exports
 * has been reaped, returns 1 without the lock, because its exit closed
 * every image.  Otherwise -1 with ERR_UNAVAILABLE set.
 *
 * The restart callback runs in the supervisor thread, which is the one
 * that would bring the daemon back: it must not wait for itself. */
static int
qsd_acquire (struct qsd *q, bool gone_ok, int64_t deadline)
{
  bool self = pthread_equal (pthread_self (), q->thread);

  for (;;) {
    bool up, stopping;
    {
      SCOPED_LOCK (&q->state_lock);
      if (gone_ok && !q->up) {
        while (q->reaped_gen < q->up_gen &&
               qsd_cond_wait_until (q, deadline) != ETIMEDOUT)
          ;
        if (q->reaped_gen >= q->up_gen)
          return 1;
      }
      while (!q->up && !q->stopping && !self &&
             qsd_cond_wait_until (q, deadline) != ETIMEDOUT)
        ;
      up = q->up;
      stopping = q->stopping;
    }
    if (!up) {
      error_set (ERR_UNAVAILABLE, QSD_PROGRAM " is %s", stopping ?
                 "stopping" : "down (it is being restarted)");
      return -1;
    }

    pthread_mutex_lock (&q->qmp_lock);
    {
      SCOPED_LOCK (&q->state_lock);
      up = q->up;
    }
    if (up && q->qmp_fd >= 0)
      return 0;
    /* It died between the two checks; wait for the restart. */
    pthread_mutex_unlock (&q->qmp_lock);
  }
}

/* Wait until the daemon of generation gen has been reaped, which closed
 * its images.  Returns true when it has, within QSD_WAIT_UP_MS. */
static bool
qsd_wait_reaped (struct qsd *q, uint64_t gen)
{
  int64_t deadline = qsd_now_ms () + QSD_WAIT_UP_MS;
  SCOPED_LOCK (&q->state_lock);
  while (q->reaped_gen < gen && qsd_cond_wait_until (q, deadline) != ETIMEDOUT)
    ;
  return q->reaped_gen >= gen;
}

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
  r = qmp_execute (q, "blockdev-add", args, NULL);
  if (r == -1) {
    struct qsd_saved_error err;
    struct stat st;
    qsd_save_error (&err);
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
  r = qmp_execute (q, "block-export-add", args, NULL);
  if (r == -1) {
    struct qsd_saved_error err;
    error_prefix ("exporting %s", path);
    qsd_save_error (&err);
    /* Don't leave the image open in the daemon. */
    if (qmp_execute (q, "blockdev-del", json_pack ("{s:s}", "node-name", node),
                     NULL) == -1)
      log_warn ("blockdev-del %s after a failed export: %s", node,
                error_message ());
    qsd_restore_error (&err);
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
  int64_t deadline = qsd_now_ms () + QSD_WAIT_UP_MS;
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
           qsd_now_ms () < deadline);
  return r == 0 ? 0 : -1;
}

/* True when query-block-exports still lists id (including one that is
 * shutting down).  qmp_lock held.  Returns 1, 0, or -1/-2 as
 * qmp_execute. */
static int
qsd_export_listed (struct qsd *q, const char *id)
{
  CLEANUP_JSON json_t *list = NULL;
  size_t i;
  json_t *v;
  int r = qmp_execute (q, "query-block-exports", NULL, &list);

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
  r = qmp_execute (q, "block-export-del",
                   json_pack ("{s:s, s:s}", "id", name, "mode", "hard"), NULL);
  if (r == -1 && qsd_export_listed (q, name) == 1) {
    error_prefix ("removing export %s", name);
    return -1;
  }
  /* Deletion completes asynchronously, once in-flight requests drain. */
  deadline = qsd_now_ms () + QSD_EXPORT_DEL_MS;
  while (r != -2 && (r = qsd_export_listed (q, name)) == 1) {
    if (qsd_now_ms () > deadline) {
      error_set (ERR_INTERNAL, "export %s is still shutting down after %d s",
                 name, QSD_EXPORT_DEL_MS / 1000);
      return -1;
    }
    qsd_sleep_ms (10);
  }
  if (r == -2)
    return -2;
  /* Closing the node flushes the image; only then is the backup on disk. */
  r = qmp_execute (q, "blockdev-del",
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
  r = qsd_acquire (q, true, qsd_now_ms () + QSD_WAIT_UP_MS);
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
      qsd_acquire (q, false, qsd_now_ms () + QSD_WAIT_UP_MS) == -1)
    return false;
  ret = qsd_export_find (q, name) != NULL;
  pthread_mutex_unlock (&q->qmp_lock);
  return ret;
}

pid_t
qsd_pid (struct qsd *q)
{
  SCOPED_LOCK (&q->state_lock);
  return q->up ? q->pid : 0;
}

void
qsd_set_qmp_timeout (struct qsd *q, int ms)
{
  SCOPED_LOCK (&q->qmp_lock);
  q->qmp_timeout_ms = ms > 0 ? ms : QMP_TIMEOUT_MS;
}
