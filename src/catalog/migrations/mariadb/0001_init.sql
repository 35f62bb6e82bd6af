-- catalog/migrations/mariadb/0001_init.sql - the first catalog schema, in the
-- MariaDB (InnoDB) dialect.  The same tables, columns, keys and checks
-- as sqlite/0001_init.sql; docs/SCHEMA.md says how each is expressed here.
--
-- Every table is InnoDB, utf8mb4 with the collation utf8mb4_nopad_bin: text
-- compares and sorts byte for byte, case and trailing spaces count, as in
-- SQLite.  Timestamps are VARCHAR in UTC, "YYYY-MM-DDTHH:MM:SS.mmmZ", bound
-- by the C code, never defaulted here.
--
-- DDL commits by itself in MariaDB, so a migration cannot be one
-- transaction: every statement here is written to be run again
-- (IF NOT EXISTS), and the runner records the version only after the last
-- one succeeded.  A migration stopped halfway is finished by the next start.

CREATE TABLE IF NOT EXISTS backup_repositories (
  id          VARCHAR(255) NOT NULL PRIMARY KEY,
  name        VARCHAR(1024) NOT NULL,
  type        VARCHAR(16) NOT NULL CHECK (type IN ('local')),
  path        VARCHAR(4096) NOT NULL,
  created_at  VARCHAR(32) NOT NULL,
  UNIQUE KEY backup_repositories_path (path) USING HASH
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS vms (
  vm_name       VARCHAR(255) NOT NULL PRIMARY KEY,
  vmware_vm_id  VARCHAR(255) NOT NULL DEFAULT '',
  vm_path       VARCHAR(4096) NOT NULL DEFAULT '',
  vcenter_host  VARCHAR(1024) NOT NULL DEFAULT '',
  datacenter    VARCHAR(1024) NOT NULL DEFAULT '',
  created_at    VARCHAR(32) NOT NULL,
  updated_at    VARCHAR(32) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS vm_disks (
  vm_name          VARCHAR(255) NOT NULL,
  disk_index       INT NOT NULL CHECK (disk_index >= 0),
  size_bytes       BIGINT NOT NULL CHECK (size_bytes >= 0),
  vmware_disk_key  BIGINT,
  unit_number      BIGINT,
  source           TEXT,
  PRIMARY KEY (vm_name, disk_index),
  CONSTRAINT vm_disks_vm FOREIGN KEY (vm_name) REFERENCES vms (vm_name)
    ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- No ON DELETE on repository_id: a repository a context uses cannot go.
CREATE TABLE IF NOT EXISTS vm_backup_contexts (
  context_id          VARCHAR(255) NOT NULL PRIMARY KEY,
  vm_name             VARCHAR(255) NOT NULL,
  vmware_vm_id        VARCHAR(255) NOT NULL DEFAULT '',
  vm_path             VARCHAR(4096) NOT NULL DEFAULT '',
  vcenter_host        VARCHAR(1024) NOT NULL DEFAULT '',
  datacenter          VARCHAR(1024) NOT NULL DEFAULT '',
  repository_id       VARCHAR(255) NOT NULL,
  total_backups_run   BIGINT NOT NULL DEFAULT 0 CHECK (total_backups_run >= 0),
  successful_backups  BIGINT NOT NULL DEFAULT 0 CHECK (successful_backups >= 0),
  failed_backups      BIGINT NOT NULL DEFAULT 0 CHECK (failed_backups >= 0),
  last_backup_id      VARCHAR(255),
  last_backup_type    VARCHAR(16) CHECK (last_backup_type IN ('full', 'incremental')),
  last_backup_at      VARCHAR(32),
  created_at          VARCHAR(32) NOT NULL,
  updated_at          VARCHAR(32) NOT NULL,
  UNIQUE KEY vm_backup_contexts_vm_repository (vm_name, repository_id),
  KEY vm_backup_contexts_repository (repository_id),
  CONSTRAINT vm_backup_contexts_repository FOREIGN KEY (repository_id)
    REFERENCES backup_repositories (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- At most one running job per context: MariaDB has no partial index, so a
-- stored generated column holds the context id while the job runs and NULL
-- otherwise, and a UNIQUE key on it (NULLs never collide) refuses a second
-- running job, whichever process writes it.
CREATE TABLE IF NOT EXISTS backup_jobs (
  id                    VARCHAR(255) NOT NULL PRIMARY KEY,
  vm_backup_context_id  VARCHAR(255) NOT NULL,
  vm_name               VARCHAR(255) NOT NULL,
  repository_id         VARCHAR(255) NOT NULL,
  backup_type           VARCHAR(16) NOT NULL CHECK (backup_type IN ('full', 'incremental')),
  status                VARCHAR(16) NOT NULL
                        CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
  error                 TEXT,
  created_at            VARCHAR(32) NOT NULL,
  completed_at          VARCHAR(32),
  running_context       VARCHAR(255)
                        AS (IF(status = 'running', vm_backup_context_id, NULL)) PERSISTENT,
  UNIQUE KEY backup_jobs_one_running (running_context),
  KEY backup_jobs_context_created (vm_backup_context_id, created_at),
  KEY backup_jobs_created (created_at, id),
  CONSTRAINT backup_jobs_context FOREIGN KEY (vm_backup_context_id)
    REFERENCES vm_backup_contexts (context_id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- One row per disk of a job; parent_disk_id has no ON DELETE action.
CREATE TABLE IF NOT EXISTS backup_disks (
  id                    BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  vm_backup_context_id  VARCHAR(255) NOT NULL,
  backup_job_id         VARCHAR(255) NOT NULL,
  disk_index            INT NOT NULL CHECK (disk_index >= 0),
  vmware_disk_key       BIGINT,
  size_bytes            BIGINT NOT NULL CHECK (size_bytes >= 0),
  unit_number           BIGINT,
  backup_type           VARCHAR(16) NOT NULL CHECK (backup_type IN ('full', 'incremental')),
  disk_change_id        TEXT,
  qcow2_path            VARCHAR(4096),
  parent_disk_id        BIGINT,
  nbd_export            VARCHAR(255),
  bytes_transferred     BIGINT NOT NULL DEFAULT 0 CHECK (bytes_transferred >= 0),
  status                VARCHAR(16) NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'completed', 'failed')),
  error                 TEXT,
  created_at            VARCHAR(32) NOT NULL,
  completed_at          VARCHAR(32),
  UNIQUE KEY backup_disks_job_disk (backup_job_id, disk_index),
  UNIQUE KEY backup_disks_nbd_export (nbd_export),
  KEY idx_change_id_lookup (vm_backup_context_id, disk_index, status),
  KEY backup_disks_parent (parent_disk_id),
  CONSTRAINT backup_disks_full_has_no_parent
    CHECK ((backup_type = 'full') = (parent_disk_id IS NULL)),
  CONSTRAINT backup_disks_context FOREIGN KEY (vm_backup_context_id)
    REFERENCES vm_backup_contexts (context_id) ON DELETE CASCADE,
  CONSTRAINT backup_disks_job FOREIGN KEY (backup_job_id)
    REFERENCES backup_jobs (id) ON DELETE CASCADE,
  CONSTRAINT backup_disks_parent FOREIGN KEY (parent_disk_id)
    REFERENCES backup_disks (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- The write lock of the catalog: every write transaction first locks this
-- one row (SELECT ... FOR UPDATE), as SQLite's BEGIN IMMEDIATE takes its
-- database's write lock, so that the writers of all the hubs sharing the
-- database take turns.  MariaDB only; SQLite needs no such table.
CREATE TABLE IF NOT EXISTS catalog_lock (
  id  INT NOT NULL PRIMARY KEY CHECK (id = 1)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
INSERT IGNORE INTO catalog_lock (id) VALUES (1);
