#!/usr/bin/env bash
# test-seed-flow.sh - the seed job sheet's Phase 3 tests 3.1-3.3 against our API:
# a fresh full backup of a 2-disk VM creates one context, one job and two disk
# rows; completing disk 0 then disk 1 completes the job only after the second;
# an incremental reuses the context and chains each disk onto that disk's own
# previous backup and change id, with a relative backing file, and the data
# reads back through the chain.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo nbdcopy jq curl sqlite3

SIZE=$((64 * MiB))
start_hub
REPO=$DATA/repository

api GET /api/v1/repositories/default
is "$API_STATUS" 200 "repository default exists on first start"
is "$(jqb .path)" "$REPO" "default repository is DATA-DIR/repository"

# The inventory: pgtest1 with two disks.
api PUT /api/v1/vms/pgtest1 "$(vm_json $SIZE $SIZE)"
is "$API_STATUS" 201 "PUT /api/v1/vms/pgtest1 creates the VM"
is "$(jqb '.disks | length')" 2 "the VM has 2 disks"

api GET "/api/v1/backups/changeid?vm_name=pgtest1&disk_id=0"
is "$API_STATUS|$(jqb '[.vm_name, .disk_id, .change_id, (.backup_id|tostring), .message] | join("|")')" \
   "200|pgtest1|0||null|No previous backup found" "changeid before any backup: empty, no backup, 'No previous backup found'"

# --- Test 3.1: fresh full backup, the seed's body, no Content-Type at all.
API_CT=""
api POST /api/v1/backups '{"vm_name":"pgtest1","repository_id":"default","backup_type":"full"}'
API_CT=default
is "$API_STATUS" 201 "3.1: POST /api/v1/backups (seed body, no Content-Type) answers 201"
FULL=$(jqb .backup_id)
CTX=$(jqb .context_id)
like "$FULL" '^backup-pgtest1-[A-Za-z0-9._-]+$' "backup_id names the VM"
like "$CTX" '^ctx-backup-pgtest1-[A-Za-z0-9._-]+$' "context_id names the VM"
is "$(jqb .status)" running "the job runs"
is "$(jqb .backup_type)" full "the job is a full"
is "$(jqb .repository_id)" default "in repository default"
is "$(jqb .vm_name)" pgtest1 "of pgtest1"
is "$(jqb '.disks | length')" 2 "with 2 disks"
is "$(jqb '[.disks[].disk_index] | join(",")')" "0,1" "disk indexes 0 and 1"
declare -a FULL_URI FULL_FILE
for i in 0 1; do
  FULL_URI[$i]=$(nbd_keyed "$(jqb ".disks[$i].nbd_uri")")
  FULL_FILE[$i]=$(jqb ".disks[$i].qcow2_path")
  like "$(jqb ".disks[$i].nbd_uri")" "^nbds://job-$FULL@127\.0\.0\.1:$NBD_PORT/strata-[0-9a-f]{32}\$" "disk $i: nbd_uri on our NBD port with a 128-bit export name, for the job's key"
  is "${FULL_FILE[$i]}" "$REPO/$CTX/disk$i/$FULL.qcow2" "disk $i: file is <repo>/<context>/disk$i/<backup>.qcow2"
  is "$(jqb ".disks[$i] | [.status, .backup_type, .size_bytes, .parent_backup_id, .previous_change_id, .change_id] | map(tostring) | join(\" \")")" \
     "running full $SIZE null null null" "disk $i: running full of the disk's size, no parent"
  is "$(img_info "${FULL_FILE[$i]}" | jq -r '[.format, ."virtual-size", (."backing-filename" // "none")] | map(tostring) | join(" ")')" \
     "qcow2 $SIZE none" "disk $i: the file is a $SIZE-byte QCOW2 without backing file"
done
isnt "${FULL_URI[0]}" "${FULL_URI[1]}" "each disk has its own export"

