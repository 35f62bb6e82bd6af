/* hub/hub-int.h - helpers shared by the files of src/hub/. */
#ifndef STRATA_HUB_HUB_INT_H
#define STRATA_HUB_HUB_INT_H

#include "hub/hub.h"

/* The hub.  Owned by hub.c (hub_open, hub_close); the other files of
 * src/hub/ read and change it under the rules written beside each field. */
struct hub {
  struct hub_config cfg;
  struct catalog *cat;
  struct qsd *qsd;
  struct net_addr listen, nbd;
  char *run_dir;
  int lock_fd;             /* flock on DATA-DIR/run/hub.lock: one hub per folder */
  /* The API token and the NBD master key: SIGHUP (hub_reload) replaces
   * them, so they are read and swapped under access_lock. */
  pthread_mutex_t access_lock;
  char *token;             /* API token, NULL when none */
  char *nbd_tls_user;      /* master identity when NBD needs TLS, else NULL */
  unsigned char *nbd_master;  /* the master key's bytes */
  size_t nbd_master_len;
  char *nbd_master_lines;  /* the master keys file's lines, for keys.psk */
  /* Set at start, then read-only (hub/nbdkeys.c); NULL with --nbd-insecure. */
  char *nbd_key_file;      /* --nbd-tls-psk-file or DATA-DIR/nbd.psk */
  char *nbd_tls_dir;       /* DATA-DIR/run/tls, where keys.psk lies */
  char *tls_cert, *tls_key;  /* the API's certificate and key (PEM); NULL:
                              * plain HTTP (hub/tls.c) */
  char **source_dirs;      /* --source-dirs, resolved; NULL: no restriction */
  char started_at[32];     /* when this hub process started (id_now form) */
  char hub_id[24];         /* "hub-<16 hex>", from DATA-DIR/hub-id (hub/identity.c) */
  /* Serialises the state transitions of backups (start, complete, end,
   * delete), the restore registry and the storage-daemon restart callback.
   * Reads of the catalog do not take it. */
  pthread_mutex_t lock;
  struct hub_restore *restores;   /* open restore exports (hub/restore.c);
                                   * guarded by lock */
  struct hub_workers *workers;    /* hub-driven backups (hub/worker.c) */
  /* What agents last reported of their copies (hub/progress.c). */
  pthread_mutex_t progress_lock;
  struct hub_progress_entry *progress;  /* guarded by progress_lock */
  /* Contexts a prune's merge step is writing the files of (hub/prune.c);
   * guarded by lock.  Backup starts and restore exports of such a context
   * wait on merge_cond (hub_merge_wait). */
  char **merging;
  size_t n_merging;
  pthread_cond_t merge_cond;
  /* Contexts a verify task reads the files of (hub/verify.c); guarded by
   * lock.  A merge step of such a context waits (hub_verifying). */
  char **verifying;
  size_t n_verifying;
  /* Files an end or delete could not remove (hub/leftover.c): changed
   * with lock and leftover_lock held, read with either. */
  pthread_mutex_t leftover_lock;
  struct hub_leftover *leftovers;
  struct ticker *schedule;        /* the scheduler thread (hub/schedule.c) */
  struct ticker *leases;          /* the lease reaper (hub/lease.c) */
  bool leases_checked;            /* its first pass ran */
  struct hub_usage *usage;        /* repository usage cache (hub/usage.c) */
  /* What the backup transitions tell whoever runs jobs (the worker pool
   * sets these when it starts; NULL: nobody listens). */
  struct hub_job_hooks {
    /* A hub-driven job was recorded; hub->lock held. */
    void (*runnable) (struct hub *hub, const char *backup_id);
    /* The job was ended or deleted: stop working on it, and return once
     * its copies have stopped.  Called without hub->lock. */
    void (*ended) (struct hub *hub, const char *backup_id);
    /* Run fn (hub, key) in a worker, unless an op of that key is queued
     * already (one running may be queued again).  Any lock may be held. */
    void (*run_op) (struct hub *hub, const char *key,
                    void (*fn) (struct hub *hub, const char *key));
  } hooks;
};

