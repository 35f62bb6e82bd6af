#!/usr/bin/env bash
# test-complete-late.sh - the seed's test 3.4: a backup that started hours ago
# (created_at moved back in the catalog while the hub runs) still completes:
# there is no time window between a job and its disks.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl sqlite3

SIZE=$((64 * MiB))
start_hub

put_vm pgtest1 $SIZE $SIZE
start_backup pgtest1 full '"repository_id":"default"'
FULL=$BID
FULL_FILE=("${QCOW2[@]}")
write_ok "${NBD_URI[0]}" 0x11 0 1M
write_ok "${NBD_URI[1]}" 0x33 0 1M

created=$(sql "SELECT created_at FROM backup_jobs WHERE id='$FULL'")
like "$created" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$' "created_at is stored as UTC YYYY-MM-DDTHH:MM:SS.mmmZ"

# "UPDATE backup_jobs SET created_at = DATE_SUB(NOW(), INTERVAL 2 HOUR)", while
# the hub runs (the time made here, in the catalog's own text format, so that
# the statement is the same for SQLite and MariaDB).  The disks' rows go back
# too: the agent started them then.
ago=$(ts_ago '2 hours')
ok "created_at moved 2 hours back under the running hub" sql_write "
  UPDATE backup_jobs SET created_at = '$ago' WHERE id='$FULL';
  UPDATE backup_disks SET created_at = '$ago' WHERE backup_job_id='$FULL';"
is "$(hours_between "$(sql "SELECT created_at FROM backup_jobs WHERE id='$FULL'")" "$(ts_ago '0 hours')")" 2 "the job now started 2 hours ago"
api GET "/api/v1/backups/$FULL"
is "$(jqb .created_at)" "$(sql "SELECT created_at FROM backup_jobs WHERE id='$FULL'")" "the API reports the catalog's created_at"

api POST "/api/v1/backups/$FULL/complete" '{"disk_id": 0, "change_id": "LATE_COMPLETION", "bytes_transferred": 1000}'
is "$API_STATUS" 200 "3.4: completing disk 0 two hours late answers 200"
is "$(jqb '[.status, .job_status, .change_id] | join(" ")')" "completed running LATE_COMPLETION" "disk 0 completed, job still running"
api POST "/api/v1/backups/$FULL/complete" '{"disk_id": 1, "change_id": "LATE_COMPLETION_1", "bytes_transferred": 2000}'
is "$API_STATUS" 200 "completing disk 1 two hours late answers 200"
is "$(jqb .job_status)" completed "and completes the job"
is "$(sql "SELECT status FROM backup_jobs WHERE id='$FULL'")" completed "catalog: the job is completed"
is "$(sql "SELECT disk_index, disk_change_id, status FROM backup_disks WHERE backup_job_id='$FULL' ORDER BY disk_index" | tr '\n' ' ')" \
   "0|LATE_COMPLETION|completed 1|LATE_COMPLETION_1|completed " "catalog: both disks completed with their change ids"
is "$(hours_between $(sql "SELECT created_at, completed_at FROM backup_jobs WHERE id='$FULL'" | tr '|' ' '))" 2 \
   "completed_at is now, two hours after created_at"
api GET "/api/v1/contexts/$CTX"
is "$(jqb '[.successful_backups, .last_backup_id] | map(tostring) | join(" ")')" "1 $FULL" "the context counts the late backup"
ok "the late full holds its data" qio -r -f qcow2 -c 'read -P 0x11 0 1M' "${FULL_FILE[0]}"

api GET "/api/v1/backups/changeid?vm_name=pgtest1&disk_id=0"
is "$(jqb .change_id)" LATE_COMPLETION "changeid returns the late completion's id"

# An incremental that runs for three days builds on the late full and completes too.
start_backup pgtest1 incremental
INC=$BID
is "$(jqb '[.disks[] | .parent_backup_id + "/" + .previous_change_id] | join(" ")')" \
   "$FULL/LATE_COMPLETION $FULL/LATE_COMPLETION_1" "the incremental builds on the late full"
write_ok "${NBD_URI[0]}" 0x22 1M 1M
ago=$(ts_ago '3 days')
ok "the incremental started 3 days ago" sql_write "
  UPDATE backup_jobs SET created_at = '$ago' WHERE id='$INC';
  UPDATE backup_disks SET created_at = '$ago' WHERE backup_job_id='$INC';"
complete_disk "$INC" 1 VERY_LATE_1 5
complete_disk "$INC" 0 VERY_LATE_0 5
is "$(jqb .job_status)" completed "completing in the other order three days late completes the job"
is "$(sql "SELECT status FROM backup_jobs WHERE id='$INC'")" completed "catalog: the incremental is completed"
ok "its chain reads both backups' data" qio -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' "${QCOW2[0]}"

done_testing