# The seed's checks, on the catalog.
is "$(sql "SELECT count(*) FROM vm_backup_contexts WHERE vm_name='pgtest1'")" 1 "3.1: one context row for pgtest1"
is "$(sql "SELECT context_id, repository_id FROM vm_backup_contexts WHERE vm_name='pgtest1'")" "$CTX|default" "the context row is the one returned"
is "$(sql "SELECT count(*) FROM backup_jobs WHERE id='$FULL' AND vm_backup_context_id='$CTX' AND status='running'")" 1 "3.1: one running job row linked to the context"
is "$(sql "SELECT count(*) FROM backup_disks WHERE backup_job_id='$FULL'")" 2 "3.1: two backup_disks rows for the job"
is "$(sql "SELECT disk_index, status, vm_backup_context_id FROM backup_disks WHERE backup_job_id='$FULL' ORDER BY disk_index" | tr '|' ':' | sql_join ' ')" \
   "0:running:$CTX 1:running:$CTX" "both disk rows run, in the context"

# The agent writes both disks (different data, so a mix-up shows).
# Disk 0 with qemu-io; disk 1 with nbdcopy from a raw image, without --flush:
# completing must flush the image itself.
write_ok "${FULL_URI[0]}" 0x11 0 1M
ref_image "$T/src1.raw" $SIZE
ref_write "$T/src1.raw" 0x33 0 1M
ok "nbdcopy a 64 MiB image into disk 1 (no flush)" nbdcopy "$T/src1.raw" "${FULL_URI[1]}"
ok "disk 1 export reads back what was written" qio -r -f raw -c 'read -P 0x33 0 1M' -c 'read -P 0 1M 63M' "${FULL_URI[1]}"
is "$(nbd_exports)" "$(exports_of "${FULL_URI[@]}")" "the NBD server lists exactly the two running disks"

# --- Test 3.3: multi-disk completion with the seed's bodies (curl -d: the
# form content type curl sends by default).
api POST "/api/v1/backups/$FULL/complete" '{"disk_id": 0, "change_id": "TEST_DISK0", "bytes_transferred": 1000}'
is "$API_STATUS" 200 "3.3: complete disk 0 answers 200"
is "$(jqb '[.backup_id, (.disk_id|tostring), .status, .job_status, .change_id] | join(" ")')" \
   "$FULL 0 completed running TEST_DISK0" "disk 0 completed, the job still runs"
is "$(sql "SELECT status FROM backup_jobs WHERE id='$FULL'")" running "catalog: job still running after disk 0"
is "$(sql "SELECT disk_index, status, COALESCE(disk_change_id, '(null)'), bytes_transferred FROM backup_disks WHERE backup_job_id='$FULL' ORDER BY disk_index" | tr '|' ':' | sql_join ' ')" \
   "0:completed:TEST_DISK0:1000 1:running:(null):0" "catalog: disk 0 completed with its change id, disk 1 running"
ok "disk 0's export is gone once completed" export_gone "${FULL_URI[0]}"
ok "disk 0's file is read-only once completed" read_only "${FULL_FILE[0]}"
ok "disk 1's export still serves" export_up "${FULL_URI[1]}"
api GET "/api/v1/backups/$FULL"
is "$(jqb '[.status, .disks[0].status, .disks[0].change_id, (.disks[0].nbd_uri|tostring), .disks[1].status] | join(" ")')" \
   "running completed TEST_DISK0 null running" "GET shows the job running, disk 0 completed without export"

api POST "/api/v1/backups/$FULL/complete" '{"disk_id": 1, "change_id": "TEST_DISK1", "bytes_transferred": 2000}'
is "$API_STATUS" 200 "3.3: complete disk 1 answers 200"
is "$(jqb '[.backup_id, (.disk_id|tostring), .status, .job_status, .change_id] | join(" ")')" \
   "$FULL 1 completed completed TEST_DISK1" "disk 1 completed, and with it the job"
is "$(sql "SELECT status, completed_at IS NOT NULL FROM backup_jobs WHERE id='$FULL'")" "completed|1" "3.3: catalog: job completed, with completed_at"
is "$(sql "SELECT disk_index, disk_change_id FROM backup_disks WHERE backup_job_id='$FULL' ORDER BY disk_index" | tr '\n' ' ')" \
   "0|TEST_DISK0 1|TEST_DISK1 " "3.3: both disk records carry their own change id"
