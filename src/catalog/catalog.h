/* catalog/catalog.h - the catalog: repositories, VM inventory, backup
 * contexts, jobs and per-disk records.
 *
 * The interface is made of whole domain operations, each of which runs in
 * one transaction of its own inside the backend, so that callers never hold
 * a transaction open across threads or across slow work (qemu-img, QMP).
 * One SQL core (core.c) runs them over a driver (catalog-int.h): SQLite,
 * the embedded default, or MariaDB.
 *
 * Every function returns 0 on success, -1 on failure with the thread-local
 * error set (util/error.h): ERR_NOT_FOUND, ERR_CONFLICT (unique keys, state
 * transitions, foreign keys), ERR_UNAVAILABLE (the database is locked or its
 * server unreachable; nothing was applied) or ERR_INTERNAL.  Out-parameters are filled
 * only on success and are owned by the caller, who frees them with the
 * matching *_free / *_clear function.
 *
 * Optional integers (vmware_disk_key, unit_number, parent_disk_id) use -1
 * for "absent"; optional strings use NULL.  Statuses, backup types and
 * drivers are the enums of util/state.h: the catalog turns them into the
 * words its tables hold and back, and a word it reads that util/state.c
 * does not know is ERR_INTERNAL naming the column and the word.
 *
 * Rows read into a local are cleared at the end of its scope by the
 * CLEANUP_CAT_* attributes at the bottom; arrays are read into a
 * struct cat_X_list ({ v, n }), which has its own.
 */
#ifndef STRATA_CATALOG_CATALOG_H
#define STRATA_CATALOG_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/state.h"

/* type is "local", "nfs" or "cifs": to the hub each is a folder, path (for
 * nfs and cifs, where the share is mounted). */
struct cat_repository {
  char *id, *name, *type, *path, *created_at;
};

struct cat_vm_disk {
  int disk_index;
  int64_t size_bytes;
  int64_t vmware_disk_key;     /* -1 when absent */
  int64_t unit_number;         /* -1 when absent */
  char *source;                /* NULL when absent */
};

struct cat_vm {
  char *vm_name, *vmware_vm_id, *vm_path, *vcenter_host, *datacenter;
  char *created_at, *updated_at;
  size_t n_disks;
  struct cat_vm_disk *disks;   /* sorted by disk_index */
  char *policy;                /* the VM's policy's name, or NULL */
  /* The scheduler's (catalog_vm_schedule_set); NULL when unset.
   * catalog_vm_put ignores them. */
  char *next_run_at, *last_run_at, *last_skipped_at;
};

/* Retention rules: how many points to keep by each rule; -1 = rule absent. */
struct cat_retention {
  int64_t keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly;
};

/* A retention and schedule policy.  The catalog stores the rules as given;
 * it has no retention object apart from its rules, so has_retention reads
 * back as "at least one rule is present". */
struct cat_policy {
  char *name;                  /* the caller checks it like a VM name */
  char *repository_id;         /* NULL when absent */
  char *schedule;              /* 5-field cron text (checked by the caller), or NULL */
  bool has_retention;          /* false: no rules at all (retention's ignored) */
  struct cat_retention retention;
  char *created_at, *updated_at;
  /* Verification: a verify task after each completed backup of the VM;
   * one of every point not verified within verify_every_days days; the
   * percent of a hub-driven backup's blocks read again from the source
   * (audit).  -1 when absent (put stores any value below 1 as absent). */
  bool verify_after_backup;
  int64_t verify_every_days;   /* 1.., or -1 */
  int64_t audit_percent;       /* 1..100, or -1 */
};

/* A long-running hub operation. */
struct cat_task {
  char *id;
  enum task_kind kind;
  char *context_id;            /* the context it works on, or NULL */
  enum task_status status;     /* inserted as running, whatever it says */
  int64_t steps_done, steps_total;
  char *message;               /* what it waits for, or NULL */
  char *error;                 /* why it failed, or NULL */
  char *result;                /* opaque text (the hub's JSON), or NULL */
  char *created_at, *updated_at, *completed_at;
  char *owner_hub;             /* the hub that runs it (inserted as given), or
                                * NULL (a row from before migration 0007) */
};

