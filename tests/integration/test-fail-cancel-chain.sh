#!/usr/bin/env bash
# test-fail-cancel-chain.sh - a failed or cancelled incremental leaves nothing
# behind (no overlay, no export) and is counted, and the chain before it is
# untouched: the next incremental builds on the last completed backup and reads
# back the full's data, not the failed job's writes.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo jq curl sqlite3

SIZE=$((64 * MiB))
start_hub
REPO=$DATA/repository

put_vm fc1 $SIZE $SIZE

# The full: 0x11 on disk 0, 0x33 on disk 1.
start_backup fc1 full
F=$BID; F_FILES=("${QCOW2[@]}")
write_ok "${NBD_URI[0]}" 0x11 0 1M
write_ok "${NBD_URI[1]}" 0x33 0 1M
complete_disk "$F" 0 F0 1
complete_disk "$F" 1 F1 1
is "$(jqb .job_status)" completed "the full is completed"

# --- An incremental that fails.
start_backup fc1 incremental
I1=$BID; I1_FILES=("${QCOW2[@]}"); I1_URIS=("${NBD_URI[@]}")
write_ok "${I1_URIS[0]}" 0x22 1M 1M
write_ok "${I1_URIS[1]}" 0x44 1M 1M
ok "the incremental's overlays exist" eval "[ -f '${I1_FILES[0]}' ] && [ -f '${I1_FILES[1]}' ]"
api POST "/api/v1/backups/$I1/fail" '{"disk_id":1,"error":"agent lost the source disk"}'
is "$API_STATUS" 200 "fail the incremental: 200"
is "$(jqb '[.backup_id, .status] | join(" ")')" "$I1 failed" "the answer is the backup, status failed"
is "$(jqb '[.disks[] | .status + "/" + (.qcow2_path|tostring) + "/" + (.nbd_uri|tostring)] | join(" ")')" \
   "failed/null/null failed/null/null" "every disk failed, without file or export"
like "$(jqb '.disks[1].error')" 'agent lost the source disk' "disk 1 carries the agent's error"
isnt "$(jqb '.disks[0].error // ""')" "" "disk 0 carries an error too"
ok "the overlay files are gone" eval "[ ! -e '${I1_FILES[0]}' ] && [ ! -e '${I1_FILES[1]}' ]"
ok "the export of disk 0 is gone" export_gone "${I1_URIS[0]}"
ok "the export of disk 1 is gone" export_gone "${I1_URIS[1]}"
is "$(sql "SELECT status FROM backup_jobs WHERE id='$I1'")" failed "catalog: job failed"
is "$(sql "SELECT status, qcow2_path IS NULL FROM backup_disks WHERE backup_job_id='$I1' ORDER BY disk_index" | tr '|' ':' | sql_join ' ')" \
   "failed:1 failed:1" "catalog: disks failed, qcow2_path NULL"
api GET "/api/v1/contexts/$CTX"
is "$(jqb '[.total_backups_run, .successful_backups, .failed_backups, .last_backup_id] | map(tostring) | join(" ")')" \
   "2 1 1 $F" "context: 2 run, 1 successful, 1 failed, last backup still the full"
ok "the full is untouched" qio -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0 1M 1M' "${F_FILES[0]}"

# A failed job takes no more calls.
api POST "/api/v1/backups/$I1/complete" '{"disk_id":0,"change_id":"X"}'
is_error 409 conflict "completing a disk of the failed job: 409"
api POST "/api/v1/backups/$I1/fail" '{"error":"again"}'
is_error 409 conflict "failing it again: 409"
api POST "/api/v1/backups/$I1/cancel" '{}'
is_error 409 conflict "cancelling it: 409"
is "$(sql "SELECT status FROM backup_jobs WHERE id='$I1'")" failed "it stays failed"
api GET "/api/v1/backups/changeid?vm_name=fc1&disk_id=0"
is "$(jqb '[.change_id, .backup_id] | join(" ")')" "F0 $F" "changeid still answers the full's"

# --- An incremental that is cancelled (empty body).
start_backup fc1 incremental
I2=$BID; I2_FILES=("${QCOW2[@]}"); I2_URIS=("${NBD_URI[@]}")
is "$(jqb '[.disks[] | .parent_backup_id + "/" + .previous_change_id] | join(" ")')" "$F/F0 $F/F1" "after the failure, the next incremental builds on the full"
write_ok "${I2_URIS[0]}" 0x66 1M 1M
api POST "/api/v1/backups/$I2/cancel"
is "$API_STATUS" 200 "cancel with an empty body: 200"
is "$(jqb '.status')" cancelled "status cancelled"
is "$(jqb '[.disks[] | .status + "/" + (.qcow2_path|tostring)] | join(" ")')" "failed/null failed/null" "its disks failed, without files"
ok "the cancelled overlays are gone" eval "[ ! -e '${I2_FILES[0]}' ] && [ ! -e '${I2_FILES[1]}' ]"
ok "the cancelled export is gone" export_gone "${I2_URIS[0]}"
is "$(sql "SELECT status FROM backup_jobs WHERE id='$I2'")" cancelled "catalog: job cancelled"
api GET "/api/v1/contexts/$CTX"
is "$(jqb '[.total_backups_run, .successful_backups, .failed_backups] | map(tostring) | join(" ")')" "3 1 2" "context: failed_backups counts the cancelled job"