ok "disk 1's export is gone once completed" export_gone "${FULL_URI[1]}"
is "$(nbd_exports)" "" "the NBD server lists no export any more"
ok "disk 1's file is read-only once completed" read_only "${FULL_FILE[1]}"

# A repeat of the same completion is answered the same; a different change id is refused.
api POST "/api/v1/backups/$FULL/complete" '{"disk_id": 1, "change_id": "TEST_DISK1", "bytes_transferred": 2000}'
is "$API_STATUS/$(jqb .job_status)/$(jqb .change_id)" "200/completed/TEST_DISK1" "repeating the completion answers the same 200"
api POST "/api/v1/backups/$FULL/complete" '{"disk_id": 1, "change_id": "OTHER", "bytes_transferred": 2000}'
is_error 409 conflict "repeating it with another change id is a 409"
is "$(sql "SELECT disk_change_id FROM backup_disks WHERE backup_job_id='$FULL' AND disk_index=1")" TEST_DISK1 "and the change id stays"

ok "full disk 0 holds the agent's data" qio -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0 1M 63M' "${FULL_FILE[0]}"
ok "full disk 1 holds the agent's data" qio -r -f qcow2 -c 'read -P 0x33 0 1M' -c 'read -P 0 1M 63M' "${FULL_FILE[1]}"

# The changeid endpoint answers per disk.
api GET "/api/v1/backups/changeid?vm_name=pgtest1&disk_id=0"
is "$API_STATUS|$(jqb '[.vm_name, .disk_id, .change_id, .backup_id, .repository_id] | join("|")')" \
   "200|pgtest1|0|TEST_DISK0|$FULL|default" "changeid of disk 0 is TEST_DISK0"
api GET "/api/v1/backups/changeid?vm_name=pgtest1&disk_id=1"
is "$API_STATUS|$(jqb '[.disk_id, .change_id, .backup_id] | join("|")')" \
   "200|1|TEST_DISK1|$FULL" "changeid of disk 1 is TEST_DISK1"

api GET "/api/v1/contexts/$CTX"
is "$API_STATUS" 200 "GET the context"
is "$(jqb '[.total_backups_run, .successful_backups, .failed_backups, .last_backup_id, .last_backup_type] | map(tostring) | join(" ")')" \
   "1 1 0 $FULL full" "context statistics after the full"

# --- Test 3.2: incremental, as the seed sends it (with Content-Type: application/json).
API_CT=application/json
api POST /api/v1/backups '{"vm_name":"pgtest1","repository_id":"default","backup_type":"incremental"}'
API_CT=default
is "$API_STATUS" 201 "3.2: POST incremental answers 201"
INC=$(jqb .backup_id)
is "$(jqb .context_id)" "$CTX" "3.2: the incremental reuses the context"
is "$(jqb .backup_type)" incremental "the job is an incremental"
isnt "$INC" "$FULL" "with a new backup id"
declare -a INC_URI INC_FILE
for i in 0 1; do
  INC_URI[$i]=$(nbd_keyed "$(jqb ".disks[$i].nbd_uri")")
  INC_FILE[$i]=$(jqb ".disks[$i].qcow2_path")
  is "$(jqb ".disks[$i] | [.disk_index, .backup_type, (.full_reason|tostring), .parent_backup_id, .previous_change_id, .status] | map(tostring) | join(\" \")")" \
     "$i incremental null $FULL TEST_DISK$i running" "3.2: disk $i's parent is the full and its previous change id is its own (TEST_DISK$i)"
  is "${INC_FILE[$i]}" "$REPO/$CTX/disk$i/$INC.qcow2" "disk $i: overlay is <repo>/<context>/disk$i/<backup>.qcow2"
  info=$(img_info "${INC_FILE[$i]}")
  is "$(jq -r '."backing-filename" // "none"' <<< "$info")" "$FULL.qcow2" "disk $i: overlay's backing file is the relative name of the same disk's full"
  is "$(jq -r '."full-backing-filename" // "none"' <<< "$info")" "${FULL_FILE[$i]}" "disk $i: it resolves to disk $i's full (not the other disk's)"
  is "$(jq -r '."virtual-size"' <<< "$info")" "$SIZE" "disk $i: overlay has the disk's size"
