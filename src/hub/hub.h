/* hub/hub.h - the hub's core: configuration, start-up recovery, and the
 * backup state transitions that tie the catalog, the repository files and
 * the storage daemon's NBD exports together.  struct hub is opaque here;
 * the files of src/hub/ share it through hub/hub-int.h.
 *
 * The HTTP layer validates input and calls these; nothing here knows about
 * HTTP.  Every function returns 0 or -1 with the thread-local error set
 * (util/error.h), whose category decides the HTTP status.
 */
#ifndef STRATA_HUB_HUB_H
#define STRATA_HUB_HUB_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "catalog/catalog.h"
#include "integrity/manifest.h"
#include "lifecycle/retention.h"
#include "util/net.h"

#define STRATA_VERSION "0.1.0"

/* Limits shared by the API validation and the core. */
#define HUB_MAX_DISKS 256
#define HUB_MAX_DISK_INDEX 1023
#define HUB_MAX_DISK_SIZE (INT64_C (1) << 51)   /* what QCOW2 with 64 KiB clusters holds */
#define HUB_SOURCE_TIMEOUT 10   /* seconds a start waits for a source's size */
#define HUB_MAX_CHANGE_ID 1024
#define HUB_MAX_CHANGE_IDS 1024      /* per POST /api/v1/backups/changeids */
#define HUB_MAX_ERROR 4096

struct hub_config {
  char *data_dir;          /* default ./var */
  char *listen;            /* default 127.0.0.1:8082 */
  char *nbd_listen;        /* default 127.0.0.1:10809 */
  char *db;                /* default sqlite://DATA-DIR/catalog.db */
  char *db_password_file;  /* NULL: $STRATA_DB_PASSWORD or the URL's */
  char *api_token_file;    /* NULL: no authentication */
  char *nbd_tls_psk_file;  /* the operator's NBD keys; NULL: DATA-DIR/nbd.psk */
  bool nbd_insecure;       /* NBD without TLS (not with nbd_tls_psk_file) */
  char *tls_cert_file;     /* the API's certificate and key (PEM), both or */
  char *tls_key_file;      /* neither; NULL: self-signed off loopback */
  bool insecure_no_auth;   /* off loopback, run without --api-token-file */
  int workers;             /* hub-driven backups copied at once (default 2) */
  char *source_dirs;       /* DIR[:DIR...] that hub-driven path sources must lie
                            * in; NULL: any absolute path */
  char *libvirt_uri;       /* where libvirt:// sources live; NULL:
                            * qemu:///system */
  bool check_only;         /* --check-config: parse, print, start nothing */
};

/* Fill cfg from the `strata serve` command line, reading --config FILE
 * first so that options on the command line win.  Returns 0, 1 when --help
 * was shown, or -1 with ERR_INVALID naming the bad option or line. */
int hub_config_parse (struct hub_config *cfg, int argc, char **argv);
void hub_config_clear (struct hub_config *cfg);
void hub_config_usage (void);
/* Print the options in effect as config-file lines (--check-config). */
void hub_config_print (const struct hub_config *cfg, FILE *fp);

/* The hub: opaque outside src/hub/ (hub/hub-int.h has it). */
struct hub;

/* Open the hub: data folder, catalog (migrated), the default repository on
 * a first start, the storage daemon, then recovery: report and remove files
 * no row owns, mark rows whose file is gone, re-export the disks of running
 * jobs.  Takes ownership of cfg's strings.  NULL on error. */
struct hub *hub_open (struct hub_config *cfg);
void hub_close (struct hub *hub);        /* NULL is a no-op */
bool hub_storage_up (struct hub *hub);

/* What the HTTP layer and main may read of the hub. */
struct catalog *hub_catalog (struct hub *hub);   /* for reads; the hub owns it */
const char *hub_started_at (struct hub *hub);    /* when this process started */
/* This hub's id ("hub-<16 hex>", DATA-DIR/hub-id): the owner that the
 * catalog records of its jobs and tasks (hub/identity.c). */
