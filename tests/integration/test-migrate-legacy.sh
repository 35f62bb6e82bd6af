#!/usr/bin/env bash
# test-migrate-legacy.sh - `strata migrate-legacy` on a catalog with the
# legacy flat backup_jobs table (the seed's Phase 1), on the backend the
# suite runs with (SQLite, or MariaDB with STRATA_TEST_DB=mariadb).
#
# The fixture is the seed's evidence: one VM (pgtest1, 3 disks), 27 jobs,
# 21 of them per-disk rows with disk_id, change_id and repository_path, whose
# QCOW2 files exist in the repository (incrementals backed, by relative
# paths, by the disk's previous completed file).  One per-disk row failed;
# the last run's per-disk rows have no parent row at all.  Then:
# - a row the schema refuses, or a failure just before COMMIT, rolls all of
#   it back: the catalog is exactly as it was;
# - --dry-run prints the plan and writes nothing;
# - the migration reports contexts created, disks migrated, jobs linked and
#   the rows it could not place with their reasons; counts, change ids and
#   chains are checked in the catalog;
# - a second run changes nothing;
# - the hub then answers changeid with each disk's last completed change id,
#   an incremental builds on the migrated chain and reads back through it,
#   and deleting the context cascades.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl sqlite3

MIB8=$((8 * MiB))
REPO=$DATA/repository
LEG=legacy/pgtest1
mkdir -p "$REPO"

if [ "$TEST_DB" = mariadb ]; then
  DB_ARGS=(--db "$CATALOG_URL" --db-password-file "$STRATA_TEST_MARIADB_PWFILE")
  sql_write "
    CREATE TABLE backup_repositories (id VARCHAR(64) PRIMARY KEY, name VARCHAR(255),
      path VARCHAR(1024) NOT NULL) ENGINE = InnoDB;
    CREATE TABLE backup_jobs (id VARCHAR(191) PRIMARY KEY, vm_name VARCHAR(255) NOT NULL,
      repository_id VARCHAR(64), backup_type ENUM('full', 'incremental'), disk_id INT,
      change_id VARCHAR(255), repository_path VARCHAR(1024), bytes_transferred BIGINT DEFAULT 0,
      status VARCHAR(32), created_at DATETIME, completed_at DATETIME NULL) ENGINE = InnoDB;"
else
  DB_ARGS=(--db "sqlite://$CATALOG")
  # No backup_type column here: the parent rows' types come from the rule.
  mkdir -p "$DATA"
  sqlite3 "$CATALOG" "
    CREATE TABLE backup_repositories (id TEXT PRIMARY KEY, name TEXT, path TEXT NOT NULL);
    CREATE TABLE backup_jobs (id TEXT PRIMARY KEY, vm_name TEXT NOT NULL, repository_id TEXT,
      disk_id INTEGER, change_id TEXT, repository_path TEXT, bytes_transferred INTEGER DEFAULT 0,
      status TEXT, created_at TEXT, completed_at TEXT);"
fi
sql_write "INSERT INTO backup_repositories (id, name, path) VALUES ('default', 'default', '$REPO')"

# row ID DISK TYPE CHANGE PATH BYTES STATUS CREATED COMPLETED: one legacy row
# ("NULL" for SQL NULL; TYPE is only written where the table has the column).
row ()
{
  local v type_col="" type_val="" q
  q () { [ "$1" = NULL ] && echo NULL || echo "'$1'"; }
  if [ "$TEST_DB" = mariadb ]; then type_col=", backup_type"; type_val=", $(q "$3")"; fi
  sql_write "INSERT INTO backup_jobs (id, vm_name, repository_id, disk_id, change_id,
    repository_path, bytes_transferred, status, created_at, completed_at$type_col)
    VALUES ('$1', 'pgtest1', 'default', $2, $(q "$4"), $(q "$5"), $6, '$7',
            $(q "$8"), $(q "$9")$type_val)" || echo "row $1 failed" >&2
}