# --- Cancel with {} after one disk completed: the completed disk is not failed.
start_backup fc1 incremental
I3=$BID; I3_FILES=("${QCOW2[@]}")
complete_disk "$I3" 0 I3_0 1
api POST "/api/v1/backups/$I3/cancel" '{}'
is "$API_STATUS/$(jqb .status)" "200/cancelled" "cancel with {}: 200 cancelled"
is "$(jqb '.disks[1].status + "/" + (.disks[1].qcow2_path|tostring)')" "failed/null" "the running disk failed, its file dropped"
is "$(jqb '.disks[0].status')" completed "the completed disk stays completed"
ok "the running disk's overlay is gone" test ! -e "${I3_FILES[1]}"
api GET "/api/v1/contexts/$CTX"
is "$(jqb '[.total_backups_run, .successful_backups, .failed_backups, .last_backup_id] | map(tostring) | join(" ")')" "4 1 3 $F" "context: 4 run, 1 successful, 3 failed"

# --- The next incremental completes on top of the full (disk 1 at least:
# disk 0's latest completed backup may be the cancelled job's completed disk).
start_backup fc1 incremental
I4=$BID; I4_FILES=("${QCOW2[@]}"); I4_URIS=("${NBD_URI[@]}")
is "$(jqb '.disks[1].parent_backup_id + "/" + .disks[1].previous_change_id')" "$F/F1" "disk 1's parent is the full"
is "$(backing_of "${I4_FILES[1]}")" "$F.qcow2" "disk 1's overlay is backed by the full's file"
ok "disk 1 export shows the full's data, none of the failed writes" \
   qio -r -f raw -c 'read -P 0x33 0 1M' -c 'read -P 0 1M 1M' "${I4_URIS[1]}"
ok "disk 0 export shows the full's data, none of the failed writes" \
   qio -r -f raw -c 'read -P 0x11 0 1M' -c 'read -P 0 1M 1M' "${I4_URIS[0]}"
write_ok "${I4_URIS[0]}" 0x55 2M 1M
write_ok "${I4_URIS[1]}" 0x77 2M 1M
complete_disk "$I4" 0 I4_0 1
complete_disk "$I4" 1 I4_1 1
is "$(jqb .job_status)" completed "the incremental after the failures completes"
ok "restore read of disk 0: the full's data and the new data, nothing of the failed jobs" \
   qio -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0 1M 1M' -c 'read -P 0x55 2M 1M' "${I4_FILES[0]}"
ref_image "$T/ref1.raw" $SIZE
ref_write "$T/ref1.raw" 0x33 0 1M
ref_write "$T/ref1.raw" 0x77 2M 1M
ok "qemu-img compare: disk 1's chain equals full + new data" qemu-img compare -q -f raw -F qcow2 "$T/ref1.raw" "${I4_FILES[1]}"
api GET "/api/v1/contexts/$CTX"
is "$(jqb '[.total_backups_run, .successful_backups, .failed_backups, .last_backup_id, .last_backup_type] | map(tostring) | join(" ")')" \
   "5 2 3 $I4 incremental" "context statistics at the end"

api GET "/api/v1/backups?vm_name=fc1&status=failed"
is "$API_STATUS/$(jqb .total)/$(jqb '.backups[0].backup_id')" "200/1/$I1" "listing: one failed job"
api GET "/api/v1/backups?vm_name=fc1&status=cancelled"
is "$(jqb .total)" 2 "listing: two cancelled jobs"
is "$(cd "$REPO" && find . -name '*.qcow2' | wc -l)" 5 "the repository holds only the full's, I3's completed disk's and I4's files"

# --- Deleting the full: the failed and cancelled attempts whose overlays are
# gone do not hold it; a job with a file built on it does.
api DELETE "/api/v1/backups/$F"
is_error 409 conflict "the full cannot go while I3 and I4 have files backed by it"
api DELETE "/api/v1/backups/$I4"
is "$API_STATUS/$(jqb '.deleted_backups | join(" ")')" "200/$I4" "delete I4"
api DELETE "/api/v1/backups/$F"
is_error 409 conflict "I3's completed disk still holds the full"
api DELETE "/api/v1/backups/$I3"
is "$API_STATUS/$(jqb '.deleted_backups | join(" ")')" "200/$I3" "delete I3"
api DELETE "/api/v1/backups/$F"
is "$API_STATUS/$(jqb '.deleted_backups | sort | join(" ")')" \
   "200/$(printf '%s\n' "$F" "$I1" "$I2" | sort | tr '\n' ' ' | sed 's/ $//')" \
   "the full goes, and the file-less failed and cancelled attempts on it with it"
is "$(sql "SELECT count(*) FROM backup_jobs")|$(sql "SELECT count(*) FROM backup_disks")" "0|0" "no job or disk row is left"
is "$(cd "$REPO" && find . -name '*.qcow2' | wc -l)" 0 "no image is left"

done_testing
