-- catalog/migrations/mariadb/0005_integrity.sql - verification of backups
-- (see sqlite/0005_integrity.sql).  Every statement is re-runnable (IF NOT
-- EXISTS, MODIFY), as every MariaDB migration must be.

ALTER TABLE backup_disks
  ADD COLUMN IF NOT EXISTS verify_state VARCHAR(16) NOT NULL DEFAULT 'none'
    CHECK (verify_state IN ('none', 'ok', 'corrupt')),
  ADD COLUMN IF NOT EXISTS verified_at VARCHAR(32),
  ADD COLUMN IF NOT EXISTS verify_error TEXT;

ALTER TABLE backup_jobs
  ADD COLUMN IF NOT EXISTS verify_state VARCHAR(16) NOT NULL DEFAULT 'none'
    CHECK (verify_state IN ('none', 'ok', 'corrupt')),
  ADD COLUMN IF NOT EXISTS verified_at VARCHAR(32);

ALTER TABLE policies
  ADD COLUMN IF NOT EXISTS verify_after_backup INT NOT NULL DEFAULT 0
    CHECK (verify_after_backup IN (0, 1)),
  ADD COLUMN IF NOT EXISTS verify_every_days BIGINT CHECK (verify_every_days >= 1),
  ADD COLUMN IF NOT EXISTS audit_percent BIGINT CHECK (audit_percent BETWEEN 1 AND 100);

ALTER TABLE tasks
  MODIFY kind VARCHAR(16) NOT NULL CHECK (kind IN ('prune', 'verify'));
