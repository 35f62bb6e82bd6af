-- catalog/migrations/mariadb/0007_two_hubs.sql - several hubs sharing one
-- catalog (see sqlite/0007_two_hubs.sql).  Every statement is re-runnable
-- (IF NOT EXISTS), as every MariaDB migration must be.  A (repository_id,
-- path) key is too long for an InnoDB primary key: file_intents has a
-- numbered one and the pair is a hashed unique key instead.

ALTER TABLE backup_jobs
  ADD COLUMN IF NOT EXISTS owner_hub VARCHAR(64),
  ADD KEY IF NOT EXISTS backup_jobs_owner (owner_hub, status);
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS owner_hub VARCHAR(64);

CREATE TABLE IF NOT EXISTS file_intents (
  id             BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  repository_id  VARCHAR(255) NOT NULL,
  path           VARCHAR(4096) NOT NULL,
  hub_id         VARCHAR(64) NOT NULL,
  job_id         VARCHAR(255),
  created_at     VARCHAR(32) NOT NULL,
  UNIQUE KEY file_intents_path (repository_id, path) USING HASH,
  KEY file_intents_hub (hub_id),
  CONSTRAINT file_intents_repository FOREIGN KEY (repository_id)
    REFERENCES backup_repositories (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