/* Sets of context ids (hub->merging, hub->verifying), guarded by
 * hub->lock (hub/hub.c). */
bool hub_names_has (char *const *v, size_t n, const char *name);
/* ERR_INTERNAL when memory runs out (the set is unchanged). */
int hub_names_add (char ***v, size_t *n, const char *name);
/* Remove one copy of name, if there is one. */
void hub_names_remove (char **v, size_t *n, const char *name);

/* --- Access (hub/access.c) --------------------------------------------- */
/* Resolve --source-dirs and read the API token; warn about open listeners. */
int hub_access_open (struct hub *hub);
void hub_access_clear (struct hub *hub);

/* --- NBD keys (hub/nbdkeys.c) ------------------------------------------ */
/* At start, with the data folder and the catalog open: read the master key
 * (--nbd-tls-psk-file's first, or DATA-DIR/nbd.psk, made on a first start;
 * IDENTITY:HEXKEY lines, keys of 128 bits or more) and write
 * DATA-DIR/run/tls/keys.psk; *tls_dir is its folder for the storage daemon
 * (the hub owns it), NULL with --nbd-insecure. */
int hub_nbd_keys_open (struct hub *hub, const char **tls_dir);
/* With hub->lock held: rewrite keys.psk from the master keys, the running
 * jobs and the open restores.  Call after every change of those. */
int hub_nbd_keys_write (struct hub *hub);
/* The same, logging a failure (the old file stays in force). */
void hub_nbd_keys_update (struct hub *hub);
/* SIGHUP: read the master keys file again and rewrite keys.psk (takes
 * hub->lock).  An unreadable or malformed file leaves the keys in force. */
int hub_nbd_keys_reload (struct hub *hub);
/* The file holding the master identity's key, for the hub's own NBD
 * clients; NULL with --nbd-insecure. */
const char *hub_nbd_key_file (struct hub *hub);
void hub_nbd_keys_clear (struct hub *hub);
/* The API's certificate and key (hub/tls.c): --tls-cert-file and
 * --tls-key-file, else, off loopback, DATA-DIR/tls/api-{cert,key}.pem,
 * made self-signed when missing; on loopback without them, none (plain
 * HTTP).  Logs the certificate's fingerprint and pin.  Needs the data
 * folder made and locked. */
int hub_tls_open (struct hub *hub);
void hub_tls_clear (struct hub *hub);

/* --- Identity and ownership (hub/identity.c) -------------------------- */
/* Read DATA-DIR/hub-id into hub->hub_id, or make it at a first start. */
int hub_identity_open (struct hub *hub);
/* Take the running jobs and tasks no hub owns (catalog_hub_claim); logged. */
void hub_identity_claim (struct hub *hub);
/* 0 when this hub runs the job, else -1 with ERR_CONFLICT naming the hub
 * that does: what needs the job's exports must be asked of that hub. */
int hub_job_mine (struct hub *hub, const struct cat_job *job);
/* The rule of every file the hub creates in a repository: record the
 * intent first (hub_file_intend; ERR_CONFLICT when another hub or a
 * start-up check holds that path), then create the file, then record the
 * row that owns it, whose transaction deletes the intent
 * (catalog_backup_insert).  A creation undone goes by hub_file_undo: the
 * file, then the intent (the error is kept; failures are logged, and a
 * file left stays under this hub's intent for its next start). */
int hub_file_intend (struct hub *hub, const struct cat_repository *repo, const char *rel,
                     const char *job_id);
void hub_file_undo (struct hub *hub, const struct cat_repository *repo, const char *rel);

/* --- Repository files (hub/inventory.c) ------------------------------ */
/* Rewrite DATA-DIR/repositories.json from the catalog (a JSON array of
 * {id,name,type,path}), and, with identities set, write each reachable
 * repository's strata-repository.json where it is missing.  Both are what
 * rebuild-catalog reads when the catalog is lost.  Failures are logged. */
void hub_repo_files_write (struct hub *hub, bool identities);