# Seven runs of a 3-disk VM, an hour apart.  Run 5's disk 2 failed; run 7
# has no parent row.  Per disk, each completed file is backed by the disk's
# previous completed one.
declare -A LASTFILE LASTCID
N_PARENT=0 N_DISK=0
for run in 1 2 3 4 5 6 7; do
  created=$(printf '2025-10-08 %02d:00:00' $((run + 9)))
  type=full
  [ $run -gt 1 ] && type=incremental
  if [ $run -le 6 ]; then
    row "backup-pgtest1-run$run" NULL "$type" NULL NULL 0 completed "$created" \
        "$(printf '2025-10-08 %02d:30:00' $((run + 9)))"
    N_PARENT=$((N_PARENT + 1))
  fi
  for d in 0 1 2; do
    jid="backup-pgtest1-disk$d-run$run"
    done_at=$(printf '2025-10-08 %02d:%02d:00' $((run + 9)) $((10 + d)))
    N_DISK=$((N_DISK + 1))
    if [ $run = 5 ] && [ $d = 2 ]; then
      row "$jid" $d incremental NULL NULL 0 failed "$created" "$done_at"
      continue
    fi
    rel="$LEG/disk$d/$jid.qcow2"
    mkdir -p "$REPO/$LEG/disk$d"
    if [ -n "${LASTFILE[$d]}" ]; then
      qemu-img create -q -f qcow2 -F qcow2 -b "$(basename "${LASTFILE[$d]}")" "$REPO/$rel" > /dev/null
    else
      qemu-img create -q -f qcow2 "$REPO/$rel" $MIB8 > /dev/null
    fi
    # Each run writes its own 64 KiB at its own offset of every disk.
    qemu-io -f qcow2 -c "write -P $((run * 16 + d)) $((run * 65536)) 64k" "$REPO/$rel" > /dev/null
    # Half the rows hold absolute paths, as the old code wrote them.
    path=$rel
    [ $((run % 2)) = 1 ] && path=$REPO/$rel
    row "$jid" $d "$type" "52 3c ec 11/$run$d" "$path" $((run * 1000 + d)) completed "$created" "$done_at"
    LASTFILE[$d]=$rel
    LASTCID[$d]="52 3c ec 11/$run$d"
    LASTJOB[$d]=$jid
  done
done
is "$N_PARENT|$N_DISK|$(sql "SELECT count(*) FROM backup_jobs")" "6|21|27" \
   "the fixture: 27 legacy jobs, 21 of them per-disk rows"

# migrate DESC: run the migration; one test that it exits 0; its evidence
# in OUT (and in the TAP notes).
migrate ()
{
  "$STRATA" migrate-legacy "${DB_ARGS[@]}" > "$T/out" 2> "$T/err"
  is "$?" 0 "$1"
  note "$(cat "$T/out")"
  [ -s "$T/err" ] && diag "$(cat "$T/err")"
  OUT=$(cat "$T/out")
}

tables ()
{
  if [ "$TEST_DB" = mariadb ]; then
    sql "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY 1"
  else
    # (sqlite_sequence, SQLite's own, stays once made; it holds no row)
    sql "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sqlite_sequence' ORDER BY 1"
  fi | sql_join ' '
}
legacy_state ()
{
  echo "$(tables) / $(sql "SELECT count(*) FROM backup_jobs")"
  sql "SELECT * FROM backup_jobs ORDER BY id"
}
BEFORE=$(legacy_state)

# --- A row the schema refuses rolls everything back.
row backup-pgtest1-bogus 0 full X "$LEG/disk0/x.qcow2" 5 exploded '2025-10-08 09:00:00' '2025-10-08 09:10:00'
BEFORE_BAD=$(legacy_state)
"$STRATA" migrate-legacy "${DB_ARGS[@]}" > "$T/out" 2> "$T/err"
is "$?" 1 "a legacy row with status 'exploded': migrate-legacy exits 1"
like "$(cat "$T/err")" "backup-pgtest1-bogus" "the error names the row: $(tail -n 1 "$T/err" | head -c 200)"
is "$(legacy_state)" "$BEFORE_BAD" "and the catalog is exactly as it was (tables, rows)"
sql_write "DELETE FROM backup_jobs WHERE id = 'backup-pgtest1-bogus'"
is "$(legacy_state)" "$BEFORE" "the bad row removed, the fixture is back"

# --- A failure at the last moment before COMMIT rolls back too.
STRATA_LEGACY_FAIL_BEFORE_COMMIT=1 "$STRATA" migrate-legacy "${DB_ARGS[@]}" > "$T/out" 2> "$T/err"
is "$?" 1 "a failure just before COMMIT: exit 1"
is "$(legacy_state)" "$BEFORE" "and the catalog is exactly as it was"

