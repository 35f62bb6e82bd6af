-- catalog/migrations/sqlite/0007_two_hubs.sql - several hubs sharing one
-- catalog (and its repositories): who owns what.
--
-- backup_jobs.owner_hub and tasks.owner_hub name the hub (DATA-DIR/hub-id,
-- "hub-<16 hex>") that runs the job or task: only that hub exports its
-- disks, copies it again after a restart, reaps its lease, or carries on
-- its task.  NULL for rows made before this migration: the first hub to
-- start claims the running ones (catalog_hub_claim).
--
-- file_intents: a hub writes a row here before it creates a file in a
-- repository, and deletes it in the transaction that records the row that
-- owns the file (or after it removed the file again).  A start-up file
-- check deletes a file that no row owns only when no other hub intends it.

ALTER TABLE backup_jobs ADD COLUMN owner_hub TEXT;
ALTER TABLE tasks ADD COLUMN owner_hub TEXT;
CREATE INDEX backup_jobs_owner ON backup_jobs (owner_hub, status);

CREATE TABLE file_intents (
  repository_id  TEXT NOT NULL REFERENCES backup_repositories (id) ON DELETE CASCADE,
  path           TEXT NOT NULL,
  hub_id         TEXT NOT NULL,
  job_id         TEXT,
  created_at     TEXT NOT NULL,
  PRIMARY KEY (repository_id, path)
);
CREATE INDEX file_intents_hub ON file_intents (hub_id);