struct cat_context {
  char *context_id, *vm_name, *repository_id;
  char *vmware_vm_id, *vm_path, *vcenter_host, *datacenter;
  int64_t total_backups_run, successful_backups, failed_backups;
  char *last_backup_id, *last_backup_at;   /* NULL before the first completed job */
  enum backup_type last_backup_type;       /* meaningful when last_backup_id is set */
  char *created_at, *updated_at;
};

/* One backup_disks row, with a few columns joined in for convenience. */
struct cat_disk {
  int64_t id;                  /* backup_disks.id; 0 before insert */
  char *backup_job_id, *context_id;
  int disk_index;
  int64_t vmware_disk_key, unit_number, size_bytes;
  enum backup_type backup_type;  /* this disk's */
  char *disk_change_id;        /* NULL until completed with one */
  char *qcow2_path;            /* relative to the repository root; NULL once deleted */
  int64_t parent_disk_id;      /* -1 for a full */
  char *parent_backup_id;      /* joined: the parent row's job id, or NULL */
  char *previous_change_id;    /* joined: the parent row's change id, or NULL */
  char *nbd_export;            /* export name while the job runs, else NULL */
  int64_t bytes_transferred;
  enum disk_status status;     /* inserted as given (the hub: running) */
  char *error;                 /* NULL unless failed */
  char *created_at, *completed_at;
  char *full_reason;           /* why this disk of an incremental job holds a
                                * full copy, or NULL */
  enum verify_state verify_state;  /* VERIFY_NONE until a verify or audit */
  char *verified_at;           /* when it was last checked, or NULL */
  char *verify_error;          /* what a corrupt check found, or NULL */
};

struct cat_job {
  char *id, *context_id, *vm_name, *repository_id;
  enum backup_type backup_type; /* as requested */
  enum job_status status;      /* inserted as running, whatever it says */
  char *error;
  char *created_at, *completed_at;
  enum job_driver driver;      /* who moves the data */
  bool is_protected;           /* retention always keeps it (completed jobs
                                * only: catalog_backup_protect) */
  enum verify_state verify_state;  /* of its disks: see catalog_verify_record */
  char *verified_at;           /* when it was last checked, or NULL */
  int64_t lease_seconds;       /* the starter's lease, or 0: none */
  char *lease_expires_at;      /* when the lease lapses unless renewed, or NULL */
  char *owner_hub;             /* the hub that runs it (inserted as given), or
                                * NULL (a row from before migration 0007) */
  size_t n_disks;
  struct cat_disk *disks;      /* sorted by disk_index */
};

/* A zeroed filter matches every job. */
struct cat_job_filter {
  const char *vm_name, *repository_id;   /* NULL = any */
  bool by_status, by_type;               /* false = any status, any type */
  enum job_status status;
  enum backup_type backup_type;
  int64_t limit, offset;
};

struct catalog;

/* Open the catalog named by url ("sqlite:///abs/path.db" or
 * "sqlite://relative.db"), apply pending migrations in one transaction each,
 * and return it.  NULL on error. */
struct catalog *catalog_open (const char *url);
/* The same, for a URL that may name a MariaDB server,
 * "mariadb://USER[:PASS]@HOST[:PORT]/DB" or "mariadb://USER@localhost/DB?socket=PATH"
 * ("mysql://" is an alias).  Its password is the first line of password_file when
 * that is not NULL, else $STRATA_DB_PASSWORD when set, else the URL's. */
struct catalog *catalog_open_auth (const char *url, const char *password_file);
void catalog_close (struct catalog *cat);   /* NULL is a no-op */
/* "sqlite" or "mariadb" (for /healthz). */
const char *catalog_backend_name (const struct catalog *cat);

/* --- Repositories ----------------------------------------------------- */
/* ERR_CONFLICT when the id or the path is taken. */
int catalog_repo_insert (struct catalog *cat, const struct cat_repository *r);
int catalog_repo_get (struct catalog *cat, const char *id, struct cat_repository *out);
int catalog_repo_list (struct catalog *cat, struct cat_repository **out, size_t *n);
/* ERR_CONFLICT while a context uses it or a policy names it. */
int catalog_repo_delete (struct catalog *cat, const char *id);

/* --- Policies --------------------------------------------------------- */
/* Insert or replace the policy (keeping created_at); *created (may be
 * NULL) tells which.  ERR_INVALID for a rule below -1 or an unknown
 * repository_id (naming it). */
