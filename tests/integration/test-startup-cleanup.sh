#!/usr/bin/env bash
# test-startup-cleanup.sh - on start the hub deletes the files in its
# repository that no row owns (and says so in its log), and marks failed the
# rows whose file is gone, with every backup that depends on them; the next
# incremental then builds on what is really there.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl sqlite3

SIZE=$((64 * MiB))
start_hub
REPO=$DATA/repository

# A chain F <- I1 <- I2 of sc1, all completed.
put_vm sc1 $SIZE
start_backup sc1 full;        F=$BID;  F_FILE=${QCOW2[0]}; CTX_A=$CTX
write_ok "${NBD_URI[0]}" 0x11 0 1M
complete_disk "$F" 0 SF 1
start_backup sc1 incremental; I1=$BID; I1_FILE=${QCOW2[0]}
write_ok "${NBD_URI[0]}" 0x22 1M 1M
complete_disk "$I1" 0 SI1 1
start_backup sc1 incremental; I2=$BID; I2_FILE=${QCOW2[0]}
write_ok "${NBD_URI[0]}" 0x33 2M 1M
complete_disk "$I2" 0 SI2 1

# sc2: a completed full and a running incremental whose file will vanish.
put_vm sc2 $SIZE
start_backup sc2 full;        G=$BID; G_FILE=${QCOW2[0]}
complete_disk "$G" 0 SG 1
start_backup sc2 incremental; J=$BID; J_FILE=${QCOW2[0]}; J_URI=${NBD_URI[0]}

# sc3: a completed full and a running incremental backed by it; the full's
# file will vanish, so the running job has nothing to stand on.
put_vm sc3 $SIZE
start_backup sc3 full;        K=$BID; K_FILE=${QCOW2[0]}
complete_disk "$K" 0 SK 1
start_backup sc3 incremental; L=$BID; L_FILE=${QCOW2[0]}; L_URI=${NBD_URI[0]}

# A second repository with a backup of sc4.
api POST /api/v1/repositories "{\"id\":\"two\",\"name\":\"two\",\"type\":\"local\",\"path\":\"$T/repo2\"}"
is "$API_STATUS" 201 "a second repository"
put_vm sc4 $SIZE
start_backup sc4 full '"repository_id":"two"'; M=$BID; M_FILE=${QCOW2[0]}; CTX_M=$CTX
complete_disk "$M" 0 SM 1

stop_hub

# Orphans: a QCOW2 in a context's disk folder, one in a disk folder that no
# row names, and a whole stray context folder.
ORPHAN1=$REPO/$CTX_A/disk0/backup-sc1-20250101T000000-0123456789ab.qcow2
ORPHAN2=$REPO/$CTX_A/disk7/backup-sc1-20250101T000000-ba9876543210.qcow2
STRAY=$REPO/ctx-backup-x-20250101T000000-deadbeefcafe
ORPHAN3=$STRAY/disk0/backup-x-20250101T000000-deadbeefcafe.qcow2
mkdir -p "$(dirname "$ORPHAN2")" "$(dirname "$ORPHAN3")"
for f in "$ORPHAN1" "$ORPHAN2" "$ORPHAN3"; do
  qemu-img create -q -f qcow2 "$f" 64M
done
ORPHAN4=$T/repo2/$CTX_M/disk0/backup-sc4-20250101T000000-aaaaaaaaaaaa.qcow2
qemu-img create -q -f qcow2 "$ORPHAN4" 64M
# A completed backup's file deleted by hand, a running one's, and the file
# under a running one.
rm -f "$I1_FILE" "$J_FILE" "$K_FILE"
mark=$(wc -l < "$HUB_LOG")

start_hub
newlog=$(tail -n +$((mark + 1)) "$HUB_LOG")

ok "the orphan in a context's disk folder is deleted" test ! -e "$ORPHAN1"
ok "the orphan in an unknown disk folder is deleted" test ! -e "$ORPHAN2"
ok "the file in a stray context folder is deleted" test ! -e "$ORPHAN3"
ok "the stray context folder is removed" test ! -e "$STRAY"
like "$newlog" "${ORPHAN1##*/}" "the log reports the first orphan"
like "$newlog" "${ORPHAN2##*/}" "the log reports the second orphan"
like "$newlog" "${ORPHAN3##*/}" "the log reports the third orphan"
ok "the orphan in the second repository is deleted" test ! -e "$ORPHAN4"
like "$newlog" "${ORPHAN4##*/}" "the log reports it"
ok "the files of the catalog are all still there" eval "[ -f '$F_FILE' ] && [ -f '$G_FILE' ] && [ -f '$M_FILE' ]"

