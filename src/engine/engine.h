/* engine/engine.h - the copy engine: moves a disk's blocks over NBD with
 * libnbd, asynchronously, with many requests in flight.
 *
 * One module serves the three users of the data path: the backup agent
 * (`strata backup`), the restore command (`strata restore`) and the hub's
 * own workers (hub-driven backups).  Nothing here talks HTTP or to the
 * catalog: callers hand in the source, the target and the chain facts they
 * got from the hub, and the backup session (session.c) reaches the hub
 * only through its caller's callbacks.
 *
 * Every function returns 0 on success, -1 with the thread-local error set
 * (util/error.h).
 */
#ifndef STRATA_ENGINE_ENGINE_H
#define STRATA_ENGINE_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/state.h"

struct mf_map;                  /* integrity/manifest.h */

/* Live progress of one copy.  The engine updates it; anyone may read it
 * from another thread.  cancel asks the copy to stop as soon as it can (it
 * then fails with ERR_UNAVAILABLE, "cancelled"). */
struct engine_progress {
  _Atomic int64_t bytes_total;   /* bytes the copy covers; 0 until the
                                  * extents are mapped */
  _Atomic int64_t bytes_done;    /* of those, bytes handled so far */
  _Atomic int64_t started_ns;    /* CLOCK_MONOTONIC at the start, 0 before */
  _Atomic bool cancel;
};
/* The average rate since the copy started, in bytes per second (0 before
 * it started). */
int64_t engine_progress_rate (const struct engine_progress *p);

/* One disk of a backup, as the caller knows it. */
struct engine_backup_disk {
  /* A QCOW2 image path (strata manages its persistent dirty bitmaps), a
   * raw image or block device path (no change tracking: always a full
   * copy), or an NBD URI (nbd://, nbd+unix://, nbds://). */
  const char *source;
  /* NBD sources only: the bitmap the export carries, read through the meta
   * context "qemu:dirty-bitmap:NAME" for an incremental, or NULL. */
  const char *source_bitmap;
  /* NBD sources only: the change id to record for this backup (for
   * example libvirt's new checkpoint name), or NULL. */
  const char *source_change_id;
  /* NBD sources only: why the export is a full one although the chain has
   * a previous change id (libvirt's checkpoint was unusable), or NULL. */
  const char *source_full_reason;
  const char *target_uri;        /* the disk's nbd_uri from the hub */
  const char *tls_psk_file;      /* key file for nbds:// targets, or NULL */
  const char *backup_id;         /* names the new bitmap of a QCOW2 source */
  /* The change id the chain continues from (the hub's previous_change_id);
   * NULL or "" for a full. */
  const char *previous_change_id;
  /* The change id of the disk's latest completed backup in the context
   * when this backup started, or NULL.  For a full it is the chain being
   * replaced: its bitmap is removed at commit as well, so that repeated
   * fulls leave no bitmaps behind in the image. */
  const char *superseded_change_id;
  /* The target is an overlay backed by the previous backup (the hub's
   * per-disk backup_type "incremental"): anything that reads as zero in
   * the source but may hold data in the backing file is written as zeroes. */
  bool target_has_backing;
  /* Hash every block the copy reads (XXH3-128 per 64 KiB block) into this
   * map, made by the caller with mf_map_new (the source's size, a folder
   * of its choice); NULL: no hashing.  The caller keeps owning it.  A copy
   * attempt that fails may have put records into it. */
  struct mf_map *hashes;
};

/* What one disk's copy did. */
struct engine_disk_result {
  bool copied;          /* the copy ran to its end: mode says how */
  enum backup_type mode;/* what was copied */
  char *change_id;      /* the change id to record (a QCOW2 source's new
                         * bitmap), or NULL without change tracking */
  char *full_reason;    /* why a disk with a previous change id was copied
                         * in full, or NULL */
  int64_t size_bytes;   /* the source's virtual size */
  int64_t bytes_read;   /* data read from the source */
  int64_t bytes_written;/* data written to the target */
  int64_t bytes_zero;   /* bytes written to the target as zeroes */
  double seconds;
};

/* How long an NBD handshake may take, in seconds. */
#define ENGINE_CONNECT_TIMEOUT 30

/* The virtual size of a source, for the disks list of POST /backups; an
 * NBD source must answer within timeout_s seconds (ERR_UNAVAILABLE when it
 * does not). */
int engine_source_size (const char *source, int timeout_s, int64_t *size);
/* The names of the persistent dirty bitmaps of a QCOW2 file source, as a
 * NULL-terminated vector the caller frees (each string and the vector);
 * empty for any other source.  Reads without taking the image's lock. */