int catalog_policy_put (struct catalog *cat, const struct cat_policy *p, bool *created);
int catalog_policy_get (struct catalog *cat, const char *name, struct cat_policy *out);
/* Every policy, by name. */
int catalog_policy_list (struct catalog *cat, struct cat_policy **out, size_t *n);
/* ERR_CONFLICT, naming a VM, while a VM uses it. */
int catalog_policy_delete (struct catalog *cat, const char *name);

/* --- VM inventory ----------------------------------------------------- */
/* Insert or replace the VM, its policy and its whole disk list.  *created
 * tells which.  The scheduler's fields are kept, except that next_run_at
 * becomes NULL when the policy changes.  ERR_INVALID for an unknown policy
 * (naming it). */
int catalog_vm_put (struct catalog *cat, const struct cat_vm *vm, bool *created);
int catalog_vm_get (struct catalog *cat, const char *vm_name, struct cat_vm *out);
int catalog_vm_list (struct catalog *cat, struct cat_vm **out, size_t *n);
int catalog_vm_delete (struct catalog *cat, const char *vm_name);
/* The scheduler's record of a VM: next_run_at as given (NULL clears it);
 * last_run_at and last_skipped_at as given, NULL keeping the stored value.
 * ERR_NOT_FOUND for an unknown VM. */
int catalog_vm_schedule_set (struct catalog *cat, const char *vm_name,
                             const char *next_run_at, const char *last_run_at,
                             const char *last_skipped_at);

/* --- Contexts --------------------------------------------------------- */
int catalog_context_get (struct catalog *cat, const char *id, struct cat_context *out);
/* ERR_NOT_FOUND when the (vm, repository) pair has no context yet. */
int catalog_context_find (struct catalog *cat, const char *vm_name,
                          const char *repository_id, struct cat_context *out);
int catalog_context_list (struct catalog *cat, const char *vm_name /* NULL = all */,
                          struct cat_context **out, size_t *n);
/* Delete the context; its jobs and disks go by ON DELETE CASCADE.  Without
 * force, ERR_CONFLICT while one of its jobs is running; even with force,
 * ERR_CONFLICT while a prune task removes one of its jobs.  On success *disks
 * receives the disk rows that were deleted (for their files and exports).
 * A finishing job counts as running here. */
int catalog_context_delete (struct catalog *cat, const char *id, bool force,
                            struct cat_disk **disks, size_t *n_disks);

/* --- Backups ---------------------------------------------------------- */
/* Planning read for a new backup of (vm, repository).  For each of the n
 * disk indexes, parents[i] receives the disk's latest completed backup_disks
 * row in that context: the highest id among the completed rows of that
 * disk_index whose job completed too (a completed disk of a failed job is a
 * point in time of one disk only, never a parent), or a zeroed struct with
 * id 0 when there is none or no context yet.
 * THE parent rule of verification: when that row, or any row of its chain
 * (its parent_disk_id, and theirs), has verify_state VERIFY_CORRUPT, there
 * is no parent either: parents[i] is zeroed with id 0 and only its
 * full_reason set, "the latest point's chain failed verification (backup X
 * disk N: <verify_error>)", naming the newest corrupt row of the chain, for
 * the new disk's full_reason.  (catalog_changeid_get is not bound by it.)
 * *running is set when the context has a running or finishing job. */
int catalog_backup_plan (struct catalog *cat, const char *vm_name,
                         const char *repository_id, size_t n, const int *disk_indexes,
                         struct cat_disk *parents, bool *running);

/* Insert a running job with its disks in one transaction: create the
 * context for (job->vm_name, job->repository_id) if it does not exist (its
 * descriptive fields copied from vm; its id is job->context_id when the
 * caller chose one, because the image paths already carry it, else a new
 * one; an existing context under another id is ERR_CONFLICT), refuse with ERR_CONFLICT if the
 * context already has a running job (race-free: the check and the insert
 * are one transaction, backed by a constraint), insert the job and its
 * disks, and count total_backups_run.  Each disk's parent_disk_id must still
 * be the latest completed row of its disk index, else ERR_CONFLICT.
 * On success job->context_id and every disk's id/context_id are filled in
 * (malloc'd, owned by job). */
