#!/usr/bin/env bash
# test-hub-driven-finishing.sh - a hub-driven job is "completed" only once
# it owes nothing: its last disk leaves it "finishing", the hub removes the
# superseded bitmap from the source, then marks it completed.  A hub killed
# in between finishes the job at its next start; a finishing job cannot be
# failed, cancelled or deleted; a bitmap that cannot be removed is reported
# and the job completes all the same.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-nbd jq curl sqlite3

SIZE=$((16 * MiB))
SRC=$T/src0.qcow2
qemu-img create -q -f qcow2 "$SRC" $SIZE
start_hub
api PUT /api/v1/vms/fin "$(jq -cn --arg a "$SRC" --argjson s $SIZE \
  '{disks:[{disk_index:0,size_bytes:$s,source:$a}]}')"
is "$API_STATUS" 201 "PUT a VM whose disk has a QCOW2 source"

src_write () # PATTERN OFFSET
{
  qemu-io -f qcow2 -c "write -P $1 $2 1M" "$SRC" > /dev/null ||
    fail "write $1 into the source"
}

context_stats ()
{
  echo "$(sql "SELECT successful_backups FROM vm_backup_contexts WHERE vm_name='fin'")/$(
         sql "SELECT last_backup_id FROM vm_backup_contexts WHERE vm_name='fin'")"
}

# --- A first full, as usual ---------------------------------------------------
src_write 0x11 0
api POST /api/v1/backups '{"vm_name":"fin","backup_type":"full"}'
B1=$(jqb .backup_id)
ok "the first full ends" wait_for 60 job_ended "$B1"
is "$(job_status "$B1")" completed "it is completed"
is "$(bitmaps_of "$SRC")" "$B1" "the source holds its bitmap"

# --- The hub dies once every disk is recorded, before the bitmap commit ------
src_write 0x12 2M
restart_hub_crashing_at finishing:recorded
api POST /api/v1/backups '{"vm_name":"fin","backup_type":"full"}'
is "$API_STATUS" 201 "start a second full on a hub that dies before committing bitmaps"
B2=$(jqb .backup_id)
wait_hub_crashed finishing:recorded
is "$(sql "SELECT status FROM backup_jobs WHERE id='$B2'")/$(
      sql "SELECT count(*) FROM backup_jobs WHERE id='$B2' AND completed_at IS NULL")" \
   "finishing/1" "the job was left finishing, with no completion time"
is "$(sql "SELECT status FROM backup_disks WHERE backup_job_id='$B2'")" \
   completed "its disk is recorded completed"
is "$(context_stats)" "1/$B1" "the context does not count it yet"
is "$(bitmaps_of "$SRC" | tr '\n' ' ')" "$(printf '%s\n' "$B1" "$B2" | sort | tr '\n' ' ')" \
   "the source still holds both bitmaps"

start_hub
ok "after the restart the job ends" wait_for 60 job_ended "$B2"
is "$(job_status "$B2")" completed "it is completed"
is "$(bitmaps_of "$SRC")" "$B2" "the source holds only the new full's bitmap"
is "$(context_stats)" "2/$B2" "the context counts it, as its last backup"
grep -q "backup $B2 was finishing when the hub stopped" "$HUB_LOG"
is $? 0 "the start-up says it finishes the job"

# --- A finishing job cannot be failed, cancelled or deleted ------------------
# The hub's qemu-img is this gate: its "bitmap --remove" waits until the
# test opens the gate (a FIFO), then runs the real qemu-img.  So the job
# stays finishing, for sure, while the test looks at it.
mkdir -p "$T/bin"
QEMU_IMG=$(command -v qemu-img)
cat > "$T/bin/qemu-img" <<EOF
#!/bin/sh
if [ "\$1" = bitmap ] && [ "\$4" = --remove ] && [ -e "$T/gate.armed" ]; then
  rm -f "$T/gate.armed"
  : > "$T/gate.waiting"
  cat "$T/gate" > /dev/null
fi
exec "$QEMU_IMG" "\$@"
EOF
chmod +x "$T/bin/qemu-img"
mkfifo "$T/gate"
open_gate () { echo open > "$T/gate"; rm -f "$T/gate.waiting"; }

stop_hub
OLD_PATH=$PATH
export PATH=$T/bin:$PATH
start_hub
export PATH=$OLD_PATH

src_write 0x13 4M
: > "$T/gate.armed"
api POST /api/v1/backups '{"vm_name":"fin","backup_type":"incremental"}'
B3=$(jqb .backup_id)
ok "the hub reaches the bitmap commit" wait_for 60 test -e "$T/gate.waiting"
is "$(job_status "$B3")" finishing "the API shows the job finishing"
api GET "/api/v1/backups?status=finishing&vm_name=fin"
is "$API_STATUS/$(jqb '[.backups[].backup_id] | join(" ")')" "200/$B3" \
   "GET /backups?status=finishing lists it"
api POST "/api/v1/backups/$B3/cancel"
is_error 409 conflict "cancel of a finishing job: 409"
like "$(jqb .error.message)" "finishing.*complete" "the message says it is finishing and complete"
api POST "/api/v1/backups/$B3/fail" '{"error":"too late"}'
is_error 409 conflict "fail of a finishing job: 409"
api DELETE "/api/v1/backups/$B3"
is_error 409 conflict "DELETE of a finishing job: 409"
like "$(jqb .error.message)" "finishing" "the message says why"
api POST /api/v1/backups '{"vm_name":"fin","backup_type":"incremental"}'
is_error 409 conflict "a second backup of the context while one finishes: 409"
open_gate
ok "once the gate opens the job ends" wait_for 60 job_ended "$B3"
is "$(job_status "$B3")" completed "it is completed"
is "$(bitmaps_of "$SRC")" "$B3" "the source holds only the incremental's bitmap"

# --- A superseded bitmap that cannot be removed ------------------------------
# While the hub waits at the gate, a writer takes the image's lock, so the
# real qemu-img cannot remove the old bitmap.  The data is complete: the job
# completes, and the log names the bitmap left behind.
src_write 0x14 6M
: > "$T/gate.armed"
api POST /api/v1/backups '{"vm_name":"fin","backup_type":"incremental"}'
B4=$(jqb .backup_id)
ok "the hub reaches the bitmap commit again" wait_for 60 test -e "$T/gate.waiting"
qemu-nbd --fork --pid-file="$T/qnbd.pid" --socket="$T/qnbd.sock" -f qcow2 "$SRC"
ok "a writer holds the source" test -s "$T/qnbd.pid"
open_gate
ok "the job ends" wait_for 60 job_ended "$B4"
kill "$(cat "$T/qnbd.pid")"
ok "the writer is gone" wait_for 30 eval "! kill -0 $(cat "$T/qnbd.pid") 2>/dev/null"
is "$(job_status "$B4")" completed "it is completed all the same"
grep -q "backup $B4 disk 0: the superseded bitmap stays in $SRC.*$B3" "$HUB_LOG"
is $? 0 "the hub's log names the bitmap left in the source"
is "$(bitmaps_of "$SRC" | tr '\n' ' ')" "$(printf '%s\n' "$B3" "$B4" | sort | tr '\n' ' ')" \
   "the source holds the new bitmap and the leftover"
api GET "/api/v1/backups/changeid?vm_name=fin&disk_id=0"
is "$(jqb .change_id)" "$B4" "the next incremental continues from the new one"

done_testing
