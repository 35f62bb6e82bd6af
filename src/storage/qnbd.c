/* storage/qnbd.c - a private qemu-nbd serving one image file
 * (storage/qnbd.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "storage/qnbd.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/proc.h"

/* The last line of a small log file, for error messages. */
static void
log_tail (const char *path, char *buf, size_t len)
{
  char tmp[480];
  ssize_t n;
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  char *e, *s;

  buf[0] = '\0';
  if (fd == -1)
    return;
  n = pread (fd, tmp, sizeof tmp - 1, 0);
  close (fd);
  if (n <= 0)
    return;
  tmp[n] = '\0';
  e = tmp + n;
  while (e > tmp && (e[-1] == '\n' || e[-1] == ' '))
    *--e = '\0';
  s = strrchr (tmp, '\n');
  snprintf (buf, len, "%s", s ? s + 1 : tmp);
}

int
qnbd_start (struct qnbd *q, const char *image, const char *format, bool ro,
            const char *bitmap, const char *const *extra)
{
  const char *tmp = getenv ("TMPDIR");
  CLEANUP_FREE char *sock = NULL, *log = NULL, *bm = NULL, *fmt = NULL;
  const char *argv[16 + QNBD_MAX_EXTRA];
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int n = 0, i;

  memset (q, 0, sizeof *q);
  if (tmp == NULL || strlen (tmp) > 60)
    tmp = "/tmp";
  if (asprintf (&q->dir, "%s/strata-nbd-XXXXXX", tmp) == -1) {
    q->dir = NULL;
    goto oom;
  }
  if (mkdtemp (q->dir) == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "creating a folder in %s", tmp);
    free (q->dir);
    q->dir = NULL;
    return -1;
  }
  if (asprintf (&sock, "%s/sock", q->dir) == -1 ||
      asprintf (&log, "%s/log", q->dir) == -1 ||
      asprintf (&fmt, "--format=%s", format) == -1 ||
      (bitmap && asprintf (&bm, "--bitmap=%s", bitmap) == -1) ||
      asprintf (&q->uri, "nbd+unix:///?socket=%s", sock) == -1)
    goto oom;

  argv[n++] = "qemu-nbd";
  argv[n++] = fmt;
  if (ro)
    argv[n++] = "--read-only";
  argv[n++] = "--persistent";
  argv[n++] = "--shared=0";
  argv[n++] = "--socket";
  argv[n++] = sock;
  if (!ro)
    argv[n++] = "--cache=writeback";
  if (bm)
    argv[n++] = bm;
  for (int k = 0; extra && extra[k] && k < QNBD_MAX_EXTRA; k++)
    argv[n++] = extra[k];
  argv[n++] = image;
  argv[n] = NULL;
  if (proc_spawn (argv, log, &q->pid) == -1) {
    qnbd_stop (q);
    return -1;
  }

  /* Ready once the socket accepts a connection; bounded. */
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", sock);
  for (i = 0; i < 3000; i++) {           /* 30 s */
    struct timespec ts = { 0, 10 * 1000 * 1000 };
    int status = 0, fd;

    if (!proc_alive (q->pid, &status)) {
      char line[512];
      log_tail (log, line, sizeof line);
      q->pid = 0;
      error_set (ERR_INTERNAL, "qemu-nbd on %s exited: %s", image,
                 line[0] ? line : "no message");
      qnbd_stop (q);
      return -1;
    }
    fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect (fd, (struct sockaddr *) &sa, sizeof sa) == 0) {
      close (fd);
      return 0;
    }
    if (fd >= 0)
      close (fd);
    nanosleep (&ts, NULL);
  }
  error_set (ERR_INTERNAL, "qemu-nbd on %s did not come up", image);
  qnbd_stop (q);
  return -1;

 oom:
  error_set_errno (ERR_INTERNAL, ENOMEM, "starting qemu-nbd");
  qnbd_stop (q);
  return -1;
}

void
qnbd_stop (struct qnbd *q)
{
  if (q->pid > 0)
    proc_stop (q->pid);
  q->pid = 0;
  if (q->dir) {
    char p[PATH_MAX];
    snprintf (p, sizeof p, "%s/sock", q->dir);
    unlink (p);
    snprintf (p, sizeof p, "%s/log", q->dir);
    unlink (p);
    rmdir (q->dir);
  }
  free (q->dir);
  free (q->uri);
  q->dir = q->uri = NULL;
}