int catalog_backup_insert (struct catalog *cat, struct cat_job *job,
                           const struct cat_vm *vm);

int catalog_backup_get (struct catalog *cat, const char *id, struct cat_job *out);

/* Leases (hub/lease.c).  catalog_backup_insert records job->lease_seconds
 * and job->lease_expires_at as given (0 and NULL: no lease).  Renew sets a
 * running leased job's lease_expires_at; a job without a lease, or not
 * running, is left as it is (0, nothing changed).  Lapsed: the ids of the
 * running jobs of hub owner_hub (any hub's when NULL) whose lease_expires_at is before now, oldest first, as a
 * NULL-terminated vector (the caller frees each string and the vector);
 * *next (may be NULL) receives the earliest lease_expires_at of the other
 * running leased jobs (of owner_hub), malloc'd, or NULL when there is none. */
int catalog_backup_lease_renew (struct catalog *cat, const char *backup_id,
                                const char *expires_at);
int catalog_backup_lease_lapsed (struct catalog *cat, const char *owner_hub,
                                 const char *now, char ***backup_ids, char **next);

/* Which of the n names (change ids of QCOW2 sources are the bitmaps'
 * names) belong to a backup the catalog knows as running, finishing,
 * completed or removing, in any context: a job of that id, or a disk that
 * recorded it as its change id.  live[i] receives the answer for names[i]. */
int catalog_change_ids_live (struct catalog *cat, size_t n, const char *const *names,
                             bool *live);
/* One entry per job (with its disks), newest first; *total counts all
 * matches ignoring limit/offset. */
int catalog_backup_list (struct catalog *cat, const struct cat_job_filter *f,
                         struct cat_job **out, size_t *n, int64_t *total);

/* Mark one disk completed (change_id may be NULL) and clear its export.
 * full_reason, when not NULL, records why the disk was copied in full into
 * its overlay (its change tracking was lost); NULL keeps what was planned.
 * When it is the job's last unfinished disk: a job of DRIVER_AGENT
 * completes, and the context's successful_backups and last_backup_* are
 * updated, in the same transaction; a job of DRIVER_HUB becomes
 * finishing (completed_at stays NULL, the context is not updated yet)
 * until catalog_backup_finish.  ERR_NOT_FOUND for an unknown job or disk;
 * ERR_CONFLICT when the job is not running or the disk is not running.
 * *job_after receives the job as it stands after the change. */
int catalog_disk_complete (struct catalog *cat, const char *backup_id, int disk_index,
                           const char *change_id, int64_t bytes_transferred,
                           const char *full_reason, struct cat_job *job_after);

/* Finish a finishing job (its source owes nothing any more): it becomes
 * completed, with completed_at, and the context's successful_backups and
 * last_backup_* are updated, in one transaction.  ERR_NOT_FOUND for an
 * unknown job, ERR_CONFLICT when it is not finishing.  *job_after (may be
 * NULL) receives the job as it stands after the change. */
int catalog_backup_finish (struct catalog *cat, const char *backup_id,
                           struct cat_job *job_after);

/* End a running job as JOB_FAILED or JOB_CANCELLED (anything else is
 * ERR_INVALID): every disk not completed becomes failed with the error (error_disk >= 0 names the disk that
 * failed; the others get "job failed"/"job cancelled"), its qcow2_path and
 * nbd_export are cleared, and failed_backups is counted.  *dropped receives
 * the disk rows as they were before (with their paths and exports) so the
 * caller can drop the exports and delete the files.  ERR_CONFLICT when the
 * job is not running (a finishing job's data is complete: it can only be
 * finished). */
int catalog_backup_end (struct catalog *cat, const char *backup_id,
                        enum job_status status, int error_disk, const char *error,
                        struct cat_disk **dropped, size_t *n_dropped);

/* Mark a completed job protected (on) or not.  ERR_NOT_FOUND; ERR_CONFLICT
 * unless the job is completed. */
int catalog_backup_protect (struct catalog *cat, const char *backup_id, bool on);

/* Delete a finished job.  ERR_CONFLICT while it runs or finishes, or while
 * a disk of another job is backed by one of its disks (unless cascade,
 * which deletes those jobs too, recursively; ERR_CONFLICT if any of them
 * runs or finishes).  A removing job (a prune task's) is never deleted
 * here, nor reached by a cascade: ERR_CONFLICT.  *deleted receives every deleted disk row (for the
 * files). */
