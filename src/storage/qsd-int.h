/* storage/qsd-int.h - what storage/qsd.c and storage/qsd-export.c share.
 *
 * qsd.c supervises the daemon process and owns the QMP connection to it;
 * qsd-export.c runs the NBD server and its exports over that connection.
 * The locking rules for the fields below are at the top of qsd.c.
 */
#ifndef STRATA_STORAGE_QSD_INT_H
#define STRATA_STORAGE_QSD_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "storage/qmp.h"
#include "storage/qsd.h"
#include "util/error.h"

#define QSD_PROGRAM "qemu-storage-daemon"
#define QMP_TIMEOUT_MS 30000        /* a command's reply */
#define QSD_STARTUP_MS 10000        /* from fork to a connected QMP socket */
#define QSD_WAIT_UP_MS 10000        /* API calls wait this long for a restart */
#define QSD_EXPORT_DEL_MS 10000     /* an export's asynchronous deletion */

/* One export of the daemon now running; see the export map in
 * qsd-export.c. */
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
  char *nbd_server_arg;       /* --nbd-server: the listening socket, fd QSD_NBD_FD */
  char *tls_object_arg;       /* --object tls-creds-psk, or NULL */
  int nbd_fd;                 /* the NBD listening socket, the hub's (-1: none) */
  char *tls_psk_dir;          /* NULL, or the PSK folder NBD clients need */
  int nbd_port;
  qsd_restart_fn on_restart;
  void *opaque;
  pthread_t thread;
  int max_fd;

  /* Protected by qmp_lock. */
  pthread_mutex_t qmp_lock;
  struct qmp *qmp;            /* NULL while not connected */
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
  struct error_saved start_err;
};

/* qsd.c */
void qsd_sleep_ms (int ms);
int qsd_qmp (struct qsd *q, const char *cmd, json_t *args, json_t **ret);
int qsd_acquire (struct qsd *q, bool gone_ok, int64_t deadline);
bool qsd_wait_reaped (struct qsd *q, uint64_t gen);

/* qsd-export.c */
const char *qsd_addr (const struct qsd *q, char *buf, size_t len);
/* The fd number the daemon finds the NBD listening socket at. */
#define QSD_NBD_FD 4
int qsd_listen (struct qsd *q);
void qsd_exports_clear (struct qsd *q);

#endif