# --- Rows that cannot be placed are reported and left alone.
row backup-pgtest1-outside 0 incremental Y "/etc/passwd" 1 completed '2025-10-08 20:00:00' '2025-10-08 20:05:00'
row backup-pgtest1-stillrunning 1 incremental NULL "$LEG/disk1/r.qcow2" 0 running '2025-10-08 21:00:00' NULL
sql_write "INSERT INTO backup_jobs (id, vm_name, repository_id, disk_id, change_id, repository_path,
  bytes_transferred, status, created_at, completed_at) VALUES ('backup-other-1', 'other', 'nowhere',
  0, 'Z', 'a.qcow2', 1, 'completed', '2025-10-08 10:00:00', '2025-10-08 10:01:00')"
BEFORE=$(legacy_state)

# --- Dry run: the plan, nothing written.
"$STRATA" migrate-legacy "${DB_ARGS[@]}" --dry-run > "$T/dry" 2> "$T/err"
is "$?" 0 "--dry-run exits 0"
note "$(cat "$T/dry")"
like "$(cat "$T/dry")" "contexts created: 1" "it plans one context"
like "$(cat "$T/dry")" "dry run: nothing was written" "and says it wrote nothing"
is "$(legacy_state)" "$BEFORE" "nothing changed"

# --- The migration.
migrate "migrate-legacy exits 0"
like "$OUT" $'\ncontexts created: 1\n' "evidence: 1 context created"
like "$OUT" $'\njobs linked: 27\n' "evidence: 27 jobs linked"
like "$OUT" $'\ndisks migrated: 21\n' "evidence: 21 disks migrated"
like "$OUT" $'\nrows not placed: 3\n' "evidence: 3 rows not placed"
like "$OUT" "backup-pgtest1-outside: repository_path /etc/passwd is outside the repository's root" \
     "the path outside the repository, with its reason"
like "$OUT" "backup-pgtest1-stillrunning: still running" "the running row, with its reason"
like "$OUT" "backup-other-1: repository \"nowhere\" is not in backup_repositories" \
     "the row of an unknown repository, with its reason"
like "$OUT" "pgtest1 disk 2: 7 rows, chain of 6 \(1 full, 5 incremental\), 1 failed" \
     "evidence: disk 2's chain skips its failed row"

CTX=$(sql "SELECT context_id FROM vm_backup_contexts WHERE vm_name = 'pgtest1'")
like "$CTX" '^ctx-backup-pgtest1-' "one context for (pgtest1, default): $CTX"
is "$(sql "SELECT count(*) FROM vm_backup_contexts")|$(sql "SELECT count(*) FROM backup_jobs WHERE vm_backup_context_id = '$CTX'")|$(sql "SELECT count(*) FROM backup_disks WHERE vm_backup_context_id = '$CTX'")" \
   "1|27|21" "catalog: 1 context, 27 jobs and 21 disk rows linked to it"
is "$(sql "SELECT count(*) FROM legacy_backup_jobs")" 30 "the legacy rows are kept in legacy_backup_jobs"
is "$(sql "SELECT total_backups_run, successful_backups, failed_backups, last_backup_id FROM vm_backup_contexts")" \
   "27|26|1|${LASTJOB[2]}" "the context's counts, and its last backup is the last completed disk's job"
is "$(sql "SELECT disk_change_id, qcow2_path, bytes_transferred, status FROM backup_disks WHERE backup_job_id = 'backup-pgtest1-disk1-run3'")" \
   "52 3c ec 11/31|$LEG/disk1/backup-pgtest1-disk1-run3.qcow2|3001|completed" \
   "a per-disk row keeps its change id, its path (made relative), bytes and status"
is "$(sql "SELECT status, qcow2_path IS NULL, backup_type FROM backup_disks WHERE backup_job_id = 'backup-pgtest1-disk2-run5'")" \
   "failed|1|incremental" "the failed row is a failed disk without a file"
is "$(sql "SELECT p.backup_job_id FROM backup_disks d JOIN backup_disks p ON p.id = d.parent_disk_id WHERE d.backup_job_id = 'backup-pgtest1-disk2-run6'")" \
   backup-pgtest1-disk2-run4 "disk 2 of run 6 is chained to run 4's, past the failed run 5"