int catalog_backup_delete (struct catalog *cat, const char *backup_id, bool cascade,
                           struct cat_disk **deleted, size_t *n_deleted);
/* The ids of the jobs that catalog_backup_delete with the same arguments
 * would delete, backup_id first: a NULL-terminated vector, the caller frees
 * each string and the vector.  The same rule and the same errors as the
 * delete. */
int catalog_backup_delete_plan (struct catalog *cat, const char *backup_id, bool cascade,
                                char ***job_ids);

/* How an audit's finding begins ("change tracking missed N blocks (first at
 * offset O)"): catalog_verify_record never turns such a corrupt disk ok. */
#define CATALOG_AUDIT_MISSED "change tracking missed"

/* Record what a verify or an audit found, in one transaction: for each of
 * the n listed disks of job backup_id, its state, its error (errors may be
 * NULL, as may each errors[i]: none) and verified_at; then the job's state
 * (corrupt if any of its disks is corrupt, ok if all of them are ok, else
 * none) and verified_at.  ERR_INVALID for n == 0 or verified_at NULL;
 * ERR_NOT_FOUND for an unknown job or disk; ERR_CONFLICT unless the job is
 * completed or finishing. */
int catalog_verify_record (struct catalog *cat, const char *backup_id, size_t n,
                           const int *disk_indexes, const enum verify_state *states,
                           const char *const *errors, const char *verified_at);

/* The completed jobs due for a verify at time now (an id_now timestamp):
 * those of the VMs whose policy has verify_every_days, never verified or
 * last verified before now minus that many days.  *backup_ids receives
 * their ids, oldest job first (a NULL-terminated vector, the caller frees
 * each string and the vector). */
int catalog_verify_due (struct catalog *cat, const char *now, char ***backup_ids);

/* Rebuild-catalog's insert (a fresh catalog, from the manifests): in one
 * transaction, the repository unless its id is there, the context unless
 * its context_id is there (with that id and the stats, last_backup_* and
 * timestamps as given; vm_name and repository_id must match an existing
 * one), then the job as completed (status, created_at and completed_at,
 * backup type, driver as given; not protected) with its disks as
 * completed rows (their disk_change_id, qcow2_path, parent_disk_id,
 * bytes_transferred, full_reason, timestamps as given; parent_disk_id an
 * id that an earlier call filled in, of the same context and disk index).
 * On success job->disks[i].id are the new rows' ids.  ERR_CONFLICT when
 * the job id is taken; ERR_INVALID for a missing parent or a bad disk. */
int catalog_rebuild_insert (struct catalog *cat, const struct cat_repository *repo,
                            const struct cat_context *ctx, struct cat_job *job);

/* The latest completed disk row of (vm_name, disk_index) by the same rule as
 * catalog_backup_plan (but whatever its verify_state: the change id is
 * reported as it is), found through the context; repository_id NULL means "the VM's only context" (ERR_CONFLICT
 * when it has several).  ERR_NOT_FOUND when there is none. */
int catalog_changeid_get (struct catalog *cat, const char *vm_name, int disk_index,
                          const char *repository_id, struct cat_disk *out);

/* --- Recovery --------------------------------------------------------- */
/* Every disk row that has a file (qcow2_path not NULL), with the repository
 * path joined into *repo_paths[i] (malloc'd, parallel array). */
int catalog_disk_files (struct catalog *cat, struct cat_disk **out,
                        char ***repo_paths, size_t *n);
/* The disks that should be exported: running disks of running jobs; of
 * the jobs of hub owner_hub only, unless it is NULL. */
int catalog_running_disks (struct catalog *cat, const char *owner_hub,
                           struct cat_disk **out, size_t *n);
/* A disk's file is gone: mark it failed with the reason, clear its path
 * and export, and do the same for every disk backed by it, recursively;
 * their jobs become failed if they were running, finishing or
 * completed.  The rows of removing jobs are never touched (their files
 * are the prune task's): the lost disk of a removing job changes nothing,
 * and a removing row among the dependents is left as it is (the rows
 * based on it are still failed). */
