#!/usr/bin/env bash
# test-crash-points.sh - the hub dies (SIGKILL, as in a power cut) at each
# point between its catalog, file and export steps, and the next start
# recovers: every image in the repository is owned by a row, every row's
# image exists, every running disk is exported again, completed images are
# read-only, and the data written before the crash is there.
#
# The hub kills itself where STRATA_CRASH_AT says (hub/hub-int.h).

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo jq curl sqlite3

SIZE=$((16 * MiB))
start_hub
REPO=$DATA/repository
put_vm crash $SIZE $SIZE

# crash_at POINT METHOD PATH [BODY]: restart the hub with STRATA_CRASH_AT=POINT,
# send the request, check that it got no answer and that the hub died by
# SIGKILL taking its storage daemon with it, then start the hub normally.
crash_at ()
{
  local point=$1 method=$2 path=$3 body=${4-} code rc pids
  restart_hub_crashing_at "$point"
  pids=$(qsd_pids)
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 -X "$method" \
           ${body:+--data-binary "$body"} "http://127.0.0.1:$HUB_PORT$path")
  wait "$HUB_PID" 2>/dev/null
  rc=$?
  HUB_PID=
  echo "==== hub died at crash point $point (status $rc)" >> "$HUB_LOG"
  is "$code/$rc" "000/137" "$point: $method gets no answer, the hub dies by SIGKILL"
  _check_no_qsd "$point: its storage daemon dies with it" $pids
  start_hub
}

# invariants POINT: what every start must restore.
invariants ()
{
  local files rows uri bad=""
  files=$(cd "$REPO" && find . -name '*.qcow2' | sed 's|^\./||' | sort)
  rows=$(sql "SELECT qcow2_path FROM backup_disks WHERE qcow2_path IS NOT NULL" | sort)
  is "$files" "$rows" "$1: the repository's images are exactly the catalog's"
  api GET "/api/v1/backups?status=running"
  for uri in $(jqb '.backups[].disks[] | select(.status == "running") | .nbd_uri'); do
    export_up "$uri" || bad+=" $uri"
  done
  is "$bad" "" "$1: every running disk is exported"
  bad=""
  for f in $(sql "SELECT qcow2_path FROM backup_disks WHERE status='completed'"); do
    read_only "$REPO/$f" || bad+=" $f"
  done
  is "$bad" "" "$1: every completed image is read-only"
}

# --- Dying half-way through a start leaves nothing.
crash_at start:images POST /api/v1/backups '{"vm_name":"crash","backup_type":"full"}'
invariants start:images
is "$(sql "SELECT count(*) FROM backup_jobs")|$(sql "SELECT count(*) FROM vm_backup_contexts")" "0|0" \
   "start:images: no job and no context"
is "$(cd "$REPO" && find . -name '*.qcow2' | wc -l)" 0 "start:images: the images made before the crash are gone"
grep -q "belongs to no backup" "$HUB_LOG"
is $? 0 "start:images: the start-up reports the leftover files"

crash_at start:exports POST /api/v1/backups '{"vm_name":"crash","backup_type":"full"}'
invariants start:exports
is "$(sql "SELECT count(*) FROM backup_jobs")" 0 "start:exports: no job"

# A full backup to build on.
start_backup crash full
F=$BID
write_ok "${NBD_URI[0]}" 0x11 0 1M
write_ok "${NBD_URI[1]}" 0x12 0 1M
complete_disk "$F" 0 F0 1
complete_disk "$F" 1 F1 1

crash_at start:exports POST /api/v1/backups '{"vm_name":"crash","backup_type":"incremental"}'
invariants "start:exports (incremental)"
is "$(sql "SELECT count(*) FROM backup_jobs")" 1 "start:exports: only the full is left"

# --- Dying after the job was recorded: it runs on after the restart.
crash_at start:recorded POST /api/v1/backups '{"vm_name":"crash","backup_type":"incremental"}'
invariants start:recorded
I=$(sql "SELECT id FROM backup_jobs WHERE status='running'")
like "$I" '^backup-crash-' "start:recorded: the incremental is running after the restart"
api GET "/api/v1/backups/$I"
U0=$(jqb '.disks[0].nbd_uri'); U1=$(jqb '.disks[1].nbd_uri')
P0=$(jqb '.disks[0].qcow2_path'); P1=$(jqb '.disks[1].qcow2_path')
is "$(jqb '[.disks[].parent_backup_id] | unique | join(" ")')" "$F" "and builds on the full"
write_ok "$U0" 0x21 1M 1M
write_ok "$U1" 0x22 1M 1M

