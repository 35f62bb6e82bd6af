/* hub/hub-int.h - helpers shared by the files of src/hub/. */
#ifndef STRATA_HUB_HUB_INT_H
#define STRATA_HUB_HUB_INT_H

#include "hub/hub.h"

/* Drop the exports of these disk rows and delete their files (rows that are
 * already gone from the catalog).  Errors are logged, not returned: the
 * rows are gone, and a file left behind is removed at the next start. */
void hub_drop_disks (struct hub *hub, const char *repo_path,
                     const struct cat_disk *disks, size_t n);

/* Fault injection for the crash tests: when the environment variable
 * STRATA_CRASH_AT names this point, the hub kills itself here with SIGKILL,
 * as a power cut would, so a test can check that the next start recovers.
 * Points: start:images start:exports start:recorded complete:synced
 * complete:recorded finishing:recorded finish:recorded end:recorded
 * delete:recorded context-delete:recorded. */
void hub_crash_point (const char *where);

/* --- Restores (hub/restore.c); hub->lock held for all of these. ------- */
/* ERR_CONFLICT when an open restore export reads a disk of one of these
 * jobs (a NULL-terminated vector), or of a job of this context. */
int hub_restores_check_jobs (struct hub *hub, char *const *job_ids);
int hub_restores_check_context (struct hub *hub, const char *context_id);
/* Export them again after the storage daemon restarted. */
void hub_restores_reexport (struct hub *hub);
/* Forget every restore (hub_close; the daemon is gone by then). */
void hub_restores_free (struct hub *hub);

/* --- Workers (hub/worker.c) ------------------------------------------- */
/* Start the pool (hub->cfg.workers threads) and set hub->hooks. */
int hub_workers_start (struct hub *hub);
/* Cancel every transfer, wait for the workers, free the pool.  Jobs are
 * left as they are ("running"), for the next start to pick up. */
void hub_workers_stop (struct hub *hub);
/* Queue a hub-driven running or finishing job (no-op if it is queued or
 * running). */
void hub_workers_queue (struct hub *hub, const char *backup_id);

#endif