is "$(sql "SELECT count(*) FROM backup_disks WHERE backup_type = 'full' AND status = 'completed'")|$(sql "SELECT count(*) FROM backup_disks d JOIN backup_disks p ON p.id = d.parent_disk_id WHERE d.status = 'completed' AND p.disk_index = d.disk_index AND p.id < d.id AND p.status = 'completed'")" \
   "3|17" "one full per disk; every other completed row is chained to an earlier row of its disk"
is "$(sql "SELECT backup_type FROM backup_jobs WHERE id IN ('backup-pgtest1-run1', 'backup-pgtest1-run2') ORDER BY id" | sql_join ' ')" \
   "full incremental" "the parent rows' types"
is "$(sql "SELECT created_at, completed_at FROM backup_jobs WHERE id = 'backup-pgtest1-disk0-run1'")" \
   "2025-10-08T10:00:00.000Z|2025-10-08T10:10:00.000Z" "timestamps in the catalog's format"

# --- A second run changes nothing.
AFTER=$(catalog_counts; sql "SELECT * FROM backup_disks ORDER BY id"; sql "SELECT * FROM backup_jobs ORDER BY id")
"$STRATA" migrate-legacy "${DB_ARGS[@]}" > "$T/out2" 2> "$T/err"
is "$?" 0 "a second run exits 0"
like "$(cat "$T/out2")" "nothing to do: already migrated" "and says there is nothing to do"
like "$(cat "$T/out2")" $'contexts created: 0\n' "it created no context"
is "$(catalog_counts; sql "SELECT * FROM backup_disks ORDER BY id"; sql "SELECT * FROM backup_jobs ORDER BY id")" \
   "$AFTER" "the catalog is unchanged"

# --- The hub on the migrated catalog.
_hub_db_args=("${DB_ARGS[@]}")
start_hub
grep -q "deleted .* file" "$HUB_LOG" && fail "the hub deleted files at start-up" "$(grep deleted "$HUB_LOG")"
grep -q "missing at start-up" "$HUB_LOG" && fail "the hub found files missing" "$(grep missing "$HUB_LOG")"
for d in 0 1 2; do
  api GET "/api/v1/backups/changeid?vm_name=pgtest1&disk_id=$d"
  is "$API_STATUS|$(jqb .change_id)|$(jqb .backup_id)" "200|${LASTCID[$d]}|${LASTJOB[$d]}" \
     "changeid of disk $d: the last completed legacy change id"
done
api GET "/api/v1/backups?vm_name=pgtest1&limit=100"
is "$(jqb .total)" 27 "GET /backups lists the 27 jobs"

put_vm pgtest1 $MIB8 $MIB8 $MIB8
start_backup pgtest1 incremental
INC=$BID
is "$(jqb '[.disks[] | .backup_type + " " + .parent_backup_id + " " + .previous_change_id] | join(",")')" \
   "incremental ${LASTJOB[0]} ${LASTCID[0]},incremental ${LASTJOB[1]} ${LASTCID[1]},incremental ${LASTJOB[2]} ${LASTCID[2]}" \
   "the incremental builds on the migrated chain of every disk"
write_ok "${NBD_URI[1]}" 0xee $((9 * 65536)) 64k
for d in 0 1 2; do complete_disk "$INC" $d "NEW-$d" 65536; done
ok "disk 1 reads through the whole chain: runs 1-7, then the new write" \
   qio -r -f qcow2 -c "read -P 17 65536 64k" -c "read -P 49 $((3 * 65536)) 64k" \
   -c "read -P 113 $((7 * 65536)) 64k" -c "read -P 0xee $((9 * 65536)) 64k" "${QCOW2[1]}"
ok "disk 2 reads run 4's data (run 5 failed) and run 6's" \
   qio -r -f qcow2 -c "read -P 66 $((4 * 65536)) 64k" -c "read -P 0 $((5 * 65536)) 64k" \
   -c "read -P 98 $((6 * 65536)) 64k" "${QCOW2[2]}"
api GET "/api/v1/backups/changeid?vm_name=pgtest1&disk_id=2"
is "$(jqb .change_id)" NEW-2 "changeid moves on to the new backup"

# --- Deleting the context cascades.
api DELETE "/api/v1/contexts/$CTX"
is "$API_STATUS" 200 "DELETE the migrated context"
is "$(sql "SELECT count(*) FROM vm_backup_contexts")|$(sql "SELECT count(*) FROM backup_jobs")|$(sql "SELECT count(*) FROM backup_disks")" \
   "0|0|0" "its 28 jobs and 24 disk rows went with it"