const char *hub_id (struct hub *hub);
/* Whether owner_hub (a job's or task's) is this hub. */
bool hub_owns (struct hub *hub, const char *owner_hub);
/* The API's listen address (*text: as configured, may be NULL). */
const struct net_addr *hub_api_address (struct hub *hub, const char **text);
const char *hub_nbd_listen (struct hub *hub);
/* The API's TLS certificate and key as PEM text (the hub owns them): true
 * when the API speaks HTTPS, false for plain HTTP. */
bool hub_api_tls (struct hub *hub, const char **cert_pem, const char **key_pem);
/* Check a request's Authorization header, len bytes at value (NULL when
 * it has none), against the API token: "Bearer" in any case, then the
 * token and nothing else.  0, or -1 with ERR_UNAUTHORIZED.  Always 0
 * without --api-token-file. */
int hub_authorize (struct hub *hub, const char *value, size_t len);
/* SIGHUP: read the API token file and the NBD PSK file again and put
 * them in force for the requests and connections that follow; a file that
 * cannot be read or is malformed leaves its old value in force, and the
 * log says why.  Returns 0, or -1 when a file was refused. */
int hub_reload (struct hub *hub);

/* "nbds://IDENTITY@HOST:PORT/EXPORT" for an export name (the client adds
 * its ?tls-psk-file=), identity NULL naming the hub's master identity; or
 * "nbd://HOST:PORT/EXPORT" with --nbd-insecure.  Caller frees. */
char *hub_nbd_uri (struct hub *hub, const char *identity, const char *export_name);

/* A backup's (kind "job", id its backup id) or restore's (kind "restore")
 * NBD credential: *identity (caller frees) and its key, HUB_PSK_HEX hex
 * digits, derived from the master key.  *identity NULL with --nbd-insecure.
 * The storage daemon accepts it while the job runs or the restore is open. */
#define HUB_PSK_HEX 64
int hub_nbd_credential (struct hub *hub, const char *kind, const char *id, char **identity,
                        char psk[HUB_PSK_HEX + 1]);

/* --- Repositories and inventory (hub/inventory.c) --------------------- */
/* id may be NULL (one is made).  The path is checked and, for a local
 * repository, made if needed (storage/repo.h); an nfs or cifs repository is
 * the folder where its share is mounted, which must exist (ERR_INVALID
 * otherwise: the hub never makes a mount point on its own disk).  A path
 * inside or around another repository, or around the data folder, is
 * ERR_CONFLICT.  *out receives the new row. */
int hub_repo_create (struct hub *hub, const char *id, const char *name,
                     enum repo_type type, const char *path, struct cat_repository *out);
/* ERR_CONFLICT while a context uses it; its folder stays on disk. */
int hub_repo_delete (struct hub *hub, const char *id);
/* Bytes the repository's files take, and bytes its file system offers:
 * cached (hub/usage.c), measured again when something changed its files
 * since, or after a minute. */
int hub_repo_usage (struct hub *hub, const struct cat_repository *r, int64_t *used,
                    int64_t *available);
/* Insert or replace a VM with its disks; *out receives it as stored. */
int hub_vm_put (struct hub *hub, const struct cat_vm *vm, bool *created, struct cat_vm *out);
int hub_vm_delete (struct hub *hub, const char *vm_name);

/* --- Backups ---------------------------------------------------------- */
struct hub_backup_request {
  const char *vm_name;
  const char *repository_id;      /* NULL: "default" */
  enum backup_type backup_type;
  const struct cat_vm_disk *disks;  /* NULL: use the inventory; else sorted
                                     * by disk_index, indexes distinct */
  size_t n_disks;
  bool driver_given;              /* false: the hub when every inventory disk
                                   * has a source, else an agent */
  enum job_driver driver;         /* when driver_given */
  int64_t lease_seconds;          /* 0: no lease; else HUB_LEASE_MIN..MAX: the
                                   * starter renews the job within that many
                                   * seconds or the hub fails it (hub/lease.c) */
};

