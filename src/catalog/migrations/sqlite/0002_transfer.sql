-- catalog/migrations/sqlite/0002_transfer.sql - what the data path records.
--
-- backup_disks.full_reason: why a disk of an incremental job holds a full
-- copy (no completed backup of that disk to build on, or its change
-- tracking was missing or inconsistent, so the whole disk went into the
-- overlay).  NULL when the disk is what its backup_type says.
--
-- backup_jobs.driver: who moves the data.  'agent': an outside client
-- writes into the NBD targets and completes each disk; 'hub': the hub's own
-- workers copy from the inventory's sources.

ALTER TABLE backup_disks ADD COLUMN full_reason TEXT;
ALTER TABLE backup_jobs ADD COLUMN driver TEXT NOT NULL DEFAULT 'agent'
  CHECK (driver IN ('agent', 'hub'));