# =========================================================================
# The legacy system's own shape: backup_repositories without a path column
# (repository_type local/nfs/cifs, config JSON, enabled, is_immutable,
# min_retention_days, sizes, timestamps), multi-disk parent rows with the
# placeholder repository_path /multi-disk-parent, and pending jobs.  A
# catalog of its own: a new SQLite file, or a new MariaDB database (the
# first one is dropped here; the EXIT trap drops this one).
stop_hub
DATA=$T/data2
mkdir -p "$DATA"
if [ "$TEST_DB" = mariadb ]; then
  $STRATA_TEST_MARIADB_ROOT -e "DROP DATABASE $CATALOG_DB"
  CATALOG_DB=strata_t_$$_${RANDOM}_shape
  $STRATA_TEST_MARIADB_ROOT -e "CREATE DATABASE $CATALOG_DB" || bail_out "cannot create $CATALOG_DB"
  CATALOG_URL="mariadb://$STRATA_TEST_MARIADB_USER@localhost/$CATALOG_DB?socket=$STRATA_TEST_MARIADB_SOCKET"
  DB_ARGS=(--db "$CATALOG_URL" --db-password-file "$STRATA_TEST_MARIADB_PWFILE")
  # As the old system's ORM made them (config as LONGTEXT, flags as TINYINT).
  sql_write "
    CREATE TABLE backup_repositories (id VARCHAR(64) PRIMARY KEY, name VARCHAR(255) NOT NULL UNIQUE,
      repository_type ENUM('local', 'nfs', 'cifs') NOT NULL, enabled TINYINT(1) DEFAULT 1,
      config LONGTEXT, is_immutable TINYINT(1) DEFAULT 0, immutable_config LONGTEXT,
      min_retention_days INT DEFAULT 0, total_size_bytes BIGINT DEFAULT 0,
      available_size_bytes BIGINT DEFAULT 0, used_size_bytes BIGINT DEFAULT 0,
      last_check_at DATETIME NULL, created_at DATETIME, updated_at DATETIME) ENGINE = InnoDB;
    CREATE TABLE backup_jobs (id VARCHAR(191) PRIMARY KEY, vm_name VARCHAR(255) NOT NULL,
      repository_id VARCHAR(64), backup_type ENUM('full', 'incremental'), status VARCHAR(32),
      repository_path VARCHAR(1024), disk_id INT, change_id VARCHAR(255),
      bytes_transferred BIGINT DEFAULT 0, total_bytes BIGINT DEFAULT 0, error_message TEXT,
      created_at DATETIME, started_at DATETIME NULL, completed_at DATETIME NULL) ENGINE = InnoDB;
    CREATE TABLE vm_disks (id INT PRIMARY KEY, vm_context_id VARCHAR(64)) ENGINE = InnoDB;
    INSERT INTO vm_disks VALUES (1, 'ctx-replication-pgtest2');"
else
  CATALOG=$DATA/legacy-shape.db
  DB_ARGS=(--db "sqlite://$CATALOG")
  sqlite3 "$CATALOG" "
    CREATE TABLE backup_repositories (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
      repository_type TEXT NOT NULL, enabled INTEGER DEFAULT 1, config TEXT,
      is_immutable INTEGER DEFAULT 0, immutable_config TEXT, min_retention_days INTEGER DEFAULT 0,
      total_size_bytes INTEGER DEFAULT 0, available_size_bytes INTEGER DEFAULT 0,
      used_size_bytes INTEGER DEFAULT 0, last_check_at TEXT, created_at TEXT, updated_at TEXT);
    CREATE TABLE backup_jobs (id TEXT PRIMARY KEY, vm_name TEXT NOT NULL, repository_id TEXT,
      backup_type TEXT, status TEXT, repository_path TEXT, disk_id INTEGER, change_id TEXT,
      bytes_transferred INTEGER DEFAULT 0, total_bytes INTEGER DEFAULT 0, error_message TEXT,
      created_at TEXT, started_at TEXT, completed_at TEXT);
    CREATE TABLE vm_disks (id INTEGER PRIMARY KEY, vm_context_id TEXT);
    INSERT INTO vm_disks VALUES (1, 'ctx-replication-pgtest2');"