/* --- Recovery (hub/recovery.c); hub->lock held but for requeue -------- */
/* Mark rows whose file is missing, then delete files that no row owns. */
int hub_recover_files (struct hub *hub);
/* Export every disk that should be exported now: at start, and after the
 * storage daemon restarted. */
void hub_reexport_running (struct hub *hub);
/* Give the workers the hub-driven jobs that were running or finishing
 * (once they have started). */
void hub_requeue_jobs (struct hub *hub);

/* Drop the exports of these disk rows and delete their files (rows that are
 * already gone from the catalog).  Errors are logged, not returned: the
 * rows are gone, and a file that could not be removed is tried again
 * (hub_leftover_add). */
void hub_drop_disks (struct hub *hub, const char *repo_path,
                     const struct cat_disk *disks, size_t n);

/* --- Files left behind (hub/leftover.c); hub->lock held --------------- */
/* The files of disk d (its qcow2_path in repo_path) could not be removed,
 * for the current error: log it, and remember them to try again. */
void hub_leftover_add (struct hub *hub, const char *repo_path, const struct cat_disk *d);
/* Try again to remove every file left behind; those removed are forgotten. */
void hub_leftover_retry (struct hub *hub);
/* Forget them all (hub_close). */
void hub_leftover_free (struct hub *hub);

/* Crash points of the hub (util/crash.h, STRATA_CRASH_AT): start:images
 * start:exports start:recorded complete:synced complete:recorded
 * finishing:recorded finish:recorded end:recorded delete:recorded
 * context-delete:retired context-delete:recorded. */

/* --- Restores (hub/restore.c); hub->lock held for all of these. ------- */
/* ERR_CONFLICT when an open restore export reads a disk of one of these
 * jobs (a NULL-terminated vector), or of a job of this context. */
int hub_restores_check_jobs (struct hub *hub, char *const *job_ids);
int hub_restores_check_context (struct hub *hub, const char *context_id);
/* Export them again after the storage daemon restarted. */
void hub_restores_reexport (struct hub *hub);
/* The ids of the open restores (NULL-terminated; NULL on error). */
char **hub_restore_ids (struct hub *hub);
/* Forget every restore (hub_close; the daemon is gone by then). */
void hub_restores_free (struct hub *hub);

/* --- Prune (hub/prune.c) ----------------------------------------------- */
/* With hub->lock held: wait while a merge step writes the context's files
 * (context_id NULL: no wait). */
void hub_merge_wait (struct hub *hub, const char *context_id);
/* A backup or restore of the context ended: prune tasks that were waiting
 * for it are queued again (context_id NULL: every running prune task). */
void hub_prune_wake (struct hub *hub, const char *context_id);
/* A backup of the context completed: prune it by its VM's policy, if that
 * has retention (in a worker). */
void hub_prune_after_backup (struct hub *hub, const char *context_id);
/* At start-up, before the file check: record the merge steps whose files
 * were done when the last hub stopped. */
void hub_prune_recover (struct hub *hub);

/* --- Agents' progress (hub/progress.c) -------------------------------- */
/* The agent's last report of that disk, or false. */
bool hub_agent_progress (struct hub *hub, const char *backup_id, int disk_index,
                         struct hub_progress *out);
/* Drop the reports of a job's disk (disk_index -1: of all its disks). */
void hub_progress_forget (struct hub *hub, const char *backup_id, int disk_index);
/* Drop them all (hub_close). */
void hub_progress_free (struct hub *hub);

/* The disk row of a job with that index, or NULL (hub/backup.c). */
const struct cat_disk *hub_job_disk (const struct cat_job *job, int disk_index);

/* --- Manifests (hub/manifest.c) ---------------------------------------- */
/* The facts of a point's manifest (integrity/manifest.h; docs/MANIFEST.md)
 * from its job and disk rows; origin "source" or "merge".  NULL on error. */
json_t *hub_manifest_facts (const struct cat_job *job, const struct cat_disk *d,
                            const char *origin);
