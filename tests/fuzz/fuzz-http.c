/* tests/fuzz/fuzz-http.c - libFuzzer target for HTTP request heads, through
 * the real libmicrohttpd daemon and the API's own handlers.
 *
 * The first input opens a real hub (a fresh data folder under $TMPDIR, the
 * SQLite catalog, the storage daemon, an API token file) and starts its API
 * on a free loopback port, as `strata serve` does.  Each input is then sent
 * as one request over a new TCP connection, whose writing side is then
 * shut; the target reads what comes back until the hub closes it.  Only
 * the head is sent (the input up to its first empty line): a body could
 * reach routes that write, and the body parsers have fuzz-body.
 *
 * What must hold: an answer (or a close) within ANSWER_MS, never a hang;
 * an answer that starts with a well-formed status line; no 5xx (but 505,
 * see below), since a request head alone can only be a client's mistake; and no crash, leak or
 * sanitizer report in the hub.  The hub lives as long as the process; its
 * data folder is removed at exit (a crash leaves it, and the storage daemon
 * dies with its parent).  FUZZ_HTTP_SHOW=1 prints each status line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "hub/hub.h"
#include "util/error.h"
#include "util/log.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define FUZZ_TOKEN "fuzz-token-5a1c9e"   /* the seeds' Authorization */
#define ANSWER_MS 8000                   /* a hang, past this */

static struct hub *hub;
static struct api *api;
static uint16_t api_port;
static char data_dir[64];

/* A loopback port nothing listens on now (it may be taken before we bind
 * it: the caller retries). */
static uint16_t
free_port (void)
{
  struct sockaddr_in sin = { .sin_family = AF_INET };
  socklen_t len = sizeof sin;
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (fd == -1 || bind (fd, (struct sockaddr *) &sin, sizeof sin) == -1 ||
      getsockname (fd, (struct sockaddr *) &sin, &len) == -1)
    abort ();
  close (fd);
  return ntohs (sin.sin_port);
}

static int
remove_one (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void) st; (void) flag; (void) ftw;
  remove (path);
  return 0;
}

static void
stop_hub (void)
{
  api_stop (api);
  hub_close (hub);
  if (data_dir[0])
    nftw (data_dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void
start_hub (void)
{
  const char *tmp = getenv ("TMPDIR");
  char token_file[128];
  FILE *fp;

  signal (SIGPIPE, SIG_IGN);
  log_set_level (LOG_ERROR);
  snprintf (data_dir, sizeof data_dir, "%s/strata-fuzz-http-XXXXXX",
            tmp && strlen (tmp) < 32 ? tmp : "/tmp");
  if (mkdtemp (data_dir) == NULL)
    abort ();
  snprintf (token_file, sizeof token_file, "%s/token", data_dir);
  fp = fopen (token_file, "w");
  if (fp == NULL || fprintf (fp, "%s\n", FUZZ_TOKEN) < 0 || fclose (fp) != 0)
    abort ();
  atexit (stop_hub);

  for (int attempt = 0; attempt < 5 && api == NULL; attempt++) {
    struct hub_config cfg;
    char listen[32], nbd[32], dir[80];
    char *argv[] = {
      "serve", "--data-dir", dir, "--listen", listen, "--nbd-listen", nbd,
      "--api-token-file", token_file, NULL
    };

    api_port = free_port ();
    snprintf (listen, sizeof listen, "127.0.0.1:%u", api_port);
    snprintf (nbd, sizeof nbd, "127.0.0.1:%u", free_port ());
    snprintf (dir, sizeof dir, "%s/data", data_dir);
    if (hub_config_parse (&cfg, 9, argv) != 0)
      abort ();
    hub = hub_open (&cfg);
    if (hub != NULL && (api = api_start (hub)) == NULL) {
      hub_close (hub);
      hub = NULL;
    }
    if (api == NULL)
      fprintf (stderr, "fuzz-http: hub start failed: %s\n", error_message ());
  }
  if (api == NULL)
    abort ();
}

/* How much of the input is the request head: up to and with its first
 * empty line (CRLF CRLF, or bare LFs), else all of it. */
static size_t
head_length (const uint8_t *data, size_t size)
{
  for (size_t i = 0; i + 1 < size; i++) {
    if (data[i] != '\n')
      continue;
    if (data[i + 1] == '\n')
      return i + 2;
    if (data[i + 1] == '\r' && i + 2 < size && data[i + 2] == '\n')
      return i + 3;
  }
  return size;
}

/* A connect(2) interrupted by a signal goes on in the background: wait
 * for it.  0, or -1 with errno set. */
static int
connected_late (int fd)
{
  struct pollfd pfd = { .fd = fd, .events = POLLOUT };
  socklen_t len = sizeof (int);
  int r, err = 0;

  do
    r = poll (&pfd, 1, ANSWER_MS);
  while (r == -1 && errno == EINTR);
  if (r <= 0 || getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
    return -1;
  errno = err;
  return err ? -1 : 0;
}

static int64_t
now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct sockaddr_in sin = { .sin_family = AF_INET };
  static char answer[4096];
  size_t len = head_length (data, size), done = 0, got = 0;
  int64_t deadline;
  int fd;

  if (api == NULL)
    start_hub ();
  sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  sin.sin_port = htons (api_port);
  /* libFuzzer's -timeout is a SIGALRM each second or so: every call that
   * waits may fail with EINTR. */
  fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || (connect (fd, (struct sockaddr *) &sin, sizeof sin) == -1 &&
                   (errno != EINTR || connected_late (fd) == -1))) {
    perror ("fuzz-http: connect");
    abort ();
  }
  deadline = now_ms () + ANSWER_MS;
  /* The hub may answer (and close) before it has read everything. */
  while (done < len) {
    ssize_t n = send (fd, data + done, len - done, MSG_NOSIGNAL);
    if (n == -1 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    done += n;
  }
  shutdown (fd, SHUT_WR);

  for (;;) {
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int64_t left = deadline - now_ms ();
    ssize_t n;

    int r = left > 0 ? poll (&pfd, 1, (int) left) : 0;

    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      fprintf (stderr, "fuzz-http: no answer or close within %d ms\n", ANSWER_MS);
      abort ();
    }
    n = recv (fd, answer + got, sizeof answer - 1 - got, MSG_DONTWAIT);
    if (n == -1 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n <= 0)
      break;
    got += n;
    if (got == sizeof answer - 1)
      got = 16;                /* keep the status line, drop the rest */
  }
  close (fd);
  answer[got] = '\0';

  /* Nothing at all is a close without an answer: allowed.  Otherwise a
   * status line, and not a server error. */
  if (got > 0) {
    int status = 0;
    CHECK (got >= 12 && memcmp (answer, "HTTP/1.", 7) == 0 && answer[8] == ' ');
    CHECK (sscanf (answer + 9, "%3d", &status) == 1);
    if (getenv ("FUZZ_HTTP_SHOW"))
      fprintf (stderr, "fuzz-http: the hub answered %.12s\n", answer);
    /* 505 is libmicrohttpd's answer to a version other than HTTP/1.x: a
     * client's mistake that the standard gives a 5xx code. */
    CHECK (status >= 100 && (status < 500 || status == 505));
  }
  return 0;
}
