-- catalog/migrations/sqlite/0005_integrity.sql - verification of backups.
--
-- backup_disks gains verify_state ('none' until a verify or an audit
-- checked the disk's chain: then 'ok' or 'corrupt'), verified_at and
-- verify_error (why it is corrupt: the file, the first bad offsets).
-- backup_jobs gains verify_state and verified_at: corrupt when any of its
-- disks is corrupt, ok when all are ok, else none (catalog_verify_record
-- writes both in one transaction).  A 'corrupt' row is never a parent:
-- the next backup of that disk is a full (catalog_backup_plan).
--
-- policies gain the verify settings: verify_after_backup (a verify task
-- after each completed backup), verify_every_days (NULL = never by age)
-- and audit_percent (NULL = no audit of hub-driven backups).
--
-- tasks.kind gains 'verify'.  The CHECK changes, so tasks is rebuilt as
-- 0003_finishing.sql rebuilt backup_jobs (tasks has no foreign keys; the
-- runner turns them off around every migration anyway and runs PRAGMA
-- foreign_key_check before COMMIT).  The added columns need no rebuild:
-- ALTER TABLE ADD COLUMN takes a CHECK and a NOT NULL with a default.

ALTER TABLE backup_disks ADD COLUMN verify_state TEXT NOT NULL DEFAULT 'none'
  CHECK (verify_state IN ('none', 'ok', 'corrupt'));
ALTER TABLE backup_disks ADD COLUMN verified_at TEXT;
ALTER TABLE backup_disks ADD COLUMN verify_error TEXT;

ALTER TABLE backup_jobs ADD COLUMN verify_state TEXT NOT NULL DEFAULT 'none'
  CHECK (verify_state IN ('none', 'ok', 'corrupt'));
ALTER TABLE backup_jobs ADD COLUMN verified_at TEXT;

ALTER TABLE policies ADD COLUMN verify_after_backup INTEGER NOT NULL DEFAULT 0
  CHECK (verify_after_backup IN (0, 1));
ALTER TABLE policies ADD COLUMN verify_every_days INTEGER CHECK (verify_every_days >= 1);
ALTER TABLE policies ADD COLUMN audit_percent INTEGER
  CHECK (audit_percent BETWEEN 1 AND 100);

CREATE TABLE new_tasks (
  id            TEXT NOT NULL PRIMARY KEY,
  kind          TEXT NOT NULL CHECK (kind IN ('prune', 'verify')),
  context_id    TEXT,
  status        TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
  steps_done    INTEGER NOT NULL DEFAULT 0 CHECK (steps_done >= 0),
  steps_total   INTEGER NOT NULL DEFAULT 0 CHECK (steps_total >= 0),
  message       TEXT,
  error         TEXT,
  result        TEXT,
  created_at    TEXT NOT NULL,
  updated_at    TEXT NOT NULL,
  completed_at  TEXT
);
INSERT INTO new_tasks (id, kind, context_id, status, steps_done, steps_total, message,
                       error, result, created_at, updated_at, completed_at)
  SELECT id, kind, context_id, status, steps_done, steps_total, message, error, result,
         created_at, updated_at, completed_at FROM tasks;
DROP TABLE tasks;
ALTER TABLE new_tasks RENAME TO tasks;
CREATE INDEX tasks_status ON tasks (status);
CREATE INDEX tasks_created ON tasks (created_at, id);
