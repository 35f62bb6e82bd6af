-- catalog/migrations/mariadb/0002_transfer.sql - what the data path records
-- (see sqlite/0002_transfer.sql): why a disk of an incremental job holds a
-- full copy, and who moves a job's data.  IF NOT EXISTS: re-runnable, as
-- every MariaDB migration (DDL is not transactional there).

ALTER TABLE backup_disks ADD COLUMN IF NOT EXISTS full_reason TEXT;
ALTER TABLE backup_jobs ADD COLUMN IF NOT EXISTS driver VARCHAR(16) NOT NULL DEFAULT 'agent'
  CHECK (driver IN ('agent', 'hub'));