fi
_hub_db_args=("${DB_ARGS[@]}")

# Three repositories: a local folder, an NFS share mounted at a folder
# (here a plain folder: to the hub a mounted share is one), disabled, and a
# CIFS share, immutable, whose mount point is missing (not mounted).
LOCAL=$T/srv/local-primary NFS=$T/mnt/nfs-archive CIFS=$T/mnt/cifs-offsite
mkdir -p "$LOCAL" "$NFS"
repo_row ()     # ID NAME TYPE ENABLED CONFIG IMMUTABLE RETENTION
{
  local cfg=NULL
  [ "$5" != NULL ] && cfg="'$5'"
  sql_write "INSERT INTO backup_repositories (id, name, repository_type, enabled, config,
    is_immutable, immutable_config, min_retention_days, total_size_bytes, created_at, updated_at)
    VALUES ('$1', '$2', '$3', $4, $cfg, $6, NULL, $7, 1099511627776,
            '2025-10-06 19:48:01', '2025-10-08 09:00:00')" || echo "repository $1 failed" >&2
}
repo_row repo-local-1759780081 local-primary local 1 "{\"path\": \"$LOCAL/\"}" 0 0
repo_row repo-nfs-1759780200 nfs-archive nfs 0 \
  "{\"server\": \"10.0.100.5\", \"export_path\": \"/exports/backups\", \"mount_point\": \"$NFS\", \"mount_options\": \"vers=4.1\"}" 0 0
repo_row repo-cifs-1759780300 cifs-offsite cifs 1 \
  "{\"server\": \"fs01.example\", \"share\": \"backups\", \"mount_point\": \"$CIFS\", \"username\": \"svc-backup\"}" 1 30

# job ID VM REPO DISK TYPE STATUS PATH CHANGE CREATED COMPLETED
job ()
{
  local q
  q () { [ "$1" = NULL ] && echo NULL || echo "'$1'"; }
  sql_write "INSERT INTO backup_jobs (id, vm_name, repository_id, disk_id, backup_type, status,
    repository_path, change_id, bytes_transferred, created_at, completed_at)
    VALUES ('$1', '$2', '$3', $4, '$5', '$6', $(q "$7"), $(q "$8"), 4096, '${9}', $(q "${10}"))" ||
    echo "job $1 failed" >&2
}
# image REPO_FOLDER REL [BACKING]: a small QCOW2 as the old system left it.
image ()
{
  mkdir -p "$(dirname "$1/$2")"
  if [ -n "${3:-}" ]; then
    qemu-img create -q -f qcow2 -F qcow2 -b "$3" "$1/$2" > /dev/null
  else
    qemu-img create -q -f qcow2 "$1/$2" $MIB8 > /dev/null
  fi
}
# pgtest2 (2 disks) on the local repository: a completed run whose parent
# row carries /multi-disk-parent, then a run still pending (never started).
job backup-pgtest2-1759940386 pgtest2 repo-local-1759780081 NULL full completed /multi-disk-parent NULL \
    '2025-10-08 16:19:46' '2025-10-08 16:40:00'
for d in 0 1; do
  image "$LOCAL" "pgtest2/disk$d/backup-pgtest2-disk$d-1759940386.qcow2"
  job backup-pgtest2-disk$d-1759940386 pgtest2 repo-local-1759780081 $d full completed \
      "$LOCAL/pgtest2/disk$d/backup-pgtest2-disk$d-1759940386.qcow2" "cid-pgtest2-$d" \
      '2025-10-08 16:19:47' "2025-10-08 16:3$d:00"
done
job backup-pgtest2-1759990000 pgtest2 repo-local-1759780081 NULL incremental pending /multi-disk-parent NULL \
    '2025-10-09 06:06:40' NULL
job backup-pgtest2-disk0-1759990000 pgtest2 repo-local-1759780081 0 incremental pending NULL NULL \
    '2025-10-09 06:06:40' NULL
# pgtest3 (1 disk) on the NFS share: a full and an incremental on it.
image "$NFS" pgtest3/disk0/full.qcow2
image "$NFS" pgtest3/disk0/inc.qcow2 full.qcow2
job backup-pgtest3-disk0-1 pgtest3 repo-nfs-1759780200 0 full completed pgtest3/disk0/full.qcow2 cid-pgtest3-a \
    '2025-10-07 01:00:00' '2025-10-07 01:10:00'
