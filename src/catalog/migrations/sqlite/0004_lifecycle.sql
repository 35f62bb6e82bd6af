-- catalog/migrations/sqlite/0004_lifecycle.sql - policies, schedules,
-- protected points, prune tasks.
--
-- policies: a retention and schedule policy, named like a VM.  Its
-- repository_id has no ON DELETE action (a repository a policy names
-- cannot be deleted); a keep_* column is NULL when the policy has no such
-- rule, and has_retention tells a policy without retention (null in the
-- API: nothing is pruned) from one whose retention names no rule ({}:
-- everything is kept).  vms.policy names the VM's policy, again with no ON DELETE action
-- (a policy in use cannot be deleted); vms.next_run_at, last_run_at and
-- last_skipped_at belong to the scheduler.
--
-- backup_jobs gains protected (a point retention always keeps) and the
-- status 'removing' (a prune task chose the job; its files are being
-- merged into the points that stay).  The CHECK changes, so the table is
-- rebuilt as in 0003_finishing.sql, with every index made again (the
-- runner turns foreign keys off around this migration and runs PRAGMA
-- foreign_key_check before COMMIT).
--
-- tasks: long-running hub operations (a prune).  context_id has no
-- foreign key: a task's record outlives its context.  result is JSON text
-- that the hub writes.

CREATE TABLE policies (
  name           TEXT NOT NULL PRIMARY KEY,
  repository_id  TEXT REFERENCES backup_repositories (id),
  schedule       TEXT,
  keep_last      INTEGER CHECK (keep_last >= 0),
  keep_hourly    INTEGER CHECK (keep_hourly >= 0),
  keep_daily     INTEGER CHECK (keep_daily >= 0),
  keep_weekly    INTEGER CHECK (keep_weekly >= 0),
  keep_monthly   INTEGER CHECK (keep_monthly >= 0),
  keep_yearly    INTEGER CHECK (keep_yearly >= 0),
  has_retention  INTEGER NOT NULL DEFAULT 0 CHECK (has_retention IN (0, 1)),
  created_at     TEXT NOT NULL,
  updated_at     TEXT NOT NULL,
  CHECK (has_retention = 1 OR COALESCE (keep_last, keep_hourly, keep_daily, keep_weekly,
                                        keep_monthly, keep_yearly) IS NULL)
);
CREATE INDEX policies_repository ON policies (repository_id);

ALTER TABLE vms ADD COLUMN policy TEXT REFERENCES policies (name);
ALTER TABLE vms ADD COLUMN next_run_at TEXT;
ALTER TABLE vms ADD COLUMN last_run_at TEXT;
ALTER TABLE vms ADD COLUMN last_skipped_at TEXT;
CREATE INDEX vms_policy ON vms (policy);

CREATE TABLE new_backup_jobs (
  id                    TEXT NOT NULL PRIMARY KEY,
  vm_backup_context_id  TEXT NOT NULL
                        REFERENCES vm_backup_contexts (context_id) ON DELETE CASCADE,
  vm_name               TEXT NOT NULL,
  repository_id         TEXT NOT NULL,
  backup_type           TEXT NOT NULL CHECK (backup_type IN ('full', 'incremental')),
  status                TEXT NOT NULL
                        CHECK (status IN ('running', 'finishing', 'completed', 'failed',
                                          'cancelled', 'removing')),
  error                 TEXT,
  created_at            TEXT NOT NULL,
  completed_at          TEXT,
  driver                TEXT NOT NULL DEFAULT 'agent' CHECK (driver IN ('agent', 'hub')),
  protected             INTEGER NOT NULL DEFAULT 0 CHECK (protected IN (0, 1))
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

CREATE TABLE tasks (
  id            TEXT NOT NULL PRIMARY KEY,
  kind          TEXT NOT NULL CHECK (kind IN ('prune')),
  context_id    TEXT,
  status        TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
  steps_done    INTEGER NOT NULL DEFAULT 0 CHECK (steps_done >= 0),
  steps_total   INTEGER NOT NULL DEFAULT 0 CHECK (steps_total >= 0),
  message       TEXT,
  error         TEXT,
  result        TEXT,
  created_at    TEXT NOT NULL,
  updated_at    TEXT NOT NULL,
  completed_at  TEXT
);
CREATE INDEX tasks_status ON tasks (status);
CREATE INDEX tasks_created ON tasks (created_at, id);