#define HUB_LEASE_MIN 10
#define HUB_LEASE_MAX 3600

/* Start a backup: plan the chain, create the images, export them, and record
 * the running job, in that order, undoing everything on failure.  *out
 * receives the job. */
int hub_backup_start (struct hub *hub, const struct hub_backup_request *req,
                      struct cat_job *out);

/* Complete one disk: remove its export (flushing it), sync the file and make
 * it read-only, then record it.  by: who copied it, DRIVER_AGENT for a
 * client of the API, DRIVER_HUB for the hub's workers; a job of the other
 * driver is refused (ERR_CONFLICT), so that no client completes a disk a
 * worker is still copying.  full_reason (or NULL) says why the disk was
 * copied in full into its overlay.  bytes_zeroed: what the copy wrote as
 * zeroes, for the metrics only (-1: not known).  A repeat of an accepted
 * completion with the same change id succeeds again.  *out receives the
 * job afterwards. */
int hub_backup_complete (struct hub *hub, enum job_driver by, const char *backup_id,
                         int disk_index, const char *change_id, int64_t bytes_transferred,
                         int64_t bytes_zeroed, const char *full_reason,
                         struct cat_job *out);

/* End a running job as JOB_FAILED or JOB_CANCELLED; drops the unfinished disks'
 * exports and files (files the repository refuses to remove are tried
 * again later: hub_leftover_reason).  disk_index < 0 when no disk is named.
 * A finishing job is refused (ERR_CONFLICT): its data is complete and
 * recorded.  Returns once a hub-driven job's copies have stopped. */
int hub_backup_end (struct hub *hub, const char *backup_id, enum job_status status,
                    int disk_index, const char *error, struct cat_job *out);

/* Fail a running job whose lease lapsed before now (an id_time_format
 * timestamp), through the same end as hub_backup_end, saying when its
 * starter last renewed it.  0 and *ended false when it was renewed, ended
 * or deleted in between (nothing to do). */
int hub_backup_end_lapsed (struct hub *hub, const char *backup_id, const char *now,
                           bool *ended);

/* Which of the n change ids (a QCOW2 source's bitmap names) belong to a
 * backup the hub knows (catalog_change_ids_live). */
int hub_change_ids_live (struct hub *hub, size_t n, const char *const *names, bool *live);

/* Why files of this backup that an end or delete could not remove are
 * still there (the hub tries again), or NULL when there are none.  Caller
 * frees. */
char *hub_leftover_reason (struct hub *hub, const char *backup_id);

/* A hub-driven job whose disks are all recorded (finishing) has had its
 * bitmaps committed at its sources: mark it completed, with the context's
 * statistics, in one transaction.  ERR_CONFLICT unless it is finishing. */
int hub_backup_finish (struct hub *hub, const char *backup_id, struct cat_job *out);

/* Delete a finished backup (and, with cascade, the backups built on it);
 * a running or finishing one is refused (ERR_CONFLICT).
 * *deleted_ids receives the deleted job ids (NULL-terminated, caller frees
 * with the strv cleanup). */
int hub_backup_delete (struct hub *hub, const char *backup_id, bool cascade,
                       char ***deleted_ids);

/* Delete a context with its jobs, disks and folder.  force drops a running
 * job's exports first. */
int hub_context_delete (struct hub *hub, const char *context_id, bool force,
                        char ***deleted_ids);

/* Check a disk's source as the inventory takes it: an absolute path (an
 * image file or block device) or an nbd:// or nbd+unix:// URI.  ERR_INVALID
 * otherwise. */
int hub_source_check (const char *source);

/* Check that the hub may read a path source: with --source-dirs, it must
 * lie in one of those folders (after resolving symbolic links when it
 * exists, and it must exist when must_exist).  NBD URIs pass.  ERR_INVALID
 * otherwise. */
