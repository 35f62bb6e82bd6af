/* virt/virt.h - live libvirt domains as backup sources: their disks,
 * pull-mode backups with a checkpoint per backup, and the clean-up of
 * strata's own checkpoints.
 *
 * One backup of a domain, as the agent and the hub's workers run it:
 *
 *   virt_open (URI, domain)        the writable disks, in target order
 *   virt_backup_begin (backup id)  one libvirt backup job for every disk:
 *                                  each disk's NBD URI, bitmap, change id
 *   ... the copy engine reads each disk's export ...
 *   virt_backup_end                the job ends (virDomainAbortJob)
 *   virt_backup_commit             the hub recorded the job: the previous
 *                                  checkpoints go
 *   or virt_backup_abort           it failed: the new checkpoint goes
 *   virt_close                     a domain started for the backup is
 *                                  shut off again
 *
 * Every function returns 0 on success, -1 with the thread-local error set
 * (util/error.h); the void ones report nothing and keep the caller's error.
 */
#ifndef STRATA_VIRT_VIRT_H
#define STRATA_VIRT_VIRT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* libvirt's default: the system QEMU driver. */
#define VIRT_DEFAULT_URI "qemu:///system"
/* The prefix of every checkpoint strata makes; it never touches others. */
#define VIRT_CHECKPOINT_PREFIX "strata-"

/* One writable disk of the domain. */
struct virt_disk {
  char *target;          /* vda, vdb, sda, ... */
  char *path;            /* its file or block device (for messages) */
  char *format;          /* the image format QEMU opens: qcow2, raw, ... */
  bool tracked;          /* qcow2: a checkpoint can hold its bitmap */
  int64_t size;          /* virtual size in bytes */

  /* In, for virt_backup_begin: the change id the hub's chain continues
   * from (the disk's last backup's), or NULL for a full. */
  const char *previous;

  /* Out, from virt_backup_begin (owned by the domain object). */
  char *nbd_uri;         /* the export of the disk's point in time */
  char *bitmap;          /* the export's dirty bitmap for an incremental,
                          * or NULL: a full copy */
  char *change_id;       /* "<new checkpoint>:<target>", or NULL (not
                          * tracked) */
  char *full_reason;     /* why a disk with a previous change id is
                          * copied in full, or NULL */
  char *prev_checkpoint; /* private: the checkpoint of previous */
};

struct virt_domain;

/* Connect to uri (NULL: VIRT_DEFAULT_URI) and read the domain's disks.
 * The disks that cannot be backed up (cdroms, floppies, read-only and
 * shareable disks, network disks) are left out; *skipped (caller frees,
 * NULL when none) lists them with why, one "vdc: cdrom" a comma apart.
 * Returns NULL with the error set (ERR_NOT_FOUND: no such domain;
 * ERR_UNAVAILABLE: libvirtd cannot be reached). */
struct virt_domain *virt_open (const char *uri, const char *name, char **skipped);

/* The domain's disks (owned by it), in target order. */
struct virt_disk *virt_disks (struct virt_domain *vd, size_t *n);

/* Start the pull-mode backup of every disk: a shut-off domain is started
 * paused first; a new checkpoint named after backup_id covers the tracked
 * disks; a disk whose previous checkpoint is usable is exported
 * incremental, the others in full with their full_reason.  Broken strata
 * checkpoints found on the way are deleted (metadata only when their
 * bitmap is gone).  quiesce: freeze the guest's file systems around the
 * start through its agent; when that fails the backup goes on
 * crash-consistent and *quiesce_note (caller frees) says why. */
int virt_backup_begin (struct virt_domain *vd, const char *backup_id, bool quiesce,
                       char **quiesce_note);

/* End the backup job (its exports and scratch files go).  Idempotent. */
void virt_backup_end (struct virt_domain *vd);

/* The hub recorded the job: delete the strata checkpoints the new one
 * replaces (named by the change ids olds; NULL entries and non-strata
 * checkpoints skipped).
 * Returns -1 when one could not be deleted (the backup is still good). */
int virt_backup_commit (struct virt_domain *vd, const char *const *olds, size_t n);

/* The backup failed: delete its new checkpoint; the previous ones stay. */
void virt_backup_abort (struct virt_domain *vd);

/* End the job if it still runs, shut off a domain started for the backup,
 * disconnect and free.  virt_close (NULL) does nothing. */
void virt_close (struct virt_domain *vd);

struct engine_session;

/* Begin the backup of a session whose disks are the domain's, one for one
 * in target order: each disk's previous change id comes from
 * s->disks[i].d.previous_change_id, and its source, bitmap, change id and
 * full reason are set to the job's (pointing into vd, which must outlive
 * the session).  The session then ends the job after its copies and
 * commits or aborts the checkpoints (s->live_ops).  Arguments and return
 * as virt_backup_begin. */
int virt_session_begin (struct virt_domain *vd, struct engine_session *s,
                        const char *backup_id, bool quiesce, char **quiesce_note);

/* Whether source names a libvirt domain ("libvirt://NAME"); *name points
 * into source. */
bool virt_source_parse (const char *source, const char **name);

#endif