# The row whose file is gone, and its dependent, are failed.
api GET "/api/v1/backups/$I1"
is "$API_STATUS/$(jqb .status)/$(jqb '.disks[0].status')/$(jqb '.disks[0].qcow2_path')" "200/failed/failed/null" "the backup whose file was deleted is failed, without path"
isnt "$(jqb '.disks[0].error // ""')" "" "with an error saying why"
api GET "/api/v1/backups/$I2"
is "$API_STATUS/$(jqb .status)/$(jqb '.disks[0].status')/$(jqb '.disks[0].qcow2_path')" "200/failed/failed/null" "the backup backed by it is failed too"
ok "the dependent's now useless file is deleted" test ! -e "$I2_FILE"
api GET "/api/v1/backups/$F"
is "$(jqb .status)/$(jqb '.disks[0].status')" "completed/completed" "the full before them is untouched"
is "$(sql "SELECT id, status FROM backup_jobs WHERE vm_name='sc1' ORDER BY created_at, id" | tr '|' ':' | sql_join ' ')" \
   "$F:completed $I1:failed $I2:failed" "catalog: the chain is completed, failed, failed"
is "$(sql "SELECT count(*) FROM backup_disks WHERE qcow2_path IS NOT NULL AND status='failed'")" 0 "no failed row keeps a path"

# The running job whose file vanished is failed, not exported.
api GET "/api/v1/backups/$J"
is "$API_STATUS/$(jqb .status)/$(jqb '.disks[0].status')/$(jqb '.disks[0].nbd_uri')" "200/failed/failed/null" "the running job whose file vanished is failed"
ok "its export is not served" export_gone "$J_URI"

# The running job whose backing file vanished is failed too, and its overlay gone.
api GET "/api/v1/backups/$L"
is "$API_STATUS/$(jqb .status)/$(jqb '.disks[0].status')/$(jqb '.disks[0].nbd_uri')/$(jqb '.disks[0].qcow2_path')" "200/failed/failed/null/null" "the running job on the lost full is failed"
ok "its overlay is deleted" test ! -e "$L_FILE"
ok "its export is not served" export_gone "$L_URI"
api GET "/api/v1/backups/$K"
is "$(jqb .status)" failed "the lost full itself is failed"
is "$(nbd_exports)" "" "nothing is exported after this start"
api GET "/api/v1/backups/$M"
is "$(jqb .status)" completed "the backup in the second repository is untouched"

# changeid and the next incremental build on the full.
api GET "/api/v1/backups/changeid?vm_name=sc1&disk_id=0"
is "$(jqb '[.change_id, .backup_id] | join(" ")')" "SF $F" "changeid answers the full's"
start_backup sc1 incremental; I3=$BID
is "$(jqb '.disks[0].parent_backup_id + "/" + .disks[0].previous_change_id')" "$F/SF" "the next incremental's parent is the full"
is "$(backing_of "${QCOW2[0]}")" "$F.qcow2" "its overlay is backed by the full's file"
ok "it shows the full's data, not the lost backups'" qio -r -f raw -c 'read -P 0x11 0 1M' -c 'read -P 0 1M 2M' "${NBD_URI[0]}"
complete_disk "$I3" 0 SI3 1
is "$(jqb .job_status)" completed "and completes"
start_backup sc2 incremental
is "$(jqb '.disks[0].parent_backup_id')" "$G" "sc2's next incremental builds on its full"

# A clean restart finds nothing to clean.
listing=$(repo_listing "$REPO")
stop_hub
mark=$(wc -l < "$HUB_LOG")
start_hub
is "$(repo_listing "$REPO")" "$listing" "a clean restart deletes nothing"
api GET "/api/v1/backups/$BID"
is "$(jqb .status)" running "and the running job still runs"

# A file no row owns yet but that a QEMU process has open (as when another
# hub sharing the catalog is starting a backup) is left alone, and deleted
# at a start once nothing has it open.
BUSY=$REPO/ctx-backup-sc9-20250101T000000-bbbbbbbbbbbb/disk0/backup-sc9-20250101T000000-cccccccccccc.qcow2
mkdir -p "${BUSY%/*}"
qemu-img create -q -f qcow2 "$BUSY" 64M
qemu-nbd -f qcow2 --socket "$T/busy.sock" --persistent "$BUSY" > /dev/null 2>&1 &
BUSY_PID=$!
wait_for 20 test -S "$T/busy.sock"
stop_hub
start_hub
ok "an unowned file open in a QEMU process is not deleted" test -e "$BUSY"
like "$(cat "$HUB_LOG")" "${BUSY##*/} belongs to no backup yet but is open" "the hub says why"
kill "$BUSY_PID"
wait "$BUSY_PID" 2>/dev/null
stop_hub
start_hub
ok "once closed, the next start deletes it" test ! -e "$BUSY"

# A repository whose folder is not there (not mounted) is left alone: its
# backups are not marked lost, and they are fine once it is back.
stop_hub
mv "$T/repo2" "$T/repo2.unmounted"
start_hub
api GET "/api/v1/backups/$M"
is "$(jqb '.status + "/" + .disks[0].status')" completed/completed \
   "a backup in an unreachable repository is not marked lost"
like "$(cat "$HUB_LOG")" "repository folder $T/repo2 is not reachable" "the hub says why it left it"
stop_hub
mv "$T/repo2.unmounted" "$T/repo2"
start_hub
api GET "/api/v1/backups/$M"
is "$(jqb .status)" completed "the repository back, the backup is still completed"
ok "and its file is there" test -e "$(jqb '.disks[0].qcow2_path')"

done_testing
