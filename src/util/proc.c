/* util/proc.c - running helper programs.
 *
 * Children are started with posix_spawn and reaped by pid with waitpid, so
 * this never steals the exit status of another child (the storage daemon's
 * supervisor waits for its own pid too).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/error.h"
#include "util/proc.h"

#define OUTPUT_MAX (64 * 1024)

extern char **environ;

/* The last non-empty line of s, copied into buf. */
static void
last_line (const char *s, char *buf, size_t len)
{
  const char *end = s + strlen (s), *start;
  while (end > s && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
    end--;
  start = end;
  while (start > s && start[-1] != '\n')
    start--;
  snprintf (buf, len, "%.*s", (int) (end - start), start);
}

/* Read the child's pipes until both close: fds[0] into out (stdout, or
 * both streams), fds[1] (-1: none) into err; each keeps its first
 * OUTPUT_MAX bytes and is NUL-terminated. */
static void
drain (int fds[2], char *out, size_t *out_used, char *err, size_t *err_used)
{
  struct pollfd p[2] = { { fds[0], POLLIN, 0 }, { fds[1], POLLIN, 0 } };
  char *bufs[2] = { out, err };
  size_t *used[2] = { out_used, err_used };
  int open_fds = fds[1] >= 0 ? 2 : 1;

  while (open_fds > 0) {
    if (poll (p, 2, -1) == -1) {
      if (errno == EINTR)
        continue;
      break;
    }
    for (int i = 0; i < 2; i++) {
      char chunk[4096];
      ssize_t n;

      if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      n = read (p[i].fd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        p[i].fd = -1;
        open_fds--;
        continue;
      }
      if (*used[i] < OUTPUT_MAX) {
        size_t take = (size_t) n < OUTPUT_MAX - *used[i] ? (size_t) n : OUTPUT_MAX - *used[i];
        memcpy (bufs[i] + *used[i], chunk, take);
        *used[i] += take;
      }
    }
  }
  out[*out_used] = '\0';
  err[*err_used] = '\0';
}

/* proc_run and proc_run_stdout: with split, standard error goes to a pipe
 * of its own, kept only for the error message. */
static int
run (const char *const argv[], char **output, bool split)
{
  posix_spawn_file_actions_t fa;
  CLEANUP_FREE char *buf = NULL;
  CLEANUP_FREE char *ebuf = NULL;
  size_t used = 0, eused = 0;
  int pipefd[2], errfd[2] = { -1, -1 }, status, r;
  pid_t pid;

  if (output)
    *output = NULL;
  buf = malloc (OUTPUT_MAX + 1);
  ebuf = malloc (OUTPUT_MAX + 1);
  if (buf == NULL || ebuf == NULL || pipe2 (pipefd, O_CLOEXEC) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "running %s", argv[0]);
    return -1;
  }
  if (split && pipe2 (errfd, O_CLOEXEC) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "running %s", argv[0]);
    close (pipefd[0]);
    close (pipefd[1]);
    return -1;
  }
  posix_spawn_file_actions_init (&fa);
  posix_spawn_file_actions_addopen (&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2 (&fa, pipefd[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2 (&fa, split ? errfd[1] : pipefd[1], STDERR_FILENO);
  r = posix_spawnp (&pid, argv[0], &fa, NULL, (char *const *) argv, environ);
  posix_spawn_file_actions_destroy (&fa);
  close (pipefd[1]);
  if (split)
    close (errfd[1]);
  if (r != 0) {
    close (pipefd[0]);
    if (split)
      close (errfd[0]);
    error_set_errno (ERR_INTERNAL, r, "cannot run %s", argv[0]);
    return -1;
  }

  {
    int fds[2] = { pipefd[0], errfd[0] };
    drain (fds, buf, &used, ebuf, &eused);
  }
  close (pipefd[0]);
  if (split)
    close (errfd[0]);

  while (waitpid (pid, &status, 0) == -1) {
    if (errno != EINTR) {
      error_set_errno (ERR_INTERNAL, errno, "waiting for %s", argv[0]);
      return -1;
    }
  }

  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
    char line[512];
    last_line (split && *ebuf ? ebuf : buf, line, sizeof line);
    if (WIFEXITED (status))
      error_set (ERR_INTERNAL, "%s failed (exit %d): %s", argv[0],
                 WEXITSTATUS (status), line);
    else
      error_set (ERR_INTERNAL, "%s killed by signal %d", argv[0],
                 WIFSIGNALED (status) ? WTERMSIG (status) : 0);
    if (output) {
      *output = buf;
      buf = NULL;
    }
    return -1;
  }
  if (output) {
    *output = buf;
    buf = NULL;
  }
  return 0;
}

int
proc_run (const char *const argv[], char **output)
{
  return run (argv, output, false);
}

int
proc_run_stdout (const char *const argv[], char **output)
{
  return run (argv, output, true);
}

/* Find argv0 in PATH before forking: the child may only make
 * async-signal-safe calls, and execvp's search is not one of them. */
static char *
find_program (const char *name)
{
  const char *path = getenv ("PATH"), *p, *end;
  char *full;

  if (strchr (name, '/'))
    return strdup (name);
  if (path == NULL)
    path = "/usr/local/bin:/usr/bin:/bin";
  for (p = path; ; p = end + 1) {
    end = strchr (p, ':');
    if (end == NULL)
      end = p + strlen (p);
    if (end > p && asprintf (&full, "%.*s/%s", (int) (end - p), p, name) > 0) {
      if (access (full, X_OK) == 0)
        return full;
      free (full);
    }
    if (*end == '\0')
      return NULL;
  }
}

int
proc_spawn (const char *const argv[], const char *log_path, pid_t *pid)
{
  CLEANUP_FREE char *prog = find_program (argv[0]);
  int in_fd, out_fd, r;
  pid_t parent = getpid (), child;

  if (prog == NULL) {
    error_set (ERR_INTERNAL, "cannot run %s: not found in PATH", argv[0]);
    return -1;
  }
  in_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  out_fd = open (log_path ? log_path : "/dev/null",
                 O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (in_fd == -1 || out_fd == -1) {
    error_set_errno (ERR_INTERNAL, errno, "running %s: %s", argv[0],
                     log_path ? log_path : "/dev/null");
    if (in_fd >= 0) close (in_fd);
    if (out_fd >= 0) close (out_fd);
    return -1;
  }
  child = fork ();
  if (child == -1) {
    r = errno;
    close (in_fd);
    close (out_fd);
    error_set_errno (ERR_INTERNAL, r, "cannot fork for %s", argv[0]);
    return -1;
  }
  if (child == 0) {
    /* Only async-signal-safe calls from here on. */
    sigset_t none;
    sigemptyset (&none);
    sigprocmask (SIG_SETMASK, &none, NULL);
    prctl (PR_SET_PDEATHSIG, SIGKILL);
    if (getppid () != parent)
      _exit (127);
    if (dup2 (in_fd, STDIN_FILENO) == -1 || dup2 (out_fd, STDOUT_FILENO) == -1 ||
        dup2 (out_fd, STDERR_FILENO) == -1)
      _exit (127);
    execv (prog, (char *const *) argv);
    _exit (127);
  }
  close (in_fd);
  close (out_fd);
  *pid = child;
  return 0;
}

int
proc_alive (pid_t pid, int *status)
{
  int st;
  pid_t r;

  if (pid <= 0)
    return 0;
  do
    r = waitpid (pid, &st, WNOHANG);
  while (r == -1 && errno == EINTR);
  if (r == 0)
    return 1;
  if (r == pid && status)
    *status = st;
  return 0;
}

void
proc_stop (pid_t pid)
{
  struct timespec ts = { 0, 10 * 1000 * 1000 };
  int i;

  if (pid <= 0 || !proc_alive (pid, NULL))
    return;
  kill (pid, SIGTERM);
  for (i = 0; i < 500; i++) {          /* 5 s */
    if (!proc_alive (pid, NULL))
      return;
    nanosleep (&ts, NULL);
  }
  kill (pid, SIGKILL);
  while (waitpid (pid, NULL, 0) == -1 && errno == EINTR)
    ;
}