int hub_source_allowed (struct hub *hub, const char *source, bool must_exist);

/* Live progress of one disk of a running job: a hub-driven one's from its
 * worker (hub/worker.c), an agent's as the agent last reported it
 * (hub/progress.c).  Returns false when nobody copies or reported that
 * disk. */
struct hub_progress {
  int64_t bytes_done, bytes_total;
  int64_t rate_bytes_per_sec;
};
bool hub_backup_progress (struct hub *hub, const char *backup_id, int disk_index,
                          struct hub_progress *out);

/* An agent's report of one disk's copy (POST .../progress). */
struct hub_progress_report {
  int disk_index;
  struct hub_progress p;
};
/* Keep the reports of a running agent-driven job's running disks, all or
 * none: ERR_NOT_FOUND unknown job or disk, ERR_CONFLICT a job that is not
 * running or hub-driven or a disk that is not running, ERR_INVALID a disk
 * given twice or numbers out of bounds (bytes_done <= bytes_total <= the
 * disk's size). */
int hub_backup_report_progress (struct hub *hub, const char *backup_id,
                                const struct hub_progress_report *v, size_t n);

/* --- Context summaries (hub/summary.c) ------------------------------- */
/* What the listings show of a context beside its catalog row. */
struct hub_context_summary {
  int64_t points;                  /* completed backups */
  bool has_last;                   /* it has a job (not one a prune removes) */
  enum job_status last_status;     /* the newest such job's, when has_last */
  char *last_error;                /* that job's error, or NULL */
  char *last_completed_at;         /* the newest completed backup's, or NULL */
  int64_t bytes_used;              /* allocated bytes of its files and their
                                    * manifests; -1 when the repository is gone */
  enum verify_state verify_state;  /* CORRUPT when a point is, OK when every
                                    * point verified ok, else NONE */
  bool overdue;                    /* its VM's schedule is behind (the rule is
                                    * in hub/summary.c) */
  char *overdue_reason;            /* why, when overdue */
};
int hub_context_summary (struct hub *hub, const struct cat_context *c,
                         struct hub_context_summary *out);
void hub_context_summary_clear (struct hub_context_summary *s);

/* Mark a completed backup protected (never pruned) or not.  ERR_CONFLICT
 * unless it is completed.  *out receives the job afterwards. */
int hub_backup_protect (struct hub *hub, const char *backup_id, bool on,
                        struct cat_job *out);

/* --- Policies (hub/policies.c) ----------------------------------------
 * A policy holds a schedule (5-field cron, hub's local time), retention
 * rules and a repository; VMs use it through their inventory record. */
/* Insert or replace; checks the schedule and the rules, the repository,
 * and that every VM using a policy with a schedule has sources (ERR_INVALID
 * otherwise).  *out receives the stored policy. */
int hub_policy_put (struct hub *hub, const struct cat_policy *p, bool *created,
                    struct cat_policy *out);
/* ERR_CONFLICT while a VM uses it. */
int hub_policy_delete (struct hub *hub, const char *name);

/* --- Prune (hub/prune.c) ----------------------------------------------- */
struct hub_prune_request {
  const char *context_id;
  bool rules_given;               /* false: the VM's policy's retention */
  struct retention_rules rules;
  bool dry_run;
};

/* keep and remove: completed backups' ids, newest first (NULL-terminated).
 * task_id: the task that removes them, NULL for a dry run or when there is
 * nothing to remove. */
struct hub_prune_plan {
  char **keep, **remove;
  char *task_id;
};
void hub_prune_plan_clear (struct hub_prune_plan *p);

/* Select by the rules which completed backups of the context stay; unless
 * dry_run, record a prune task that removes the others and queue it.
 * ERR_INVALID without rules; ERR_CONFLICT while another prune task works on
 * the context. */
int hub_prune_start (struct hub *hub, const struct hub_prune_request *req,
                     struct hub_prune_plan *out);