job backup-pgtest3-disk0-2 pgtest3 repo-nfs-1759780200 0 incremental completed "$NFS/pgtest3/disk0/inc.qcow2" cid-pgtest3-b \
    '2025-10-08 01:00:00' '2025-10-08 01:10:00'
# pgtest4 (1 disk) on the CIFS share, which is not mounted now.
job backup-pgtest4-disk0-1 pgtest4 repo-cifs-1759780300 0 full completed "$CIFS/pgtest4/disk0/full.qcow2" cid-pgtest4 \
    '2025-10-07 02:00:00' '2025-10-07 02:10:00'
is "$(sql "SELECT count(*) FROM backup_repositories")|$(sql "SELECT count(*) FROM backup_jobs")" "3|8" \
   "the legacy-shape fixture: 3 repositories (local, nfs, cifs), 8 jobs"
BEFORE=$(legacy_state; sql "SELECT * FROM backup_repositories ORDER BY id")

# --- A repository whose config is not JSON, or is missing, or lacks its
# folder: exit 1 naming the repository, nothing migrated.
bad_repo ()     # DESC TYPE CONFIG WANT
{
  repo_row repo-broken-1 broken "$2" 1 "$3" 0 0
  "$STRATA" migrate-legacy "${DB_ARGS[@]}" > "$T/out" 2> "$T/err"
  is "$?" 1 "$1: migrate-legacy exits 1"
  like "$(cat "$T/err")" "legacy repository repo-broken-1: $4" "$1: the error names the row and says why: $(head -c 200 "$T/err")"
  sql_write "DELETE FROM backup_repositories WHERE id = 'repo-broken-1'"
  is "$(legacy_state; sql "SELECT * FROM backup_repositories ORDER BY id")" "$BEFORE" \
     "$1: the catalog is exactly as it was (tables, rows)"
}
bad_repo "config that is not JSON" local '{"path": "/srv/x"' "config is not JSON"
bad_repo "no config at all" nfs NULL "no config JSON"
bad_repo "nfs config without mount_point" nfs '{"server": "x", "export_path": "/e"}' \
  'config has no "mount_point" string'
bad_repo "a relative local path" local '{"path": "srv/x"}' 'config path "srv/x" is not an absolute folder'

# --- Dry run, then the migration.
"$STRATA" migrate-legacy "${DB_ARGS[@]}" --dry-run > "$T/dry" 2> "$T/err"
is "$?" 0 "legacy shape: --dry-run exits 0"
is "$(legacy_state; sql "SELECT * FROM backup_repositories ORDER BY id")" "$BEFORE" "and writes nothing"
migrate "legacy shape: migrate-legacy exits 0"
like "$OUT" $'\nrepositories: 3\n' "evidence: 3 repositories"
like "$OUT" "repo-nfs-1759780200 \"nfs-archive\" nfs: $NFS \(config mount_point, where nfs 10.0.100.5:/exports/backups is mounted\)" \
     "evidence: the NFS repository's folder is its mount point"
like "$OUT" "repo-cifs-1759780300 \"cifs-offsite\" cifs: $CIFS \(config mount_point, where cifs //fs01.example/backups is mounted\)" \
     "evidence: the CIFS repository's folder is its mount point"
like "$OUT" "disabled in the legacy catalog \(enabled = 0\): strata has no disabled repository" \
     "evidence: the disabled repository, migrated, and what that means"
like "$OUT" "immutable in the legacy catalog \(is_immutable = 1, min_retention_days 30\): strata enforces neither" \
     "evidence: the immutable repository, migrated, and what that means"
like "$OUT" $'\ncontexts created: 3\n' "evidence: 3 contexts (pgtest2, pgtest3, pgtest4)"
like "$OUT" $'\njobs linked: 8\n' "evidence: 8 jobs linked"
like "$OUT" $'\ndisks migrated: 6\n' "evidence: 6 disks migrated"
like "$OUT" $'\npending jobs cancelled: 2\n  backup-pgtest2-1759990000: never ran' \
     "evidence: the 2 pending rows, cancelled, with the reason"
like "$OUT" "parent rows with a placeholder repository_path: 2 \(e.g. /multi-disk-parent\), not files" \
     "evidence: the /multi-disk-parent placeholders, not read as files"
