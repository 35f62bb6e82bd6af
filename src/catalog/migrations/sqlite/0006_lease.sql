-- catalog/migrations/sqlite/0006_lease.sql - leases of agents' jobs.
--
-- backup_jobs gains lease_seconds and lease_expires_at: a job whose
-- starter asked for a lease (POST /api/v1/backups "lease_seconds") must
-- be renewed by it (its progress reports) before lease_expires_at, else
-- the hub fails it (hub/lease.c).  Both NULL: no lease, the job runs until
-- someone ends it, as every job did before.  lease_expires_at is an
-- id_time_format timestamp (UTC, fixed width), compared as text.

ALTER TABLE backup_jobs ADD COLUMN lease_seconds INTEGER
  CHECK (lease_seconds IS NULL OR lease_seconds >= 1);
ALTER TABLE backup_jobs ADD COLUMN lease_expires_at TEXT;
CREATE INDEX backup_jobs_lease ON backup_jobs (status, lease_expires_at);
