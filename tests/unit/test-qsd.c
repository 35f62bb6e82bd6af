/* tests/unit/test-qsd.c - storage/qsd.c against a real qemu-storage-daemon.
 *
 * Data goes in and out through real NBD clients (qemu-io), and is checked
 * on the image file itself after the export is removed, which proves that
 * removal flushed and closed the image.  The daemon is killed behind the
 * hub's back, left behind by a "crashed" hub, and orphaned by a hub that
 * is SIGKILLed.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "storage/qsd.h"
#include "util/error.h"
#include "util/id.h"

static char tmpdir[] = "/tmp/test-qsd.XXXXXX";

/* A loopback port that was free a moment ago. */
static int
free_port (void)
{
  struct sockaddr_in sin = { .sin_family = AF_INET };
  socklen_t len = sizeof sin;
  int fd = socket (AF_INET, SOCK_STREAM, 0), port = -1;

  sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (fd >= 0 && bind (fd, (struct sockaddr *) &sin, sizeof sin) == 0 &&
      getsockname (fd, (struct sockaddr *) &sin, &len) == 0)
    port = ntohs (sin.sin_port);
  if (fd >= 0)
    close (fd);
  return port;
}

/* Run a shell command quietly (stdout dropped).  Returns its exit status,
 * or -1 when it did not exit normally. */
static int __attribute__((format (printf, 1, 2)))
sh (const char *fmt, ...)
{
  char cmd[4096];
  va_list ap;
  int st;

  strcpy (cmd, "{ ");
  va_start (ap, fmt);
  vsnprintf (cmd + 2, sizeof cmd - 2, fmt, ap);
  va_end (ap);
  strncat (cmd, "; } >/dev/null", sizeof cmd - strlen (cmd) - 1);
  st = system (cmd);
  return st != -1 && WIFEXITED (st) ? WEXITSTATUS (st) : -1;
}

static void
sleep_ms (int ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep (&ts, NULL);
}

/* True when pid is absent, or a zombie whose threads have all exited.
 * With reap, such a zombie that is our child (we are a subreaper) is
 * reaped on the way; never pass reap for the daemon of a qsd running in
 * this process, whose supervisor reaps it. */
static bool
proc_dead (pid_t pid, bool reap)
{
  char path[64], buf[2048];
  const char *state, *threads;
  FILE *fp;
  size_t n;

  snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
  if ((fp = fopen (path, "r")) == NULL)
    return true;
  n = fread (buf, 1, sizeof buf - 1, fp);
  fclose (fp);
  buf[n] = '\0';
  state = strstr (buf, "\nState:");
  threads = strstr (buf, "\nThreads:");
  if (state == NULL || threads == NULL)
    return false;
  state += 7 + strspn (state + 7, " \t");
  if ((*state != 'Z' && *state != 'X') || atoi (threads + 9) > 1)
    return false;
  if (reap)
    waitpid (pid, NULL, WNOHANG);
  return true;
}

static bool
proc_gone (pid_t pid)
{
  return proc_dead (pid, true);
}

static bool
wait_gone (pid_t pid, int ms)
{
  for (int t = 0; t < ms; t += 20) {
    if (proc_gone (pid))
      return true;
    sleep_ms (20);
  }
  return proc_gone (pid);
}

/* How many live processes have needle in their command line. */
static int
count_procs_with (const char *needle)
{
  DIR *d = opendir ("/proc");
  struct dirent *de;
  int count = 0;

  while (d && (de = readdir (d)) != NULL) {
    char path[300], buf[8192];
    size_t n;
    FILE *fp;
    pid_t pid = atoi (de->d_name);

    if (pid <= 0 || pid == getpid ())
      continue;
    snprintf (path, sizeof path, "/proc/%s/cmdline", de->d_name);
    if ((fp = fopen (path, "r")) == NULL)
      continue;
    n = fread (buf, 1, sizeof buf - 1, fp);
    fclose (fp);
    for (size_t i = 0; i < n; i++)
      if (buf[i] == '\0')
        buf[i] = ' ';
    buf[n] = '\0';
    if (strstr (buf, needle) && !proc_gone (pid))
      count++;
  }
  if (d)
    closedir (d);
  return count;
}

