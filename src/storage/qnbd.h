/* storage/qnbd.h - a private qemu-nbd serving one image file.
 *
 * The copy engine reads file sources through one, restore writes a qcow2
 * output through one, and a merge step copies inside a chain through one.
 * It listens on a unix socket in a private temporary folder, is started
 * with util/proc's proc_spawn (so it dies with the process that started
 * it, even one killed by SIGKILL, and never outlives it by a race), and
 * qnbd_stop always kills and reaps it and removes the folder.
 */
#ifndef STRATA_STORAGE_QNBD_H
#define STRATA_STORAGE_QNBD_H

#include <stdbool.h>
#include <sys/types.h>

#define QNBD_MAX_EXTRA 8

struct qnbd {
  pid_t pid;
  char *dir;
  char *uri;                  /* nbd+unix:///?socket=DIR/sock */
};

/* Serve image (format "qcow2", "raw", ...), read-only or not (writes go
 * through qemu's writeback cache; a client flushes), exporting the dirty
 * bitmap named bitmap when it is not NULL, with up to QNBD_MAX_EXTRA more
 * qemu-nbd options (NULL-terminated, or NULL).  Returns once the socket
 * accepts connections (bounded), or -1 with the error set, naming
 * qemu-nbd's own last message when it exited. */
int qnbd_start (struct qnbd *q, const char *image, const char *format, bool ro,
                const char *bitmap, const char *const *extra);
void qnbd_stop (struct qnbd *q);

#endif
