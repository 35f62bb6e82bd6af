-- catalog/migrations/mariadb/0004_lifecycle.sql - policies, schedules,
-- protected points, prune tasks (see sqlite/0004_lifecycle.sql).  Every
-- statement is re-runnable (IF NOT EXISTS, MODIFY), as every MariaDB
-- migration must be.

CREATE TABLE IF NOT EXISTS policies (
  name           VARCHAR(255) NOT NULL PRIMARY KEY,
  repository_id  VARCHAR(255),
  schedule       VARCHAR(255),
  keep_last      BIGINT CHECK (keep_last >= 0),
  keep_hourly    BIGINT CHECK (keep_hourly >= 0),
  keep_daily     BIGINT CHECK (keep_daily >= 0),
  keep_weekly    BIGINT CHECK (keep_weekly >= 0),
  keep_monthly   BIGINT CHECK (keep_monthly >= 0),
  keep_yearly    BIGINT CHECK (keep_yearly >= 0),
  has_retention  INT NOT NULL DEFAULT 0 CHECK (has_retention IN (0, 1)),
  created_at     VARCHAR(32) NOT NULL,
  updated_at     VARCHAR(32) NOT NULL,
  CONSTRAINT policies_rules CHECK (has_retention = 1 OR
    COALESCE (keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
              keep_yearly) IS NULL),
  KEY policies_repository (repository_id),
  CONSTRAINT policies_repository FOREIGN KEY (repository_id)
    REFERENCES backup_repositories (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

ALTER TABLE vms
  ADD COLUMN IF NOT EXISTS policy VARCHAR(255),
  ADD COLUMN IF NOT EXISTS next_run_at VARCHAR(32),
  ADD COLUMN IF NOT EXISTS last_run_at VARCHAR(32),
  ADD COLUMN IF NOT EXISTS last_skipped_at VARCHAR(32),
  ADD KEY IF NOT EXISTS vms_policy (policy);
ALTER TABLE vms
  ADD CONSTRAINT vms_policy FOREIGN KEY IF NOT EXISTS (policy) REFERENCES policies (name);

-- 'removing' joins the status CHECK; running_context (the one-active-job
-- key) is unchanged: a removing job is not active.
ALTER TABLE backup_jobs
  MODIFY status VARCHAR(16) NOT NULL
    CHECK (status IN ('running', 'finishing', 'completed', 'failed', 'cancelled',
                      'removing')),
  ADD COLUMN IF NOT EXISTS protected TINYINT NOT NULL DEFAULT 0
    CHECK (protected IN (0, 1));

CREATE TABLE IF NOT EXISTS tasks (
  id            VARCHAR(255) NOT NULL PRIMARY KEY,
  kind          VARCHAR(16) NOT NULL CHECK (kind IN ('prune')),
  context_id    VARCHAR(255),
  status        VARCHAR(16) NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
  steps_done    BIGINT NOT NULL DEFAULT 0 CHECK (steps_done >= 0),
  steps_total   BIGINT NOT NULL DEFAULT 0 CHECK (steps_total >= 0),
  message       TEXT,
  error         TEXT,
  result        MEDIUMTEXT,
  created_at    VARCHAR(32) NOT NULL,
  updated_at    VARCHAR(32) NOT NULL,
  completed_at  VARCHAR(32),
  KEY tasks_status (status),
  KEY tasks_created (created_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