static bool
file_exists (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0;
}

static int
make_image (const char *path)
{
  return sh ("qemu-img create -q -f qcow2 %s 64M", path);
}

/* Write pattern through NBD, then read it back through NBD. */
static int
nbd_write (int port, const char *name, int pattern)
{
  return sh ("qemu-io -f raw -c 'write -P 0x%x 0 1M' "
             "nbd://127.0.0.1:%d/%s", pattern, port, name);
}

static int
nbd_read (int port, const char *name, int pattern)
{
  return sh ("qemu-io -f raw -r -c 'read -P 0x%x 0 1M' "
             "nbd://127.0.0.1:%d/%s", pattern, port, name);
}

/* Read the pattern from the image file itself, not through the daemon. */
static int
file_read (const char *path, int pattern)
{
  return sh ("qemu-io -f qcow2 -r -c 'read -P 0x%x 0 1M' %s", pattern, path);
}

/* The restart callback's view: which export should exist. */
struct restart_ctx {
  pthread_mutex_t lock;
  int restarts;
  int readd_rc;
  char name[64];
  char path[PATH_MAX];
};

static void
on_restart (struct qsd *q, void *opaque)
{
  struct restart_ctx *c = opaque;
  char name[64], path[PATH_MAX];
  int rc = 0;

  pthread_mutex_lock (&c->lock);
  memcpy (name, c->name, sizeof name);
  memcpy (path, c->path, sizeof path);
  pthread_mutex_unlock (&c->lock);
  if (name[0])
    rc = qsd_export_add (q, name, path, true);
  pthread_mutex_lock (&c->lock);
  c->restarts++;
  c->readd_rc = rc;
  pthread_mutex_unlock (&c->lock);
}

/* Wait until the callback has run `want` times; returns the count. */
static int
wait_restarts (struct restart_ctx *c, int want, int *readd_rc)
{
  int restarts = 0;
  for (int t = 0; t < 15000; t += 20) {
    pthread_mutex_lock (&c->lock);
    restarts = c->restarts;
    *readd_rc = c->readd_rc;
    pthread_mutex_unlock (&c->lock);
    if (restarts >= want)
      break;
    sleep_ms (20);
  }
  return restarts;
}

struct worker {
  struct qsd *q;
  char path[PATH_MAX];
  int failures;
};

/* Add, check and remove an export of its own image, a few times over. */
static void *
worker_run (void *arg)
{
  struct worker *w = arg;
  for (int i = 0; i < 5; i++) {
    char *name = id_export_name ();
    if (name == NULL || qsd_export_add (w->q, name, w->path, true) == -1 ||
        !qsd_export_exists (w->q, name) ||
        qsd_export_remove (w->q, name) == -1 ||
        qsd_export_exists (w->q, name))
      w->failures++;
    free (name);
  }
  return NULL;
}

/* True when one of pid's fds is open on path. */
static bool
proc_has_fd_on (pid_t pid, const char *path)
{
  char dir[64], link[PATH_MAX + 64], target[PATH_MAX];
  struct dirent *de;
  bool found = false;
  DIR *d;

  snprintf (dir, sizeof dir, "/proc/%d/fd", (int) pid);
  if ((d = opendir (dir)) == NULL)
    return false;
  while ((de = readdir (d)) != NULL) {
    ssize_t n;
    snprintf (link, sizeof link, "%s/%s", dir, de->d_name);
    n = readlink (link, target, sizeof target - 1);
    if (n > 0) {
      target[n] = '\0';
      found |= strcmp (target, path) == 0;
    }
  }
  closedir (d);
  return found;
}