like "$OUT" $'\nrows not placed: 0\n' "evidence: every row placed"
like "$OUT" "committed; the legacy rows stay in legacy_backup_jobs, legacy_vm_disks, legacy_backup_repositories" \
     "evidence: the other system's vm_disks kept aside with the legacy tables"

is "$(sql "SELECT id, name, type, path FROM backup_repositories ORDER BY id" | sql_join ' ')" \
   "repo-cifs-1759780300|cifs-offsite|cifs|$CIFS repo-local-1759780081|local-primary|local|$LOCAL repo-nfs-1759780200|nfs-archive|nfs|$NFS" \
   "catalog: the repositories keep id, name and type; the folder is the path or mount point"
is "$(sql "SELECT count(*) FROM vm_backup_contexts")|$(sql "SELECT count(*) FROM backup_jobs")|$(sql "SELECT count(*) FROM backup_disks")" \
   "3|8|6" "catalog: 3 contexts, 8 jobs, 6 disk rows"
is "$(sql "SELECT status, error, completed_at IS NOT NULL FROM backup_jobs WHERE id = 'backup-pgtest2-1759990000'")" \
   "cancelled|never ran: pending in the legacy catalog when it was migrated|1" \
   "the pending parent row is a cancelled job with its reason"
is "$(sql "SELECT status, qcow2_path IS NULL, parent_disk_id IS NULL FROM backup_disks WHERE backup_job_id = 'backup-pgtest2-disk0-1759990000'")" \
   "failed|1|0" "the pending per-disk row is a failed disk without a file"
is "$(sql "SELECT total_backups_run, successful_backups, failed_backups, last_backup_id FROM vm_backup_contexts WHERE vm_name = 'pgtest2'")" \
   "5|3|2|backup-pgtest2-disk1-1759940386" "pgtest2's context counts the cancelled jobs as failed ones; its last backup is untouched"
is "$(sql "SELECT count(*) FROM backup_disks d JOIN backup_jobs j ON j.id = d.backup_job_id WHERE j.id = 'backup-pgtest2-1759940386'")" \
   0 "the parent row holds no disk: /multi-disk-parent is never a file"
is "$(sql "SELECT qcow2_path FROM backup_disks WHERE backup_job_id LIKE 'backup-pgtest3-%' ORDER BY id" | sql_join ' ')" \
   "pgtest3/disk0/full.qcow2 pgtest3/disk0/inc.qcow2" "the NFS rows' paths, relative to the mount point"
is "$(sql "SELECT count(*) FROM legacy_vm_disks")" 1 "the other system's vm_disks row is kept"

# --- The hub on it: the shares are folders; the unmounted one is left alone.
start_hub
api GET /api/v1/repositories
is "$(jqb '[.repositories[] | .id + " " + .type + " " + .path] | sort | join(",")')" \
   "repo-cifs-1759780300 cifs $CIFS,repo-local-1759780081 local $LOCAL,repo-nfs-1759780200 nfs $NFS" \
   "GET /repositories: local, nfs and cifs, each at its folder"
like "$(cat "$HUB_LOG")" "$CIFS" "the hub logs the unmounted CIFS folder at start-up"
is "$(sql "SELECT status, qcow2_path FROM backup_disks WHERE backup_job_id = 'backup-pgtest4-disk0-1'")" \
   "completed|pgtest4/disk0/full.qcow2" "and leaves its rows alone until it is mounted"
api GET "/api/v1/backups/changeid?vm_name=pgtest3&disk_id=0"
is "$API_STATUS|$(jqb .change_id)" "200|cid-pgtest3-b" "changeid on the NFS share: the last legacy change id"
api GET /api/v1/backups/backup-pgtest2-1759990000
is "$API_STATUS|$(jqb .status)" "200|cancelled" "the pending job reads as cancelled"
put_vm pgtest3 $MIB8
start_backup pgtest3 incremental '"repository_id":"repo-nfs-1759780200"'
is "$(jqb '.disks[0].parent_backup_id')" backup-pgtest3-disk0-2 "an incremental on the NFS share builds on the migrated chain"
like "${QCOW2[0]}" "^$NFS/ctx-" "its file is in the NFS folder"
complete_disk "$BID" 0 cid-pgtest3-c 65536
is "$(qemu-img info --backing-chain "${QCOW2[0]}" | grep -c '^image:')" 3 \
   "and is backed by the two legacy files on the share"

done_testing