int catalog_disk_lost (struct catalog *cat, int64_t disk_id, const char *reason);

/* --- Several hubs on one catalog (migration 0007) ---------------------
 *
 * Each hub has an id (DATA-DIR/hub-id); a job or task records the hub that
 * runs it (owner_hub), and a hub creates a file in a repository only under
 * an intent row (repository id, path relative to its root) that names it.
 * catalog_backup_insert deletes the intents of its disks' files in its own
 * transaction. */

/* Give hub_id every running or finishing job and every running task that
 * no hub owns (rows from before 0007), one UPDATE each: the first hub to
 * start after the migration takes them all.  *claimed (may be NULL)
 * counts the rows it took. */
int catalog_hub_claim (struct catalog *cat, const char *hub_id, int64_t *claimed);
/* Record that hub_id is about to create path in repository_id, for job_id
 * (may be NULL).  ERR_CONFLICT when an intent names that path already
 * (another hub's, or a start-up check's that deletes a file of that
 * name). */
int catalog_intent_add (struct catalog *cat, const char *repository_id, const char *path,
                        const char *hub_id, const char *job_id);
/* Delete the intent of path (none is no error). */
int catalog_intent_remove (struct catalog *cat, const char *repository_id, const char *path);
/* A start-up file check found path, which no row owned when it looked.  In
 * one write transaction: CAT_FILE_OWNED when a disk row owns it now;
 * CAT_FILE_INTENDED when another hub's intent names it (*other_hub and
 * *other_job, malloc'd, the latter maybe NULL, say whose); else the intent
 * is hub_id's (taken now, unless hub_id had it already) and the answer is
 * CAT_FILE_ORPHAN: the caller deletes the file, then the intent.  -1 on
 * error. */
enum cat_file_owner { CAT_FILE_ORPHAN, CAT_FILE_OWNED, CAT_FILE_INTENDED };
int catalog_intent_orphan (struct catalog *cat, const char *repository_id, const char *path,
                           const char *hub_id, char **other_hub, char **other_job);
/* Delete every intent of hub_id (at its start: none of its starts is in
 * progress any more). *n (may be NULL) counts them. */
int catalog_intent_clear_hub (struct catalog *cat, const char *hub_id, int64_t *n);

/* --- Tasks and prunes -------------------------------------------------- */
/* Insert a task as running, with its steps, message and result as given;
 * created_at and updated_at are now unless given.  ERR_CONFLICT when the
 * id is taken. */
int catalog_task_insert (struct catalog *cat, const struct cat_task *t);
int catalog_task_get (struct catalog *cat, const char *id, struct cat_task *out);
/* Every task, or those of one status, newest first (created_at, then id). */
int catalog_task_list (struct catalog *cat, bool by_status, enum task_status status,
                       struct cat_task **out, size_t *n);
/* A running task's progress: steps as given, message as given (NULL
 * clears it), result as given (NULL keeps it).  ERR_NOT_FOUND; ERR_CONFLICT
 * when the task is not running. */
int catalog_task_update (struct catalog *cat, const char *id, int64_t steps_done,
                         int64_t steps_total, const char *message, const char *result);
/* End a running task as TASK_COMPLETED or TASK_FAILED (anything else is
 * ERR_INVALID), with completed_at; error as given, result NULL keeps the
 * stored one.  ERR_NOT_FOUND; ERR_CONFLICT when it is not running. */
int catalog_task_end (struct catalog *cat, const char *id, enum task_status status,
                      const char *error, const char *result);

/* Begin a prune, in one transaction: insert the task (running, see
 * catalog_task_insert) and turn each job of remove_ids (NULL-terminated)
 * from completed to removing.  ERR_CONFLICT, nothing changed, when a
 * listed job is not a completed job of task->context_id, is protected, or
 * is the context's newest completed job (its last_backup_id): plan
 * again. */
int catalog_prune_begin (struct catalog *cat, const struct cat_task *task,
                         char *const *remove_ids);