static void
test_lifecycle (void)
{
  char run[PATH_MAX], img[PATH_MAX], img2[PATH_MAX], raw[PATH_MAX];
  char marker[PATH_MAX], sock[PATH_MAX + 16], pidfile[PATH_MAX + 16];
  struct restart_ctx ctx = { .lock = PTHREAD_MUTEX_INITIALIZER };
  int port = free_port (), marker_fd;
  struct qsd_config cfg;
  struct qsd *q;
  char *a, *b, *c, img3[PATH_MAX];
  pid_t pid, pid2, pid3;
  FILE *fp;

  snprintf (run, sizeof run, "%s/run", tmpdir);
  snprintf (img, sizeof img, "%s/a.qcow2", tmpdir);
  snprintf (img2, sizeof img2, "%s/b.qcow2", tmpdir);
  snprintf (img3, sizeof img3, "%s/c.qcow2", tmpdir);
  snprintf (raw, sizeof raw, "%s/raw.img", tmpdir);
  snprintf (marker, sizeof marker, "%s/marker", tmpdir);
  snprintf (sock, sizeof sock, "%s/qmp.sock", run);
  snprintf (pidfile, sizeof pidfile, "%s/qsd.pid", run);
  cfg = (struct qsd_config) { .run_dir = run, .nbd_host = "127.0.0.1",
                              .nbd_port = port };

  /* An fd the hub has open without O_CLOEXEC must not leak. */
  marker_fd = open (marker, O_WRONLY | O_CREAT, 0600);

  q = qsd_start (&cfg, on_restart, &ctx);
  ok (q != NULL, "qsd_start on port %d%s%s", port, q ? "" : ": ",
      q ? "" : error_message ());
  if (q == NULL)
    exit (1);
  pid = qsd_pid (q);
  ok (pid > 0, "qsd_pid is %d", (int) pid);
  {
    int filepid = 0;
    if ((fp = fopen (pidfile, "r")) != NULL) {
      if (fscanf (fp, "%d", &filepid) != 1)
        filepid = 0;
      fclose (fp);
    }
    ok (filepid == pid, "qsd.pid holds the daemon's pid");
  }
  ok (file_exists (sock), "QMP socket in the run dir");
  ok (!proc_has_fd_on (pid, marker), "the daemon did not inherit the hub's fds");
  close (marker_fd);

  ok (make_image (img) == 0 && make_image (img2) == 0 && make_image (img3) == 0,
      "qemu-img create");
  a = id_export_name ();
  b = id_export_name ();
  c = id_export_name ();

  /* Write through NBD, remove, read the file directly. */
  ok (!qsd_export_exists (q, a), "export does not exist before it is added");
  ok (qsd_export_add (q, a, img, true) == 0, "add a writable export");
  ok (qsd_export_exists (q, a), "export exists");
  ok (qsd_export_add (q, a, img, true) == 0, "adding it again is success");
  ok (qsd_export_add (q, a, img2, true) == -1 &&
      error_category () == ERR_CONFLICT,
      "the same name for another image is a conflict");
  ok (nbd_write (port, a, 0xab) == 0, "qemu-io writes 0xab through NBD");
  ok (qsd_export_remove (q, a) == 0, "remove the export");
  ok (!qsd_export_exists (q, a), "export is gone");
  ok (nbd_read (port, a, 0xab) != 0, "NBD clients can no longer reach it");
  ok (file_read (img, 0xab) == 0,
      "the data is in the image file once remove returns");
  ok (qsd_export_remove (q, a) == 0, "removing it again is success");
  ok (qsd_export_remove (q, b) == 0, "removing an unknown export is success");

  /* Read-only. */
  ok (qsd_export_add (q, a, img, false) == 0, "add a read-only export");
  ok (nbd_read (port, a, 0xab) == 0, "it reads the data back");
  ok (nbd_write (port, a, 0xcd) != 0, "it rejects writes");
  ok (qsd_export_remove (q, a) == 0, "remove the read-only export");
  ok (file_read (img, 0xab) == 0, "the image is unchanged");

  /* Errors. */
  {
    char missing[PATH_MAX + 16];
    snprintf (missing, sizeof missing, "%s/missing.qcow2", tmpdir);
    ok (qsd_export_add (q, a, missing, true) == -1 &&
        error_category () == ERR_NOT_FOUND &&
        strstr (error_message (), "cannot open") &&
        strstr (error_message (), missing),
        "a missing image: %s", error_message ());
    ok (!qsd_export_exists (q, a), "no export after the failure");
    ok (sh ("truncate -s 1M %s", raw) == 0 &&
        qsd_export_add (q, a, raw, true) == -1 &&
        strstr (error_message (), "cannot open"),
        "a file that is not qcow2: %s", error_message ());
    ok (qsd_export_add (q, "../x", img, true) == -1 &&
        error_category () == ERR_INVALID, "a malformed export name");
    ok (qsd_export_add (q, a, img, true) == 0 && qsd_export_remove (q, a) == 0,
        "the image is still usable after the failures");
  }

  /* Several threads at once, each on its own image. */
  {
    struct worker w[4];
    pthread_t t[4];
    int failures = 0;
    for (int i = 0; i < 4; i++) {
      w[i] = (struct worker) { .q = q };
      snprintf (w[i].path, sizeof w[i].path, "%s/w%d.qcow2", tmpdir, i);
      make_image (w[i].path);
      pthread_create (&t[i], NULL, worker_run, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
      pthread_join (t[i], NULL);
      failures += w[i].failures;
    }
    ok (failures == 0, "4 threads add and remove exports concurrently "
        "(%d failures)", failures);
  }

  ok (!qsd_died (q, pid), "qsd_died: not the daemon that answers");

  /* Kill the daemon behind our back.  The callback re-adds a but not b. */
  ok (qsd_export_add (q, a, img, true) == 0 &&
      qsd_export_add (q, b, img2, true) == 0, "add two exports");
  pthread_mutex_lock (&ctx.lock);
  snprintf (ctx.name, sizeof ctx.name, "%s", a);
  snprintf (ctx.path, sizeof ctx.path, "%s", img);
  pthread_mutex_unlock (&ctx.lock);
  kill (pid, SIGKILL);
  ok (qsd_export_remove (q, b) == 0,
      "removing an export right after the daemon died is success");
  while (!proc_dead (pid, false))
    sleep_ms (1);
  /* What a copy that lost its connection asks, maybe before the supervisor
   * has seen the death. */
  ok (qsd_died (q, pid), "qsd_died: the killed daemon has died");
  ok (qsd_export_add (q, c, img3, true) == 0,
      "adding an export while the daemon restarts waits for it%s%s",
      error_category () ? ": " : "", error_category () ? error_message () : "");
  {
    int rc = -1;
    ok (wait_restarts (&ctx, 1, &rc) == 1, "the restart callback ran once");
    ok (rc == 0, "the callback re-added the export");
  }
  pid2 = qsd_pid (q);
  ok (pid2 > 0 && pid2 != pid, "a new daemon runs (pid %d -> %d)", (int) pid,
      (int) pid2);
  ok (wait_gone (pid, 2000), "the old daemon is gone");
  ok (qsd_export_exists (q, a), "the re-added export exists");
  ok (!qsd_export_exists (q, b), "the export not re-added does not");
  ok (qsd_export_exists (q, c) && nbd_write (port, c, 0x11) == 0 &&
      qsd_export_remove (q, c) == 0 && file_read (img3, 0x11) == 0,
      "the export added during the restart works");
  ok (nbd_write (port, a, 0xcd) == 0 && nbd_read (port, a, 0xcd) == 0,
      "the re-added export works over NBD");
  ok (qsd_export_remove (q, a) == 0 && file_read (img, 0xcd) == 0,
      "its data reaches the image file");

  /* A daemon that stops answering QMP is killed and restarted. */
  qsd_set_qmp_timeout (q, 1000);
  kill (pid2, SIGSTOP);
  error_clear ();
  ok (qsd_export_add (q, b, img2, true) == 0,
      "an add that hits a wedged daemon succeeds on its replacement%s%s",
      error_category () ? ": " : "", error_category () ? error_message () : "");
  {
    int rc = -1;
    ok (wait_restarts (&ctx, 2, &rc) == 2 && rc == 0,
        "the wedged daemon was restarted and the callback ran");
  }
  pid3 = qsd_pid (q);
  ok (pid3 > 0 && pid3 != pid2 && wait_gone (pid2, 2000),
      "the wedged daemon is gone (pid %d -> %d)", (int) pid2, (int) pid3);
  ok (qsd_export_exists (q, a) && qsd_export_exists (q, b) &&
      nbd_read (port, a, 0xcd) == 0, "both exports work on the new daemon");
  ok (qsd_export_remove (q, a) == 0 && qsd_export_remove (q, b) == 0,
      "remove them");
  qsd_set_qmp_timeout (q, 0);
  pthread_mutex_lock (&ctx.lock);
  ctx.name[0] = '\0';
  pthread_mutex_unlock (&ctx.lock);

  /* Stop. */
  ok (qsd_export_add (q, a, img, true) == 0 && nbd_write (port, a, 0x5a) == 0,
      "write to an export left open at stop");
  qsd_stop (q);
  ok (wait_gone (pid3, 1000), "qsd_stop leaves no daemon (pid %d)", (int) pid3);
  ok (count_procs_with (sock) == 0, "no qemu-storage-daemon for this run dir");
  ok (!file_exists (pidfile) && !file_exists (sock),
      "pid file and socket removed");
  ok (file_read (img, 0x5a) == 0, "the daemon flushed the image as it exited");
  qsd_stop (NULL);
  ok (1, "qsd_stop (NULL) is a no-op");

  free (a);
  free (b);
  free (c);
}

/* Wait until something accepts connections on 127.0.0.1:port. */
static bool
wait_listening (int port, int ms)
{
  for (int t = 0; t < ms; t += 20) {
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_port = htons (port) };
    int fd = socket (AF_INET, SOCK_STREAM, 0), r;
    sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    r = connect (fd, (struct sockaddr *) &sin, sizeof sin);
    close (fd);
    if (r == 0)
      return true;
    sleep_ms (20);
  }
  return false;
}

