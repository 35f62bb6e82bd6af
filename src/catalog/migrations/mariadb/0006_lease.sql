-- catalog/migrations/mariadb/0006_lease.sql - leases of agents' jobs (see
-- sqlite/0006_lease.sql).  Every statement is re-runnable (IF NOT EXISTS),
-- as every MariaDB migration must be.

ALTER TABLE backup_jobs
  ADD COLUMN IF NOT EXISTS lease_seconds BIGINT
    CHECK (lease_seconds IS NULL OR lease_seconds >= 1),
  ADD COLUMN IF NOT EXISTS lease_expires_at VARCHAR(32);

CREATE INDEX IF NOT EXISTS backup_jobs_lease ON backup_jobs (status, lease_expires_at);
