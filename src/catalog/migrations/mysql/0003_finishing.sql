-- catalog/migrations/mysql/0003_finishing.sql - a job that owes work at its
-- source, and mounted repositories (see sqlite/0003_finishing.sql).
-- MODIFY replaces a column's CHECK and a generated column's expression, and
-- is re-runnable, as every MariaDB migration must be.

ALTER TABLE backup_repositories
  MODIFY type VARCHAR(16) NOT NULL CHECK (type IN ('local', 'nfs', 'cifs'));
-- The one-active-job key covers 'finishing' as well as 'running'.
ALTER TABLE backup_jobs
  MODIFY status VARCHAR(16) NOT NULL
    CHECK (status IN ('running', 'finishing', 'completed', 'failed', 'cancelled')),
  MODIFY running_context VARCHAR(255)
    AS (IF(status IN ('running', 'finishing'), vm_backup_context_id, NULL)) PERSISTENT;