static void
write_pid_file (const char *path, pid_t pid)
{
  FILE *fp = fopen (path, "w");
  if (fp) {
    fprintf (fp, "%d\n", (int) pid);
    fclose (fp);
  }
}

/* A hub that crashed left its daemon running, holding the NBD port; and a
 * pid file naming some unrelated process must not get it killed. */
static void
test_leftover (void)
{
  char run[PATH_MAX], pidfile[PATH_MAX + 16], sock[PATH_MAX + 16];
  char chardev[PATH_MAX + 64], nbd[128];
  int port = free_port (), status = 0;
  struct qsd_config cfg;
  struct qsd *q;
  pid_t old, other;

  snprintf (run, sizeof run, "%s/run-leftover", tmpdir);
  snprintf (pidfile, sizeof pidfile, "%s/qsd.pid", run);
  snprintf (sock, sizeof sock, "%s/qmp.sock", run);
  snprintf (chardev, sizeof chardev,
            "socket,path=%s,server=on,wait=off,id=qmp0", sock);
  snprintf (nbd, sizeof nbd,
            "addr.type=inet,addr.host=127.0.0.1,addr.port=%d", port);
  mkdir (run, 0700);

  old = fork ();
  if (old == 0) {
    execlp ("qemu-storage-daemon", "qemu-storage-daemon",
            "--chardev", chardev, "--monitor", "chardev=qmp0",
            "--nbd-server", nbd, (char *) NULL);
    _exit (127);
  }
  write_pid_file (pidfile, old);
  ok (wait_listening (port, 10000), "a leftover daemon (pid %d) holds port %d",
      (int) old, port);

  cfg = (struct qsd_config) { .run_dir = run, .nbd_host = "127.0.0.1",
                              .nbd_port = port };
  q = qsd_start (&cfg, NULL, NULL);
  ok (q != NULL, "qsd_start kills the leftover and starts%s%s",
      q ? "" : ": ", q ? "" : error_message ());
  if (q == NULL)         /* not killed: end it, and without a SIGKILL */
    kill (old, SIGTERM);
  ok (waitpid (old, &status, 0) == old && WIFSIGNALED (status) &&
      WTERMSIG (status) == SIGKILL, "the leftover was SIGKILLed");
  ok (q && qsd_pid (q) != old && qsd_pid (q) > 0, "a new daemon runs");
  qsd_stop (q);

  /* The pid file names a live process that is not the daemon. */
  other = fork ();
  if (other == 0) {
    execlp ("sleep", "sleep", "60", (char *) NULL);
    _exit (127);
  }
  write_pid_file (pidfile, other);
  q = qsd_start (&cfg, NULL, NULL);
  ok (q != NULL, "qsd_start with a pid file naming another program");
  ok (!proc_gone (other), "that program was not killed");

  /* A daemon that ignores SIGTERM (a stopped one can't act on it). */
  {
    pid_t d = q ? qsd_pid (q) : 0;
    struct timespec t0, t1;
    double secs;
    kill (d, SIGSTOP);
    clock_gettime (CLOCK_MONOTONIC, &t0);
    qsd_stop (q);
    clock_gettime (CLOCK_MONOTONIC, &t1);
    secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    ok (d > 0 && proc_gone (d) && secs >= 4.5 && secs < 8,
        "qsd_stop SIGKILLs a daemon that does not exit (%.1f s)", secs);
  }
  kill (other, SIGKILL);
  waitpid (other, NULL, 0);
}

