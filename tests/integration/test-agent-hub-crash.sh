#!/usr/bin/env bash
# test-agent-hub-crash.sh - the hub is killed with SIGKILL while an agent
# copies an incremental.  The agent cannot tell the hub and exits 3; once
# the hub is back, the rerun agent resumes the same job (its running job
# predates the hub's start): the disk already completed is skipped and keeps
# its bitmap, the other is copied again into its re-exported target.  The
# job completes, every point restores bit-identical, and the next
# incremental continues from the resumed backup's bitmaps.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-nbd qemu-storage-daemon nbdinfo jq curl cmp

start_hub
D0=$T/vm-disk0.qcow2
D1=$T/vm-disk1.qcow2
qemu-img create -q -f qcow2 "$D0" 32M
qemu-io -f qcow2 -c 'write -P 0x11 0 2M' "$D0" > /dev/null
qemu-img create -q -f qcow2 "$D1" 64M
qemu-io -f qcow2 -c 'write -P 0x21 0 24M' "$D1" > /dev/null

agent_ok "the full succeeds" backup --vm crash1 --json "$D0" "$D1"
B1=$(jqa .backup_id)

# --- An incremental, cut by a hub crash.  Disk 1 is read slowly (8 MiB/s)
# through a throttled NBD server over a raw copy of it, with all its
# blocks to copy, so that the crash finds it half-way.
qemu-io -f qcow2 -c 'write -P 0x12 4M 64k' "$D0" > /dev/null
qemu-io -f qcow2 -c 'write -P 0x22 30M 1M' "$D1" > /dev/null
snapshot "$D0" "$T/p2-0.raw"
snapshot "$D1" "$T/p2-1.raw"
throttled_source "$T/p2-1.raw" "$T/src.sock" 8388608
is "$?" 0 "a throttled NBD server serves disk 1"
SRC1="nbd+unix:///src?socket=$T/src.sock"

"$STRATA" backup --hub "http://127.0.0.1:$HUB_PORT" --vm crash1 --json "$D0" "$SRC1" \
  > "$T/b2.out" 2> "$T/b2.err" &
AGENT=$!
disk0_done () {
  running_jobs crash1
  [ "$(jqb '.backups[0].disks[0].status')" = completed ]
}
ok "disk 0 completes while disk 1 still copies" wait_for 60 disk0_done
disk0_done
B2=$(jqb '.backups[0].backup_id')
kill_hub
wait "$AGENT"
is "$?" 3 "the agent exits 3: the hub is gone"
like "$(cat "$T/b2.err")" "rerun strata backup" "and says that a rerun resumes the job"
is "$(bitmaps_of "$D0")" "$(printf '%s\n%s' "$B1" "$B2" | sort)" \
   "disk 0 keeps both bitmaps: the hub recorded it completed"

start_hub
api GET "/api/v1/backups/$B2"
is "$(jqb .status)" running "after the restart the job is still running"

agent_ok "the rerun agent succeeds" backup --vm crash1 --json "$D0" "$SRC1"
is "$(jqa .backup_id)" "$B2" "it finished the same job"
is "$(jqa .resumed)" true "and says it resumed it"
api GET "/api/v1/backups/$B2"
is "$(jqb .status)" completed "the job is completed"
is "$(jqb '[.disks[] | .change_id // "none"] | join(",")')" "$B2,none" \
   "disk 0 records its bitmap; disk 1 (an NBD source without bitmap) no change id"
is "$(bitmaps_of "$D0")" "$B2" "disk 0's older bitmap is removed once the job completed"
kill -KILL "$SRC_QSD_PID"
wait "$SRC_QSD_PID" 2>/dev/null

restore_is "$B2" 0 "$T/p2-0.raw" "the resumed backup restores disk 0 bit-identical"
restore_is "$B2" 1 "$T/p2-1.raw" "the resumed backup restores disk 1 bit-identical"

# --- The chain goes on from the resumed backup.
qemu-io -f qcow2 -c 'write -P 0x13 6M 64k' "$D0" > /dev/null
agent_ok "the next incremental succeeds" backup --vm crash1 --json "$D0" "$T/p2-1.raw"
B3=$(jqa .backup_id)
is "$(jqa '.disks[0].mode')" incremental "disk 0 continues from the resumed backup's bitmap"
is "$(jqa '.disks[0].bytes_written')" $((64 * 1024)) "writing only what changed since"
snapshot "$D0" "$T/p3-0.raw"
restore_is "$B3" 0 "$T/p3-0.raw" "and restores bit-identical"

# --- A running job of an agent that is still alive is a conflict.
api POST /api/v1/backups '{"vm_name":"crash1","backup_type":"incremental"}'
is "$API_STATUS" 201 "a job started by someone else runs"
B4=$(jqb .backup_id)
agent backup --vm crash1 "$D0" "$T/p2-1.raw"
is "$AGENT_RC" 4 "the agent exits 4 (conflict): that job is not a crashed one"
like "$AGENT_ERR" "already running.*$B4" "and names the running job"
api POST "/api/v1/backups/$B4/cancel"

no_qemu_nbd "no qemu-nbd is left behind"
done_testing
