/* storage/qsd.c - the hub's qemu-storage-daemon: spawn and supervise it.
 *
 * This file owns the daemon process and the QMP connection to it (the
 * transport itself is storage/qmp.c); storage/qsd-export.c serves NBD
 * through it.  The shared struct is in storage/qsd-int.h.
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
 *   qmp_lock    serialises QMP conversations: the connection (q->qmp) and
 *               the export map.  A command holds it from sending the
 *               request until the reply is read; an API call holds it for
 *               its whole conversation.
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
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/qsd-int.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

#define QSD_TERM_MS 5000            /* SIGTERM to SIGKILL in qsd_stop */
#define QSD_LEFTOVER_MS 5000        /* a leftover daemon to disappear */
#define QSD_BACKOFF_MIN_MS 100
#define QSD_BACKOFF_MAX_MS 5000
#define QSD_STABLE_MS 10000         /* up this long resets the backoff */

/* Wait on state_cond (state_lock held) until deadline_ms on the monotonic
 * clock.  Returns ETIMEDOUT once the deadline has passed, else 0. */
static int
qsd_cond_wait_until (struct qsd *q, int64_t deadline_ms)
{
  struct timespec ts;
  if (clock_mono_ms () >= deadline_ms)
    return ETIMEDOUT;
  ts.tv_sec = deadline_ms / 1000;
  ts.tv_nsec = (deadline_ms % 1000) * 1000000;
  return pthread_cond_timedwait (&q->state_cond, &q->state_lock, &ts);
}