static void
test_port_in_use (void)
{
  char run[PATH_MAX], sock[PATH_MAX + 16];
  struct sockaddr_in sin = { .sin_family = AF_INET };
  socklen_t len = sizeof sin;
  int fd = socket (AF_INET, SOCK_STREAM, 0);
  struct qsd_config cfg;
  struct qsd *q;

  snprintf (run, sizeof run, "%s/run-busy", tmpdir);
  snprintf (sock, sizeof sock, "%s/qmp.sock", run);
  sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (bind (fd, (struct sockaddr *) &sin, sizeof sin) == -1 ||
      listen (fd, 1) == -1 ||
      getsockname (fd, (struct sockaddr *) &sin, &len) == -1) {
    ok (0, "cannot set up a busy port: %m");
    return;
  }
  cfg = (struct qsd_config) { .run_dir = run, .nbd_host = "127.0.0.1",
                              .nbd_port = ntohs (sin.sin_port) };
  error_clear ();
  q = qsd_start (&cfg, NULL, NULL);
  ok (q == NULL, "qsd_start fails when the NBD port is taken");
  ok (strstr (error_message (), "is in use") != NULL &&
      error_category () == ERR_CONFLICT, "error: %s", error_message ());
  ok (count_procs_with (sock) == 0, "no daemon is left running");
  qsd_stop (q);
  close (fd);
}