int engine_source_bitmaps (const char *source, char ***names);
/* Remove the named bitmap from a QCOW2 file source, if it has it. */
int engine_source_bitmap_remove (const char *source, const char *name);

/* Copy one disk into its target and flush the target.  A QCOW2 source
 * gets a new persistent bitmap first (its name becomes out->change_id); an
 * incremental reads the dirty extents of previous_change_id, or falls back
 * to a full copy, with out->full_reason, when that bitmap is missing or
 * inconsistent.  On failure the new bitmap is removed again. */
int engine_backup_disk (const struct engine_backup_disk *d, struct engine_progress *p,
                        struct engine_disk_result *out);

/* The change-tracking audit: read d->source again, as it is now (a QCOW2
 * or raw file through a fresh private read-only qemu-nbd, an NBD URI as
 * it is, so a live source's export must still be there), and hash into
 * observed (made by the caller for the source's size) every block
 * (percent 100: the zero extents as zero blocks, unread) or a random
 * sample of percent% of the blocks, the same for the same seed.  Nothing
 * of the backup's bitmaps is read or changed. */
int engine_audit_disk (const struct engine_backup_disk *d, int percent, uint64_t seed,
                       struct mf_map *observed, struct engine_progress *p);

/* Read the ranges of an NBD export (pairs offset, length: whole blocks,
 * the last may end at the export's size; ascending) with the copy engine's
 * connections, and hash them into map (made for the export's size). */
int engine_hash_ranges (const char *uri, const char *psk, const uint64_t *ranges,
                        size_t n_ranges, struct mf_map *map, struct engine_progress *p);

/* Call fn with each extent of an NBD export that holds data (neither a
 * hole nor zero, by "base:allocation"), in order.  fn returns 0, or -1 to
 * stop (its error is returned). */
int engine_data_extents (const char *uri, const char *psk,
                         int (*fn) (void *opaque, uint64_t offset, uint64_t length),
                         void *opaque);

/* After the hub accepted the completion: remove the bitmap the chain
 * continued from (previous_change_id) and the one of the backup this one
 * supersedes (superseded_change_id), both replaced by the new one.  A no-op
 * for sources without strata-managed bitmaps. */
int engine_backup_disk_commit (const struct engine_backup_disk *d,
                               const struct engine_disk_result *r);

/* After the hub refused the completion or the job failed: remove the new
 * bitmap, keep the previous one. */
void engine_backup_disk_abort (const struct engine_backup_disk *d,
                               const struct engine_disk_result *r);

/* Copy an NBD export (the hub's read-only restore export) into a local
 * file: format "raw" (sparse: holes stay holes) or "qcow2".  The output
 * must not exist yet; it is fsynced before success. */
int engine_restore (const char *source_uri, const char *tls_psk_file, const char *output,
                    const char *format, struct engine_progress *p,
                    struct engine_disk_result *out);

void engine_disk_result_clear (struct engine_disk_result *r);

/* --- A backup session (engine/session.c) ------------------------------
 * One job's protocol, as both the agent and the hub's workers run it: copy
 * each disk (a bounded number at once), have the hub record it, and at the
 * end commit the bitmaps (keep the new ones, remove those they replace) or
 * abort them (remove the new ones).  What "the hub" means is the caller's:
 * the agent's callbacks talk HTTP, the workers' call the hub core.
 *
 * The first failure stops the other copies; the caller's fail callback then
 * tells the hub once, after every copy has stopped, and answers what becomes
 * of the bitmaps. */

/* What becomes of the bitmaps when a session ends. */
enum engine_verdict {
  ENGINE_COMMIT,          /* the job's disks are all recorded: keep the new
                           * bitmaps, remove the ones they replace */
  ENGINE_ABORT,           /* the job failed: remove every new bitmap */
  ENGINE_KEEP_COMPLETED,  /* the hub could not be told: remove the new bitmaps
                           * of disks it did not record, keep the others for
                           * a rerun that resumes the job */
  ENGINE_LEAVE,           /* touch nothing: the job stays running (the hub is
                           * stopping; its next start resumes it) */
};