/* Sleep the whole of ms even when a signal interrupts. */
void
qsd_sleep_ms (int ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* ---- the QMP connection (qmp_lock held) ---- */

/* Drop the QMP connection and forget the exports, with nothing else.  The
 * supervisor uses this once the daemon is reaped. */
static void
qsd_disconnect (struct qsd *q)
{
  qmp_free (q->qmp);
  q->qmp = NULL;
  qsd_exports_clear (q);
}

/* The QMP stream can't be trusted any more: disconnect, mark the daemon
 * down and SIGKILL it so that the supervisor restarts it from a known
 * state.  The caller's error stays set. */
static void
qsd_broken (struct qsd *q)
{
  qsd_disconnect (q);
  SCOPED_LOCK (&q->state_lock);
  if (q->pid > 0) {
    log_warn (QSD_PROGRAM " (pid %d): %s; killing it so that it restarts",
              (int) q->pid, error_message ());
    kill (q->pid, SIGKILL);
  }
  q->up = false;
  pthread_cond_broadcast (&q->state_cond);
}

/* Run one QMP command on the daemon (args stolen, *ret as qmp_execute).
 * Returns 0; -1 when the daemon answered with an error (ERR_INTERNAL with
 * its desc, for the caller to refine); or -2 on a transport failure, after
 * which the daemon has been declared broken (see the top of the file) and
 * the error is ERR_UNAVAILABLE. */
int
qsd_qmp (struct qsd *q, const char *cmd, json_t *args, json_t **ret)
{
  int r;

  if (q->qmp == NULL) {
    json_decref (args);
    if (ret)
      *ret = NULL;
    error_set (ERR_UNAVAILABLE, "not connected to " QSD_PROGRAM);
    return -2;
  }
  r = qmp_execute (q->qmp, cmd, args, q->qmp_timeout_ms, ret);
  if (r == -2)
    qsd_broken (q);
  return r;
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
    int64_t deadline = clock_mono_ms () + QSD_LEFTOVER_MS;
    while (!qsd_proc_gone ((pid_t) pid)) {
      if (clock_mono_ms () > deadline) {
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
    /* The TLS credentials come before the NBD server that names them. */
    (char *) (q->tls_object_arg ? "--object" : "--nbd-server"),
    q->tls_object_arg ? q->tls_object_arg : q->nbd_server_arg,
    q->tls_object_arg ? (char *) "--nbd-server" : NULL,
    q->nbd_server_arg,
    NULL
  };
  int e, nbd_fd;
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
  nbd_fd = fcntl (q->nbd_fd, F_DUPFD, 10);
  if (null_fd == -1 || log_fd == -1 || err_fd == -1 || nbd_fd == -1 ||
      dup2 (null_fd, 0) == -1 || dup2 (log_fd, 1) == -1 ||
      dup2 (log_fd, 2) == -1 || dup2 (err_fd, 3) == -1 ||
      fcntl (3, F_SETFD, FD_CLOEXEC) == -1 || dup2 (nbd_fd, QSD_NBD_FD) == -1)
    goto fail;
  /* Nothing else of the hub's (the API's socket, the catalog, pipes) may
   * leak into the daemon. */
  if (close_range (QSD_NBD_FD + 1, ~0U, 0) == -1)
    for (int fd = QSD_NBD_FD + 1; fd < q->max_fd; fd++)
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
 * listens, and negotiate capabilities.  qmp_lock held.  Returns 0 or -1
 * with the error set. */
static int
qsd_connect (struct qsd *q)
{
  int64_t deadline = clock_mono_ms () + QSD_STARTUP_MS;
  char tail[512];

  for (;;) {
    q->qmp = qmp_connect (q->sock_path, QSD_PROGRAM);
    if (q->qmp)
      break;
    int e = error_errno ();
    if (e != ENOENT && e != ECONNREFUSED && e != EAGAIN)
      return -1;

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
    if (clock_mono_ms () > deadline) {
      error_set (ERR_UNAVAILABLE, QSD_PROGRAM " did not open %s within %d s "
                 "(see %s)", q->sock_path, QSD_STARTUP_MS / 1000, q->log_path);
      return -1;
    }
    qsd_sleep_ms (10);
  }
  return qmp_handshake (q->qmp, QSD_STARTUP_MS);
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
  if (qsd_connect (q) == -1) {
    struct error_saved err;
    error_save (&err);
    qsd_disconnect (q);
    pthread_mutex_unlock (&q->qmp_lock);
    {
      SCOPED_LOCK (&q->state_lock);
      if (q->pid > 0)
        kill (q->pid, SIGKILL);
    }
    qsd_reap (q);
    unlink (q->pid_path);
    error_restore (&err);
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
  int64_t deadline = clock_mono_ms () + ms;
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
      error_save (&q->start_err);
      q->thread_done = true;
    }
    pthread_cond_broadcast (&q->state_cond);
  }
  if (rc == -1)
    return NULL;
  started_at = clock_mono_ms ();

  for (;;) {
    pid_t pid;
    {
      SCOPED_LOCK (&q->state_lock);
      pid = q->pid;
    }
    int status = qsd_reap (q);

    pthread_mutex_lock (&q->qmp_lock);
    qsd_disconnect (q);
    pthread_mutex_unlock (&q->qmp_lock);
    if (qsd_stopping (q))
      break;

    log_warn (QSD_PROGRAM " (pid %d) %s; restarting it", (int) pid,
              qsd_status_str (status, what, sizeof what));
    if (clock_mono_ms () - started_at > QSD_STABLE_MS)
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
    started_at = clock_mono_ms ();
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
  qsd_disconnect (q);
  free (q->run_dir);
  free (q->nbd_host);
  free (q->sock_path);
  free (q->pid_path);
  free (q->log_path);
  free (q->chardev_arg);
  free (q->nbd_server_arg);
  free (q->tls_object_arg);
  if (q->nbd_fd >= 0)
    close (q->nbd_fd);
  free (q->tls_psk_dir);
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
  q->qmp_timeout_ms = QMP_TIMEOUT_MS;
  q->nbd_fd = -1;
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
       ((q->tls_psk_dir = strdup (cfg->tls_psk_dir)) == NULL ||
        (q->tls_object_arg = qsd_option_arg ("tls-creds-psk,id=tls0,endpoint=server,dir=",
                                             cfg->tls_psk_dir, "")) == NULL)) ||
      asprintf (&q->nbd_server_arg, "addr.type=fd,addr.str=%d%s", QSD_NBD_FD,
                cfg->tls_psk_dir ? ",tls-creds=tls0" : "") == -1) {
    q->nbd_server_arg = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "qsd_start");
    qsd_free (q);
    return NULL;
  }
  /* A leftover daemon holds the port: it goes first. */
  if (qsd_kill_leftover (q) == -1 || qsd_listen (q) == -1) {
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
    error_restore (&q->start_err);
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
    int64_t deadline = clock_mono_ms () + QSD_TERM_MS;

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
int
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
    if (up && q->qmp)
      return 0;
    /* It died between the two checks; wait for the restart. */
    pthread_mutex_unlock (&q->qmp_lock);
  }
}

/* Wait until the daemon of generation gen has been reaped, which closed
 * its images.  Returns true when it has, within QSD_WAIT_UP_MS. */
bool
qsd_wait_reaped (struct qsd *q, uint64_t gen)
{
  int64_t deadline = clock_mono_ms () + QSD_WAIT_UP_MS;
  SCOPED_LOCK (&q->state_lock);
  while (q->reaped_gen < gen && qsd_cond_wait_until (q, deadline) != ETIMEDOUT)
    ;
  return q->reaped_gen >= gen;
}

pid_t
qsd_pid (struct qsd *q)
{
  SCOPED_LOCK (&q->state_lock);
  return q->up ? q->pid : 0;
}

bool
qsd_died (struct qsd *q, pid_t pid)
{
  bool same;
  int r;

  if (qsd_acquire (q, false, clock_mono_ms () + QSD_WAIT_UP_MS) == -1)
    return true;                /* down, restarting or stopping */
  {
    SCOPED_LOCK (&q->state_lock);
    same = q->pid == pid;
  }
  r = same ? qsd_qmp (q, "query-block-exports", NULL, NULL) : -2;
  pthread_mutex_unlock (&q->qmp_lock);
  return r == -2;
}

void
qsd_set_qmp_timeout (struct qsd *q, int ms)
{
  SCOPED_LOCK (&q->qmp_lock);
  q->qmp_timeout_ms = ms > 0 ? ms : QMP_TIMEOUT_MS;
}