/* Record one merge step of a prune whose files are done, in one
 * transaction.  removed_ids (n_removed >= 1) are disk rows of removing jobs
 * of one context; kept_disk_id is the completed row whose parent is one of
 * them (-1 for a tail: no row is kept) and gets the parent
 * new_parent_disk_id, a completed row of its context and disk index (-1:
 * it becomes a full, parent NULL).  Failed and cancelled jobs with a disk
 * based on a removed row (directly or through their own rows) are deleted
 * whole; the removed rows are deleted; removing jobs left without disk
 * rows are deleted.  ERR_CONFLICT, nothing changed, when a row is not what
 * it must be, or when a row of another job (running, finishing, completed
 * or removing, other than the kept one) is based on a removed row.
 * *deleted receives every deleted disk row (with its qcow2_path, relative
 * to the repository), sorted by id, for the files. */
int catalog_merge_commit (struct catalog *cat, int64_t kept_disk_id,
                          int64_t new_parent_disk_id,
                          const int64_t *removed_ids, size_t n_removed,
                          struct cat_disk **deleted, size_t *n_deleted);

/* --- Freeing ---------------------------------------------------------- */
void cat_repository_clear (struct cat_repository *r);
void cat_vm_clear (struct cat_vm *vm);
void cat_context_clear (struct cat_context *c);
void cat_disk_clear (struct cat_disk *d);
void cat_job_clear (struct cat_job *j);
void cat_policy_clear (struct cat_policy *p);
void cat_task_clear (struct cat_task *t);
void cat_repository_free_array (struct cat_repository *a, size_t n);
void cat_vm_free_array (struct cat_vm *a, size_t n);
void cat_context_free_array (struct cat_context *a, size_t n);
void cat_disk_free_array (struct cat_disk *a, size_t n);
void cat_job_free_array (struct cat_job *a, size_t n);
void cat_policy_free_array (struct cat_policy *a, size_t n);
void cat_task_free_array (struct cat_task *a, size_t n);

/* Arrays of rows as one value, for the CLEANUP_CAT_*_LIST attributes:
 * pass &l.v, &l.n where the catalog returns an array. */
struct cat_repository_list { struct cat_repository *v; size_t n; };
struct cat_vm_list { struct cat_vm *v; size_t n; };
struct cat_context_list { struct cat_context *v; size_t n; };
struct cat_disk_list { struct cat_disk *v; size_t n; };
struct cat_job_list { struct cat_job *v; size_t n; };
struct cat_policy_list { struct cat_policy *v; size_t n; };
struct cat_task_list { struct cat_task *v; size_t n; };
void cat_repository_list_clear (struct cat_repository_list *l);
void cat_vm_list_clear (struct cat_vm_list *l);
void cat_context_list_clear (struct cat_context_list *l);
void cat_disk_list_clear (struct cat_disk_list *l);
void cat_job_list_clear (struct cat_job_list *l);
void cat_policy_list_clear (struct cat_policy_list *l);
void cat_task_list_clear (struct cat_task_list *l);

/* Clear a row, or free a list, when its variable goes out of scope.  To
 * hand one out: *out = row; row = (struct cat_X) { 0 }; */
#define CLEANUP_CAT_REPO __attribute__((cleanup (cat_repository_clear)))
#define CLEANUP_CAT_VM __attribute__((cleanup (cat_vm_clear)))
#define CLEANUP_CAT_CONTEXT __attribute__((cleanup (cat_context_clear)))
#define CLEANUP_CAT_DISK __attribute__((cleanup (cat_disk_clear)))
#define CLEANUP_CAT_JOB __attribute__((cleanup (cat_job_clear)))
#define CLEANUP_CAT_POLICY __attribute__((cleanup (cat_policy_clear)))
#define CLEANUP_CAT_TASK __attribute__((cleanup (cat_task_clear)))
#define CLEANUP_CAT_REPO_LIST __attribute__((cleanup (cat_repository_list_clear)))
#define CLEANUP_CAT_VM_LIST __attribute__((cleanup (cat_vm_list_clear)))
#define CLEANUP_CAT_CONTEXT_LIST __attribute__((cleanup (cat_context_list_clear)))
#define CLEANUP_CAT_DISK_LIST __attribute__((cleanup (cat_disk_list_clear)))
#define CLEANUP_CAT_JOB_LIST __attribute__((cleanup (cat_job_list_clear)))
#define CLEANUP_CAT_POLICY_LIST __attribute__((cleanup (cat_policy_list_clear)))
#define CLEANUP_CAT_TASK_LIST __attribute__((cleanup (cat_task_list_clear)))

#endif