done
is "$(sql "SELECT count(*) FROM vm_backup_contexts")" 1 "3.2: still exactly one context row"
is "$(sql "SELECT count(*) FROM backup_jobs WHERE vm_backup_context_id='$CTX'")" 2 "two jobs in the context"
is "$(sql "SELECT count(*) FROM backup_disks WHERE backup_job_id='$INC' AND vm_backup_context_id='$CTX' AND status='running'")" 2 "two running disk rows for the incremental"

# The export shows the chain: the full's data is there before the agent writes.
ok "incremental export of disk 0 shows the full's data" qio -r -f raw -c 'read -P 0x11 0 1M' "${INC_URI[0]}"
ok "incremental export of disk 1 shows the full's data" qio -r -f raw -c 'read -P 0x33 0 1M' "${INC_URI[1]}"
write_ok "${INC_URI[0]}" 0x22 1M 1M
write_ok "${INC_URI[1]}" 0x44 1M 1M

api POST "/api/v1/backups/$INC/complete" '{"disk_id": 0, "change_id": "INC_DISK0", "bytes_transferred": 3000}'
is "$API_STATUS/$(jqb .job_status)" "200/running" "complete incremental disk 0"
api POST "/api/v1/backups/$INC/complete" '{"disk_id": 1, "change_id": "INC_DISK1", "bytes_transferred": 4000}'
is "$API_STATUS/$(jqb .job_status)" "200/completed" "complete incremental disk 1 completes the job"

is "$(sql "SELECT disk_index, disk_change_id FROM backup_disks WHERE backup_job_id='$INC' ORDER BY disk_index" | tr '\n' ' ')" \
   "0|INC_DISK0 1|INC_DISK1 " "3.2: change ids stored per disk for the incremental"
is "$(sql "SELECT disk_index, disk_change_id FROM backup_disks WHERE backup_job_id='$FULL' ORDER BY disk_index" | tr '\n' ' ')" \
   "0|TEST_DISK0 1|TEST_DISK1 " "the full's change ids are untouched"

# Reading through the chain: old data from the full, new data from the overlay.
ok "disk 0 chain reads full + incremental data" \
   qio -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' -c 'read -P 0 2M 62M' "${INC_FILE[0]}"
ok "disk 1 chain reads full + incremental data" \
   qio -r -f qcow2 -c 'read -P 0x33 0 1M' -c 'read -P 0x44 1M 1M' -c 'read -P 0 2M 62M' "${INC_FILE[1]}"
ok "the full of disk 0 is unchanged by the overlay" qio -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0 1M 1M' "${FULL_FILE[0]}"
ref_image "$T/ref0.raw" $SIZE
ref_write "$T/ref0.raw" 0x11 0 1M
ref_write "$T/ref0.raw" 0x22 1M 1M
ok "qemu-img compare: disk 0 chain equals the reference image" qemu-img compare -q -f raw -F qcow2 "$T/ref0.raw" "${INC_FILE[0]}"
ref_image "$T/ref1.raw" $SIZE
ref_write "$T/ref1.raw" 0x33 0 1M
ref_write "$T/ref1.raw" 0x44 1M 1M
ok "qemu-img compare: disk 1 chain equals the reference image" qemu-img compare -q -f raw -F qcow2 "$T/ref1.raw" "${INC_FILE[1]}"

for f in "${FULL_FILE[@]}" "${INC_FILE[@]}"; do
  ok "completed file ${f#$REPO/} is read-only (mode $(file_mode "$f"))" read_only "$f"
done

api GET "/api/v1/backups/changeid?vm_name=pgtest1&disk_id=0"
is "$(jqb '[.change_id, .backup_id] | join("|")')" "INC_DISK0|$INC" "changeid of disk 0 now is the incremental's"
api GET "/api/v1/backups/changeid?vm_name=pgtest1&disk_id=1"
is "$(jqb '[.change_id, .backup_id] | join("|")')" "INC_DISK1|$INC" "changeid of disk 1 now is the incremental's"

