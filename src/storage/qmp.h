/* storage/qmp.h - a QMP client connection (the QEMU Machine Protocol).
 *
 * One connection to a QEMU process's monitor: the greeting and capabilities
 * negotiation, then one command at a time, each matched to its reply by id,
 * with asynchronous events handed to a callback on the way.  It knows
 * nothing about which process it talks to; storage/qsd.c owns the
 * qemu-storage-daemon and decides what a broken connection means.
 *
 * A connection is not thread-safe: its owner serialises the calls.
 */
#ifndef STRATA_STORAGE_QMP_H
#define STRATA_STORAGE_QMP_H

#include <jansson.h>

/* The longest message accepted from the peer; a longer line breaks the
 * connection rather than growing the buffer without end. */
#define QMP_MSG_MAX (16 * 1024 * 1024)

struct qmp;

/* Called for each event read while waiting for a reply.  name is the
 * event's name, data its "data" member or NULL; both are borrowed. */
typedef void (*qmp_event_fn) (const char *name, json_t *data, void *opaque);

/* A connection over fd, a connected stream socket, which it takes over
 * (and closes in qmp_free, even when this fails).  peer names the other
 * end in error messages ("qemu-storage-daemon").  Returns NULL with the
 * error set. */
struct qmp *qmp_new (int fd, const char *peer);
/* Connect to the monitor listening at the unix socket path: one attempt.
 * Returns NULL with the error set; while nothing listens there yet, the
 * error's errno is ENOENT or ECONNREFUSED, so a caller can retry. */
struct qmp *qmp_connect (const char *path, const char *peer);
/* Close the connection.  NULL is a no-op. */
void qmp_free (struct qmp *m);

/* Events seen from now on go to fn (NULL: they are only logged). */
void qmp_set_event_handler (struct qmp *m, qmp_event_fn fn, void *opaque);

/* Read the greeting and leave capabilities negotiation mode, within
 * timeout_ms.  Returns 0, or -1 with the error set (ERR_UNAVAILABLE when
 * the peer does not speak QMP or the transport failed). */
int qmp_handshake (struct qmp *m, int timeout_ms);

/* Run one command and wait up to timeout_ms for its reply, handing events
 * to the handler and skipping replies to commands given up on.  args (may
 * be NULL) is stolen.
 *
 * Returns 0 with *ret (if ret is not NULL) a new reference to the "return"
 * value; -1 when the peer answered with an error, whose desc (or else its
 * class, or else "QMP error", empty strings counting as missing) becomes
 * the message, with ERR_INTERNAL that callers refine; or -2
 * on a transport failure (closed, malformed, oversized, timed out), with
 * ERR_UNAVAILABLE.  After -2 the stream can't be trusted: every later call
 * fails with -2 too, and the owner should drop the connection. */
int qmp_execute (struct qmp *m, const char *cmd, json_t *args, int timeout_ms,
                 json_t **ret);

#endif