# --- Dying after the flush, before the completion was recorded: the disk is
# still running, its data is there, and the completion can be sent again.
crash_at complete:synced POST "/api/v1/backups/$I/complete" '{"disk_id":0,"change_id":"I0"}'
invariants complete:synced
is "$(sql "SELECT status FROM backup_disks WHERE backup_job_id='$I' AND disk_index=0")" running \
   "complete:synced: disk 0 is still running"
ok "complete:synced: its image is still writable" test -w "$P0" -a ! "$(stat -c %a "$P0")" = 444
ok "complete:synced: the data written before the crash is in the re-exported disk" \
   qio -r -f raw -c 'read -P 0x11 0 1M' -c 'read -P 0x21 1M 1M' "$U0"
complete_disk "$I" 0 I0 1

# --- Dying after the completion was recorded, before the image was sealed.
crash_at complete:recorded POST "/api/v1/backups/$I/complete" '{"disk_id":1,"change_id":"I1"}'
invariants complete:recorded
is "$(sql "SELECT status FROM backup_jobs WHERE id='$I'")|$(sql "SELECT disk_change_id FROM backup_disks WHERE backup_job_id='$I' AND disk_index=1")" \
   "completed|I1" "complete:recorded: the job is completed with disk 1's change id"
ok "complete:recorded: the chain reads back" \
   qio -r -f qcow2 -c 'read -P 0x12 0 1M' -c 'read -P 0x22 1M 1M' "$P1"
api POST "/api/v1/backups/$I/complete" '{"disk_id":1,"change_id":"I1"}'
is "$API_STATUS/$(jqb .job_status)" "200/completed" "complete:recorded: the agent's retry is answered the same"

# --- Dying after a failure was recorded: the files go at the next start.
start_backup crash incremental
X=$BID; XP=("${QCOW2[@]}"); XU=("${NBD_URI[@]}")
write_ok "${XU[0]}" 0x31 2M 1M
crash_at end:recorded POST "/api/v1/backups/$X/fail" '{"error":"agent lost the source"}'
invariants end:recorded
is "$(sql "SELECT status FROM backup_jobs WHERE id='$X'")" failed "end:recorded: the job is failed"
ok "end:recorded: its overlays are gone" eval "[ ! -e '${XP[0]}' ] && [ ! -e '${XP[1]}' ]"
ok "end:recorded: its exports are gone" export_gone "${XU[0]}"
start_backup crash incremental
is "$(jqb '[.disks[].parent_backup_id] | unique | join(" ")')" "$I" "end:recorded: the next incremental builds on the last completed backup"
Y=$BID
api POST "/api/v1/backups/$Y/cancel"
is "$API_STATUS" 200 "cancel it"

# --- Dying after a delete was recorded: the files go at the next start.
crash_at delete:recorded DELETE "/api/v1/backups/$I"
invariants delete:recorded
is "$(sql "SELECT count(*) FROM backup_jobs WHERE id='$I'")" 0 "delete:recorded: the backup is gone from the catalog"
ok "delete:recorded: and its images from the repository" eval "[ ! -e '$P0' ] && [ ! -e '$P1' ]"

CTXID=$(sql "SELECT context_id FROM vm_backup_contexts")
# --- Dying after a context's folder was retired, before its delete was
# recorded: the context stays, with its folder back under its name.
crash_at context-delete:retired DELETE "/api/v1/contexts/$CTXID"
invariants context-delete:retired
is "$(sql "SELECT count(*) FROM vm_backup_contexts")" 1 "context-delete:retired: the context stays"
ok "context-delete:retired: its folder is back" test -d "$REPO/$CTXID"
ok "context-delete:retired: no retired folder is left" eval "! ls -d '$REPO'/deleting-* 2>/dev/null"

crash_at context-delete:recorded DELETE "/api/v1/contexts/$CTXID"
invariants context-delete:recorded
is "$(sql "SELECT count(*) FROM vm_backup_contexts")|$(sql "SELECT count(*) FROM backup_jobs")" "0|0" \
   "context-delete:recorded: the context and its jobs are gone"
ok "context-delete:recorded: and its folder" test ! -e "$REPO/$CTXID"

done_testing