api GET "/api/v1/contexts/$CTX"
is "$(jqb '[.total_backups_run, .successful_backups, .failed_backups, .last_backup_id, .last_backup_type, (.last_backup_at != null)] | map(tostring) | join(" ")')" \
   "2 2 0 $INC incremental true" "context statistics after the incremental"
is "$(sql "SELECT total_backups_run, successful_backups, failed_backups, last_backup_id, last_backup_type FROM vm_backup_contexts WHERE context_id='$CTX'")" \
   "2|2|0|$INC|incremental" "the same statistics in the catalog"

# A second incremental chains onto the first one, three levels deep.
start_backup pgtest1 incremental
INC2=$BID
is "$(jqb '[.disks[] | .parent_backup_id + "/" + .previous_change_id] | join(" ")')" \
   "$INC/INC_DISK0 $INC/INC_DISK1" "second incremental chains onto the first one, per disk"
is "$(backing_of "${QCOW2[0]}")" "$INC.qcow2" "its disk 0 overlay is backed by the first incremental"
write_ok "${NBD_URI[0]}" 0x55 2M 1M
complete_disk "$INC2" 0 INC2_DISK0 1
complete_disk "$INC2" 1 INC2_DISK1 1
ok "three-level chain of disk 0 reads every level's data" \
   qio -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' -c 'read -P 0x55 2M 1M' -c 'read -P 0 3M 61M' "${QCOW2[0]}"
ok "three-level chain of disk 1 reads the older data" \
   qio -r -f qcow2 -c 'read -P 0x33 0 1M' -c 'read -P 0x44 1M 1M' -c 'read -P 0 2M 62M' "${QCOW2[1]}"
is "$(sql "SELECT count(*) FROM vm_backup_contexts")|$(sql "SELECT count(*) FROM backup_jobs")|$(sql "SELECT count(*) FROM backup_disks")" \
   "1|3|6" "catalog: 1 context, 3 jobs, 6 disk rows"
expected=$(for d in 0 1; do for b in "$FULL" "$INC" "$INC2"; do
              echo "./$CTX/disk$d/$b.qcow2"; echo "./$CTX/disk$d/$b.qcow2.manifest"
            done; done | sort | tr '\n' ' ')
is "$(cd "$REPO" && find . -type f ! -name strata-repository.json | sort | tr '\n' ' ')" "$expected" \
   "the repository holds exactly the six files of the catalog, each with its manifest"

# A backup completed without change id: changeid answers "" for that disk
# (an older id would not match the chain), and the other disk's id.
start_backup pgtest1 incremental
INC3=$BID
complete_disk "$INC3" 0
complete_disk "$INC3" 1 INC3_DISK1 1
api GET "/api/v1/backups/changeid?vm_name=pgtest1&disk_id=0"
is "$API_STATUS|$(jqb .change_id)|$(jqb .backup_id)" "200||$INC3" "changeid of a disk completed without change id is empty"
api GET "/api/v1/backups/changeid?vm_name=pgtest1&disk_id=1"
is "$(jqb .change_id)|$(jqb .backup_id)" "INC3_DISK1|$INC3" "the other disk's change id is its own"
api GET "/api/v1/backups/changeid?vm_name=pgtest1&disk_id=7"
is "$API_STATUS|$(jqb .change_id)|$(jqb .backup_id)" "200||null" "changeid of a disk index never backed up: empty"
api GET "/api/v1/backups/changeid?vm_name=nobody&disk_id=0"
is "$API_STATUS|$(jqb .change_id)|$(jqb .backup_id)|$(jqb .message)" "200||null|No previous backup found" "changeid of an unknown VM: empty"
is "$(nbd_exports)" "" "no export is left when no backup runs"
ok "qemu-img check: every file is consistent" eval "for f in \$(find '$REPO' -name '*.qcow2'); do qemu-img check -q \$f || exit 1; done"

done_testing
