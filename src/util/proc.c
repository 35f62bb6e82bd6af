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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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

int
proc_run (const char *const argv[], char **output)
{
  posix_spawn_file_actions_t fa;
  CLEANUP_FREE char *buf = NULL;
  size_t used = 0;
  int pipefd[2], status, r;
  pid_t pid;

  if (output)
    *output = NULL;
  buf = malloc (OUTPUT_MAX + 1);
  if (buf == NULL || pipe2 (pipefd, O_CLOEXEC) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "running %s", argv[0]);
    return -1;
  }
  posix_spawn_file_actions_init (&fa);
  posix_spawn_file_actions_addopen (&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2 (&fa, pipefd[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2 (&fa, pipefd[1], STDERR_FILENO);
  r = posix_spawnp (&pid, argv[0], &fa, NULL, (char *const *) argv, environ);
  posix_spawn_file_actions_destroy (&fa);
  close (pipefd[1]);
  if (r != 0) {
    close (pipefd[0]);
    error_set_errno (ERR_INTERNAL, r, "cannot run %s", argv[0]);
    return -1;
  }

  for (;;) {
    char chunk[4096];
    ssize_t n = read (pipefd[0], chunk, sizeof chunk);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    if (used < OUTPUT_MAX) {
      size_t take = (size_t) n < OUTPUT_MAX - used ? (size_t) n : OUTPUT_MAX - used;
      memcpy (buf + used, chunk, take);
      used += take;
    }
  }
  close (pipefd[0]);
  buf[used] = '\0';

  while (waitpid (pid, &status, 0) == -1) {
    if (errno != EINTR) {
      error_set_errno (ERR_INTERNAL, errno, "waiting for %s", argv[0]);
      return -1;
    }
  }

  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
    char line[512];
    last_line (buf, line, sizeof line);
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
