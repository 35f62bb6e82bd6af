/* storage/qsd.h - the hub's qemu-storage-daemon, driven over QMP.
 *
 * The hub runs exactly one qemu-storage-daemon as its child.  It serves the
 * NBD targets that backup agents write into (and, later, read-only restore
 * exports).  The daemon can never outlive the hub: it is started with
 * PR_SET_PDEATHSIG from a thread that lives as long as the hub.  If it dies
 * while the hub runs, it is restarted and the hub's restart callback puts
 * the exports back.
 */
#ifndef STRATA_STORAGE_QSD_H
#define STRATA_STORAGE_QSD_H

#include <stdbool.h>
#include <sys/types.h>

struct qsd;

struct qsd_config {
  const char *run_dir;      /* QMP socket, pid file and log live here */
  const char *nbd_host;     /* numeric IPv4/IPv6 address to listen on */
  int nbd_port;
  const char *tls_psk_dir;  /* NULL, or a folder holding keys.psk: then every
                             * NBD client must do TLS with one of its keys */
};

/* Called (from the supervisor thread, with no qsd lock held) after the
 * daemon was restarted, so that the caller can re-add its exports. */
typedef void (*qsd_restart_fn) (struct qsd *q, void *opaque);

/* Start the daemon, connect to its QMP socket, start its NBD server, and
 * start supervising it.  Kills a daemon left behind by an earlier hub in the
 * same run_dir (pid file).  Returns NULL with the error set on failure. */
struct qsd *qsd_start (const struct qsd_config *cfg, qsd_restart_fn on_restart,
                       void *opaque);
/* Stop supervising, terminate the daemon (its images are flushed and closed
 * as it exits) and free everything.  NULL is a no-op.  No other thread may
 * be inside, or enter, a qsd_* call on q by then. */
void qsd_stop (struct qsd *q);

/* Export the QCOW2 file at path under the NBD export name `name`.
 * Idempotent: an export of that name that already exists is success (if it
 * is of another path or mode, that is ERR_CONFLICT).  While the daemon is
 * restarting it waits a few seconds, then fails with ERR_UNAVAILABLE.  name
 * must satisfy id_valid(), path must be absolute; an image that is missing
 * is ERR_NOT_FOUND, one that can't be opened otherwise ERR_INTERNAL, both
 * with a message that says the image cannot be opened. */
int qsd_export_add (struct qsd *q, const char *name, const char *path, bool writable);
/* Remove the export, dropping any client still connected, and close the
 * image, which flushes it to disk.  Returns only after the image is closed.
 * An export that does not exist is success, and so is any export while the
 * daemon is down: its exit closed every image. */
int qsd_export_remove (struct qsd *q, const char *name);
/* True when an export of that name exists now. */
bool qsd_export_exists (struct qsd *q, const char *name);

/* The daemon's pid now (changes after a restart); 0 while it is down. */
pid_t qsd_pid (struct qsd *q);
/* Whether the daemon of pid (a qsd_pid answer, not 0) has died: another
 * one is up or coming, or it no longer answers a QMP round trip.  An NBD
 * client can see the daemon die before the supervisor does; the round trip
 * that finds it dead declares it broken, so the supervisor restarts it.
 * False while it answers. */
bool qsd_died (struct qsd *q, pid_t pid);

/* How long a QMP command may go unanswered (default 30 s; ms <= 0 restores
 * it).  A daemon that exceeds it is wedged, and every NBD client with it:
 * it is SIGKILLed and restarted.  For tests, which can't wait 30 s. */
void qsd_set_qmp_timeout (struct qsd *q, int ms);

#endif