struct engine_session_disk {
  struct engine_backup_disk d;       /* in: filled by the caller */
  int disk_index;                    /* in: as the hub numbers it */
  struct engine_progress *progress;  /* in: the caller's, never NULL */
  /* in: recorded at the hub before this session (a resumed job): not
   * copied; result.change_id holds the change id the hub recorded. */
  bool done_before;
  /* in: after the disk is recorded, audit its change tracking
   * (engine_audit_disk) over this percent of its blocks (0: no audit),
   * sampled with this seed. */
  int audit_percent;
  uint64_t audit_seed;
  void *opaque;                      /* the caller's, for its callbacks */
  struct engine_disk_result result;  /* out: what the copy did */
  bool copied;                       /* out: copied and flushed */
  bool completed;                    /* out: the hub recorded it (or done_before) */
  char *error;                       /* out: why it failed, or NULL */
  /* out: the blocks the audit observed, for ops->audit_disk (owned by the
   * session, freed by engine_session_clear), or NULL. */
  struct mf_map *audit;
  struct engine_progress audit_progress;  /* private to session.c */
};

struct engine_session;

struct engine_session_ops {
  /* Have the hub record a copied, flushed disk.  0, or -1 with the error
   * set (the session fails). */
  int (*complete_disk) (struct engine_session *s, struct engine_session_disk *sd);
  /* Optional.  A disk's copy begins (called before each attempt). */
  void (*disk_start) (struct engine_session *s, struct engine_session_disk *sd);
  /* Optional.  A copy failed: whether to run it once more (the callback
   * may adjust sd->d, for instance set target_has_backing). */
  bool (*copy_again) (struct engine_session *s, struct engine_session_disk *sd);
  /* Optional.  The disk's audit read sd->audit: have the hub compare and
   * record it.  0, or -1 with the error set (reported through ops->warn;
   * an audit never fails the job). */
  int (*audit_disk) (struct engine_session *s, struct engine_session_disk *sd);
  /* Optional.  A disk's part is over, well (sd->completed) or not. */
  void (*disk_done) (struct engine_session *s, struct engine_session_disk *sd);
  /* Every disk is recorded: ENGINE_COMMIT when the job now owes only its
   * bitmaps, or what else to do (the job was ended meanwhile, or the hub
   * stops). */
  enum engine_verdict (*all_completed) (struct engine_session *s);
  /* A disk failed (disk_index) or the session was stopped (-1): tell the
   * hub, and answer what becomes of the bitmaps. */
  enum engine_verdict (*fail) (struct engine_session *s, int disk_index,
                               const char *reason);
  /* Optional.  A superseded bitmap could not be removed at commit, or a
   * disk's audit could not run (msg says which).  The backup itself is
   * complete and durable. */
  void (*warn) (struct engine_session *s, struct engine_session_disk *sd,
                const char *msg);
  /* Optional.  After the commit: the job is finished (the hub may mark it
   * completed now). */
  void (*finish) (struct engine_session *s);
};

/* A live source: the disks are the exports of one hypervisor backup job
 * (libvirt's pull mode, virt/virt.h), which the caller began before the
 * session.  Its change tracking belongs to the job, not to the disks, so
 * the session hands the job its ends instead of each disk's commit and
 * abort. */
struct engine_live_ops {
  /* Every copy has stopped: end the job (its exports go). */
  void (*end) (struct engine_session *s);
  /* ENGINE_COMMIT: delete what the new tracking replaces.  -1 with the
   * error set when something stays (reported through ops->warn). */
  int (*commit) (struct engine_session *s);
  /* Any other verdict but ENGINE_LEAVE: delete the new tracking. */
  void (*abort) (struct engine_session *s);
};

struct engine_session {
  const struct engine_session_ops *ops;
  void *opaque;                      /* the caller's */
  /* Optional, set after engine_session_init: the live source and its
   * object. */
  const struct engine_live_ops *live_ops;
  void *live;
  struct engine_session_disk *disks; /* the caller's array */
  size_t n;
  int parallel;                      /* copies at once (>= 1) */
  /* Private to session.c. */
  pthread_mutex_t lock;
  size_t next;
  bool stopped;
  int fail_index;                    /* the disk that failed first, or -1 */
  char *reason;                      /* the first failure, or NULL */
};

/* Set up a session over the caller's disks (which it keeps owning).
 * engine_session_stop may be called from then on. */
void engine_session_init (struct engine_session *s, const struct engine_session_ops *ops,
                          void *opaque, struct engine_session_disk *disks, size_t n,
                          int parallel);
/* Run it to its end and return the verdict it applied to the bitmaps. */
enum engine_verdict engine_session_run (struct engine_session *s);
/* From any thread: stop the copies; the session fails with reason (unless
 * something failed before). */
void engine_session_stop (struct engine_session *s, const char *reason);
/* Free what the session allocated: its reason, each disk's result and error. */
void engine_session_clear (struct engine_session *s);

#endif