/* The daemon must not outlive a hub that is SIGKILLed. */
static void
test_hub_death (void)
{
  char run[PATH_MAX];
  int pfd[2], port = free_port ();
  pid_t hub, daemon = 0;

  snprintf (run, sizeof run, "%s/run-orphan", tmpdir);
  if (pipe (pfd) == -1) {
    ok (0, "pipe: %m");
    return;
  }
  hub = fork ();
  if (hub == 0) {
    struct qsd_config cfg = { .run_dir = run, .nbd_host = "127.0.0.1",
                              .nbd_port = port };
    struct qsd *q = qsd_start (&cfg, NULL, NULL);
    pid_t p = q ? qsd_pid (q) : 0;
    if (write (pfd[1], &p, sizeof p) != sizeof p)
      _exit (1);
    for (;;)
      pause ();
  }
  close (pfd[1]);
  if (read (pfd[0], &daemon, sizeof daemon) != sizeof daemon)
    daemon = 0;
  close (pfd[0]);
  ok (daemon > 0 && !proc_gone (daemon), "a child hub started a daemon (pid %d)",
      (int) daemon);
  kill (hub, SIGKILL);
  waitpid (hub, NULL, 0);
  ok (daemon > 0 && wait_gone (daemon, 5000),
      "the daemon died with the SIGKILLed hub");
}

int
main (void)
{
  if (sh ("command -v qemu-storage-daemon && command -v qemu-io && "
          "command -v qemu-img") != 0)
    skip_all ("qemu-storage-daemon, qemu-io or qemu-img is missing");
  if (mkdtemp (tmpdir) == NULL) {
    perror ("mkdtemp");
    return 1;
  }
  /* Orphaned daemons reparent to us, so that we can see them die and reap
   * them even where init does not. */
  prctl (PR_SET_CHILD_SUBREAPER, 1);

  test_lifecycle ();
  test_leftover ();
  test_port_in_use ();
  test_hub_death ();

  sh ("rm -rf %s", tmpdir);
  return done_testing ();
}
