/* util/state.h - the domain's small vocabularies as enums: job and disk
 * statuses, backup types, drivers, repository types, task kinds and
 * statuses, verify states.
 *
 * Inside the program these are enums; they become text only at the edges,
 * where the catalog stores them and where JSON carries them, and both edges
 * use the one table per vocabulary in util/state.c, so the words the
 * database's CHECK constraints and the API documentation list are written
 * once in C.
 *
 * Job life:   running -> finishing -> completed      (hub-driven: the bitmaps
 *             running -> completed                    are committed between)
 *             running -> failed | cancelled
 *             completed -> removing -> (rows gone)   a prune merges it away
 * Disk life:  pending -> running -> completed | failed
 */
#ifndef STRATA_UTIL_STATE_H
#define STRATA_UTIL_STATE_H

#include <stdbool.h>
#include <stddef.h>

enum job_status {
  JOB_RUNNING,
  JOB_FINISHING,     /* every disk recorded; the job still owes work at its
                      * sources (removing superseded bitmaps) */
  JOB_COMPLETED,
  JOB_FAILED,
  JOB_CANCELLED,
  JOB_REMOVING,      /* a prune task chose it: no longer a point, its files
                      * are being merged into the points that stay */
};

enum disk_status {
  DISK_PENDING,
  DISK_RUNNING,
  DISK_COMPLETED,
  DISK_FAILED,
};

enum backup_type {
  BACKUP_FULL,
  BACKUP_INCREMENTAL,
};

enum repo_type {
  REPO_LOCAL,        /* a folder of the hub's machine */
  REPO_NFS,          /* the folder where an NFS share is mounted */
  REPO_CIFS,         /* the folder where a CIFS/SMB share is mounted */
};

/* Long-running hub operations (GET /api/v1/tasks). */
enum task_kind {
  TASK_PRUNE,
  TASK_VERIFY,       /* reads a point's files back against their manifests */
};

enum task_status {
  TASK_RUNNING,
  TASK_COMPLETED,
  TASK_FAILED,
};

/* What the last verify (or audit) of a backup disk, or of a whole backup,
 * found: none until one ran; a corrupt disk row is never a parent. */
enum verify_state {
  VERIFY_NONE,
  VERIFY_OK,
  VERIFY_CORRUPT,
};

enum job_driver {
  DRIVER_AGENT,      /* an outside client writes the NBD targets */
  DRIVER_HUB,        /* the hub's workers copy from the inventory's sources */
};

/* The text form of a value ("running", "full", "hub", ...).  A value outside
 * the enum gives "?" (never NULL). */
const char *job_status_name (enum job_status s);
const char *disk_status_name (enum disk_status s);
const char *backup_type_name (enum backup_type t);
const char *job_driver_name (enum job_driver d);
const char *repo_type_name (enum repo_type t);
const char *task_kind_name (enum task_kind k);
const char *task_status_name (enum task_status s);
const char *verify_state_name (enum verify_state s);

/* Parse a text form.  Returns 0 and sets *out, or -1 (nothing set, no error
 * recorded: the edge that read the text knows whether a bad word is a
 * client's mistake or a damaged catalog). */
int job_status_parse (const char *s, enum job_status *out);
int disk_status_parse (const char *s, enum disk_status *out);
int backup_type_parse (const char *s, enum backup_type *out);
int job_driver_parse (const char *s, enum job_driver *out);
int repo_type_parse (const char *s, enum repo_type *out);
int task_kind_parse (const char *s, enum task_kind *out);
int task_status_parse (const char *s, enum task_status *out);
int verify_state_parse (const char *s, enum verify_state *out);

/* The words of a vocabulary for a message, quoted, in order: "\"full\" or
 * \"incremental\"".  Truncated to len (always terminated). */
void job_status_words (char *buf, size_t len);
void disk_status_words (char *buf, size_t len);
void backup_type_words (char *buf, size_t len);
void job_driver_words (char *buf, size_t len);
void repo_type_words (char *buf, size_t len);
void task_kind_words (char *buf, size_t len);
void task_status_words (char *buf, size_t len);
void verify_state_words (char *buf, size_t len);

/* A job that holds its context: no other job of the context may start, and
 * its rows may not be deleted (running or finishing). */
static inline bool
job_status_active (enum job_status s)
{
  return s == JOB_RUNNING || s == JOB_FINISHING;
}

#endif
