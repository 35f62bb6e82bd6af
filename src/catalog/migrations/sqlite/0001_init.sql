-- catalog/migrations/sqlite/0001_init.sql - the first catalog schema.
--
-- Table and column names follow the backup-context design (contexts, jobs,
-- per-disk rows).  Timestamps are TEXT in UTC, "YYYY-MM-DDTHH:MM:SS.mmmZ",
-- always bound by the C code (id_now), never defaulted here, so that every
-- backend writes the same text.  The migration runner wraps this file and
-- its schema_migrations row in one transaction: no BEGIN/COMMIT here.

CREATE TABLE backup_repositories (
  id          TEXT NOT NULL PRIMARY KEY,
  name        TEXT NOT NULL,
  type        TEXT NOT NULL CHECK (type IN ('local')),
  path        TEXT NOT NULL UNIQUE,
  created_at  TEXT NOT NULL
);

-- The VM inventory.  Contexts copy the descriptive fields they need, so
-- deleting a VM from the inventory leaves its backups alone.
CREATE TABLE vms (
  vm_name       TEXT NOT NULL PRIMARY KEY,
  vmware_vm_id  TEXT NOT NULL DEFAULT '',
  vm_path       TEXT NOT NULL DEFAULT '',
  vcenter_host  TEXT NOT NULL DEFAULT '',
  datacenter    TEXT NOT NULL DEFAULT '',
  created_at    TEXT NOT NULL,
  updated_at    TEXT NOT NULL
);

CREATE TABLE vm_disks (
  vm_name          TEXT NOT NULL REFERENCES vms (vm_name) ON DELETE CASCADE,
  disk_index       INTEGER NOT NULL CHECK (disk_index >= 0),
  size_bytes       INTEGER NOT NULL CHECK (size_bytes >= 0),
  vmware_disk_key  INTEGER,
  unit_number      INTEGER,
  source           TEXT,
  PRIMARY KEY (vm_name, disk_index)
);

-- One context per (VM, repository): the anchor of that VM's backup chain in
-- that repository.  No ON DELETE on repository_id: a repository that a
-- context uses cannot be deleted.
CREATE TABLE vm_backup_contexts (
  context_id          TEXT NOT NULL PRIMARY KEY,
  vm_name             TEXT NOT NULL,
  vmware_vm_id        TEXT NOT NULL DEFAULT '',
  vm_path             TEXT NOT NULL DEFAULT '',
  vcenter_host        TEXT NOT NULL DEFAULT '',
  datacenter          TEXT NOT NULL DEFAULT '',
  repository_id       TEXT NOT NULL REFERENCES backup_repositories (id),
  total_backups_run   INTEGER NOT NULL DEFAULT 0 CHECK (total_backups_run >= 0),
  successful_backups  INTEGER NOT NULL DEFAULT 0 CHECK (successful_backups >= 0),
  failed_backups      INTEGER NOT NULL DEFAULT 0 CHECK (failed_backups >= 0),
  last_backup_id      TEXT,
  last_backup_type    TEXT CHECK (last_backup_type IN ('full', 'incremental')),
  last_backup_at      TEXT,
  created_at          TEXT NOT NULL,
  updated_at          TEXT NOT NULL,
  UNIQUE (vm_name, repository_id)
);
CREATE INDEX vm_backup_contexts_repository
  ON vm_backup_contexts (repository_id);

-- One row per backup run.  vm_name and repository_id repeat the context's
-- so that listings filter without a join.
CREATE TABLE backup_jobs (
  id                    TEXT NOT NULL PRIMARY KEY,
  vm_backup_context_id  TEXT NOT NULL
                        REFERENCES vm_backup_contexts (context_id) ON DELETE CASCADE,
  vm_name               TEXT NOT NULL,
  repository_id         TEXT NOT NULL,
  backup_type           TEXT NOT NULL CHECK (backup_type IN ('full', 'incremental')),
  status                TEXT NOT NULL
                        CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
  error                 TEXT,
  created_at            TEXT NOT NULL,
  completed_at          TEXT
);
-- At most one running job per context, enforced by the database itself so
-- that two starts can never both succeed, whichever process makes them.
CREATE UNIQUE INDEX backup_jobs_one_running
  ON backup_jobs (vm_backup_context_id) WHERE status = 'running';
CREATE INDEX backup_jobs_context_created
  ON backup_jobs (vm_backup_context_id, created_at);
CREATE INDEX backup_jobs_created
  ON backup_jobs (created_at, id);

-- One row per disk of a job.  The chain is explicit: an incremental disk
-- names the row it is based on in parent_disk_id, and a full has none.
-- parent_disk_id has no ON DELETE action: deleting a row that another row
-- is based on fails, and the code deletes dependents first, on purpose.
CREATE TABLE backup_disks (
  id                    INTEGER PRIMARY KEY AUTOINCREMENT,
  vm_backup_context_id  TEXT NOT NULL
                        REFERENCES vm_backup_contexts (context_id) ON DELETE CASCADE,
  backup_job_id         TEXT NOT NULL REFERENCES backup_jobs (id) ON DELETE CASCADE,
  disk_index            INTEGER NOT NULL CHECK (disk_index >= 0),
  vmware_disk_key       INTEGER,
  size_bytes            INTEGER NOT NULL CHECK (size_bytes >= 0),
  unit_number           INTEGER,
  backup_type           TEXT NOT NULL CHECK (backup_type IN ('full', 'incremental')),
  disk_change_id        TEXT,
  qcow2_path            TEXT,
  parent_disk_id        INTEGER REFERENCES backup_disks (id),
  nbd_export            TEXT UNIQUE,
  bytes_transferred     INTEGER NOT NULL DEFAULT 0 CHECK (bytes_transferred >= 0),
  status                TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'completed', 'failed')),
  error                 TEXT,
  created_at            TEXT NOT NULL,
  completed_at          TEXT,
  UNIQUE (backup_job_id, disk_index),
  -- a full has no parent; an incremental always has one
  CHECK ((backup_type = 'full') = (parent_disk_id IS NULL))
);
CREATE INDEX idx_change_id_lookup
  ON backup_disks (vm_backup_context_id, disk_index, status);
CREATE INDEX backup_disks_parent
  ON backup_disks (parent_disk_id);