/* "<file>.manifest.part" of a disk file (rel in repo_path).  Caller frees. */
char *hub_manifest_part_path (const char *repo_path, const char *rel);
/* Make the manifest of disk d of job as it is about to be recorded
 * completed (with these values), from its block part if one was written
 * (else facts only).  Durable before it returns. */
int hub_manifest_complete (const char *repo_path, const struct cat_job *job,
                           const struct cat_disk *d, const char *change_id,
                           int64_t bytes_transferred, const char *full_reason,
                           const char *completed_at);

/* --- Verify (hub/verify.c) --------------------------------------------- */
/* With hub->lock held: whether a verify task reads the context's files. */
bool hub_verifying (struct hub *hub, const char *context_id);
/* At start-up: verify tasks that were running are failed (interrupted). */
void hub_verify_recover (struct hub *hub);
/* A backup completed: verify it when its VM's policy says so. */
void hub_verify_after_backup (struct hub *hub, const struct cat_job *job);
/* The scheduler's tick: verify the backups whose policy's every_days have
 * passed since they were last verified (unless a task has them already). */
void hub_verify_due (struct hub *hub);

/* --- Policies (hub/policies.c) ---------------------------------------- */
/* 0 when the VM may use the policy, else -1 with ERR_INVALID: a policy with
 * a schedule needs a source on every disk. */
int hub_policy_fits_vm (const struct cat_policy *p, const struct cat_vm *vm);

/* --- Leases (hub/lease.c) ---------------------------------------------- */
int hub_lease_start (struct hub *hub);
void hub_lease_stop (struct hub *hub);
/* A leased job started: look again at when the next lease lapses. */
void hub_lease_poke (struct hub *hub);
/* The job's starter is alive: renew its lease, if it has one; hub->lock
 * held. */
int hub_lease_renew (struct hub *hub, const struct cat_job *job);
/* When a lease of lease_seconds taken now lapses (id_time_format). */
void hub_lease_until (int64_t lease_seconds, char *buf, size_t len);

/* --- Scheduler (hub/schedule.c) ---------------------------------------- */
int hub_schedule_start (struct hub *hub);
void hub_schedule_stop (struct hub *hub);
/* Policies or VMs changed: look at the schedules again now. */
void hub_schedule_poke (struct hub *hub);

/* --- Repository usage (hub/usage.c) ------------------------------------ */
/* Start and stop the thread that measures the repositories. */
int hub_usage_start (struct hub *hub);
void hub_usage_stop (struct hub *hub);
/* A repository's files changed (a job ended, a backup, context or prune
 * removed files): measure again soon, and before the API answers. */
void hub_usage_changed (struct hub *hub);
/* The cached numbers, never measuring: false when there are none yet. */
bool hub_usage_cached (struct hub *hub, const char *repo_id, int64_t *used,
                       int64_t *available);

/* --- Metrics (hub/metrics.c) ------------------------------------------- */
/* Register the hub's series and the scrape-time collector (reading hub). */
int hub_metrics_open (struct hub *hub);
void hub_metrics_close (struct hub *hub);
/* A job ended (completed, failed, cancelled): count it by status and driver. */
void hub_metrics_job_ended (const struct cat_job *job);
/* A disk's copy was recorded: what it wrote, and wrote as zeroes (< 0:
 * not known). */
void hub_metrics_disk_copied (int64_t bytes_written, int64_t bytes_zeroed);
void hub_metrics_storage_restarted (void);

/* --- Workers (hub/worker.c) ------------------------------------------- */
/* Whether the pool is stopping (work in progress should pause). */
bool hub_stopping (struct hub *hub);
/* Start the pool (hub->cfg.workers threads) and set hub->hooks. */
int hub_workers_start (struct hub *hub);
/* Cancel every transfer, wait for the workers, free the pool.  Jobs are
 * left as they are ("running"), for the next start to pick up. */
void hub_workers_stop (struct hub *hub);
/* Queue a hub-driven running or finishing job (no-op if it is queued or
 * running). */
void hub_workers_queue (struct hub *hub, const char *backup_id);

#endif
