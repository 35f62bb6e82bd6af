-- catalog/migrations/sqlite/0003_finishing.sql - a job that owes work at its
-- source, and mounted repositories.
--
-- backup_jobs.status gains 'finishing': every disk is completed and
-- recorded, but the job still owes work at its source (for a hub-driven
-- job: removing the superseded bitmaps from the source images).  It counts
-- as active like 'running': at most one running or finishing job per
-- context.  backup_repositories.type gains 'nfs' and 'cifs': a mounted
-- folder, for the hub the same as 'local'.
--
-- A CHECK constraint changes only by rebuilding its table, the way SQLite's
-- documentation describes for general schema changes: make the new table,
-- copy the rows, drop the old one, rename the new one, make its indexes
-- again.  The runner turns foreign keys off around this migration (so that
-- dropping backup_jobs deletes no backup_disks row by cascade) and runs
-- PRAGMA foreign_key_check before COMMIT.

CREATE TABLE new_backup_repositories (
  id          TEXT NOT NULL PRIMARY KEY,
  name        TEXT NOT NULL,
  type        TEXT NOT NULL CHECK (type IN ('local', 'nfs', 'cifs')),
  path        TEXT NOT NULL UNIQUE,
  created_at  TEXT NOT NULL
);
INSERT INTO new_backup_repositories (id, name, type, path, created_at)
  SELECT id, name, type, path, created_at FROM backup_repositories;
DROP TABLE backup_repositories;
ALTER TABLE new_backup_repositories RENAME TO backup_repositories;

CREATE TABLE new_backup_jobs (
  id                    TEXT NOT NULL PRIMARY KEY,
  vm_backup_context_id  TEXT NOT NULL
                        REFERENCES vm_backup_contexts (context_id) ON DELETE CASCADE,
  vm_name               TEXT NOT NULL,
  repository_id         TEXT NOT NULL,
  backup_type           TEXT NOT NULL CHECK (backup_type IN ('full', 'incremental')),
  status                TEXT NOT NULL
                        CHECK (status IN ('running', 'finishing', 'completed', 'failed',
                                          'cancelled')),
  error                 TEXT,
  created_at            TEXT NOT NULL,
  completed_at          TEXT,
  driver                TEXT NOT NULL DEFAULT 'agent' CHECK (driver IN ('agent', 'hub'))
);
INSERT INTO new_backup_jobs (id, vm_backup_context_id, vm_name, repository_id,
                             backup_type, status, error, created_at, completed_at, driver)
  SELECT id, vm_backup_context_id, vm_name, repository_id, backup_type, status, error,
         created_at, completed_at, driver FROM backup_jobs;
DROP TABLE backup_jobs;
ALTER TABLE new_backup_jobs RENAME TO backup_jobs;
-- At most one active (running or finishing) job per context.
CREATE UNIQUE INDEX backup_jobs_one_running
  ON backup_jobs (vm_backup_context_id) WHERE status IN ('running', 'finishing');
CREATE INDEX backup_jobs_context_created
  ON backup_jobs (vm_backup_context_id, created_at);
CREATE INDEX backup_jobs_created
  ON backup_jobs (created_at, id);