/* --- Integrity (hub/manifest.c, hub/verify.c) --------------------------
 * An agent's uploads: the block part of a running disk's manifest (before
 * its completion), or an audit's reading of a completed disk's source.  The
 * body is streamed into a private file as it arrives, never held whole. */
enum hub_upload_kind { HUB_UPLOAD_MANIFEST, HUB_UPLOAD_AUDIT };
struct hub_upload;
struct hub_upload_result {
  struct mf_compare audit;        /* HUB_UPLOAD_AUDIT: the comparison */
  enum verify_state verify_state; /* the disk's verify state after it */
};
/* Check that the disk takes such an upload now (ERR_NOT_FOUND, ERR_CONFLICT;
 * ERR_TOO_LARGE when declared_length, -1 when unknown, is past what a
 * block part of that disk can take) and open its file. */
int hub_upload_begin (struct hub *hub, enum hub_upload_kind kind, const char *backup_id,
                      int disk_index, int64_t declared_length, struct hub_upload **out);
/* Append a piece of the body (ERR_TOO_LARGE past the limit). */
int hub_upload_write (struct hub_upload *u, const void *data, size_t n);
/* The body is whole: check it (ERR_INVALID saying what is wrong), then keep
 * the manifest part for the completion, or compare the audit with the
 * point's chain and record a mismatch.  Frees u. */
int hub_upload_end (struct hub_upload *u, struct hub_upload_result *res);
/* The request ended early: drop what was written.  Frees u. */
void hub_upload_abort (struct hub_upload *u);

/* Compare what an audit read of a completed disk's source with the point's
 * chain of manifests; differences mark the disk corrupt ("change tracking
 * missed N blocks (first at offset O)"), so that its next backup is a full. */
int hub_audit_record (struct hub *hub, const char *backup_id, int disk_index,
                      const struct mf_map *observed, struct mf_compare *out);

/* Whether an upload is an audit's. */
bool hub_upload_is_audit (const struct hub_upload *u);

/* Start a verify task, of one completed backup (backup_id) or of every
 * completed backup of a context (context_id; the other is NULL): each point
 * is read through its whole chain, and a block of a file is read once in
 * the task, whichever points need it.  *task_id receives its id.
 * ERR_NOT_FOUND for an unknown backup or context, ERR_CONFLICT for a
 * backup that is not completed or a context with none. */
int hub_verify_start (struct hub *hub, const char *backup_id, const char *context_id,
                      char **task_id);

/* --- Restore exports (hub/restore.c) ----------------------------------
 * A restore is a read-only NBD export of one completed disk's QCOW2 file,
 * read through its backing chain: the disk as it was at that backup.
 * Restores live in the hub's memory only; they end with the hub process,
 * and the storage daemon's restart callback puts them back. */
struct hub_restore_info {
  char *restore_id, *backup_id, *nbd_uri, *created_at;
  int disk_index;
  int64_t size_bytes;
  char *nbd_tls_identity;      /* its NBD credential (hub_nbd_credential), when */
  char nbd_tls_psk[HUB_PSK_HEX + 1];  /* asked for and NBD speaks TLS; else NULL, "" */
};

/* ERR_NOT_FOUND for an unknown backup or disk; ERR_CONFLICT when the disk is
 * not completed or its file is gone. */
int hub_restore_create (struct hub *hub, const char *backup_id, int disk_index,
                        struct hub_restore_info *out);
int hub_restore_get (struct hub *hub, const char *restore_id,
                     struct hub_restore_info *out);
/* Oldest first. */
int hub_restore_list (struct hub *hub, struct hub_restore_info **out, size_t *n);
/* Remove the export; ERR_NOT_FOUND for an unknown id. */
int hub_restore_delete (struct hub *hub, const char *restore_id);
void hub_restore_info_clear (struct hub_restore_info *r);
void hub_restore_info_free_array (struct hub_restore_info *a, size_t n);

#endif
