#!/usr/bin/env bash
# test-agent-source-lost.sh - a disk's source disappears half-way through a
# backup: the agent fails the job at the hub, exits 1 and removes the new
# bitmap of the other disk; the chain before it is untouched, and the next
# incremental builds on the last good backup and restores correctly.
#
# Disk 1 is read through a throttled NBD server (qemu-storage-daemon with a
# throttle group), so that its copy takes long enough to be cut: the server
# is killed once the job runs.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-nbd qemu-storage-daemon nbdinfo jq curl cmp

start_hub
D0=$T/vm-disk0.qcow2
D1=$T/vm-disk1.raw
qemu-img create -q -f qcow2 "$D0" 32M
qemu-io -f qcow2 -c 'write -P 0x11 0 2M' "$D0" > /dev/null
truncate -s 64M "$D1"
qemu-io -f raw -c 'write -P 0x21 0 32M' "$D1" > /dev/null

agent_ok "the first backup succeeds" backup --vm lost1 --json "$D0" "$D1"
B1=$(jqa .backup_id)
is "$(jqa '[.disks[].mode] | join(",")')" "full,full" "a full of both disks"
snapshot "$D0" "$T/p1-0.raw"
cp --sparse=always "$D1" "$T/p1-1.raw"

# --- The second backup loses disk 1's source half-way.
qemu-io -f qcow2 -c 'write -P 0x12 4M 64k' "$D0" > /dev/null
throttled_source "$D1" "$T/src.sock" 4194304
is "$?" 0 "a throttled NBD server serves disk 1 (4 MiB/s)"
"$STRATA" backup --hub "http://127.0.0.1:$HUB_PORT" --vm lost1 --json "$D0" \
  "nbd+unix:///src?socket=$T/src.sock" > "$T/b2.out" 2> "$T/b2.err" &
AGENT=$!
running () { running_jobs lost1; [ "$(jqb .total)" = 1 ]; }
ok "the second backup runs" wait_for 60 running
running
B2=$(jqb '.backups[0].backup_id')
kill -KILL "$SRC_QSD_PID"
wait "$SRC_QSD_PID" 2>/dev/null
wait "$AGENT"
is "$?" 1 "the agent exits 1 when a source disappears"
AGENT_OUT=$(cat "$T/b2.out")
is "$(jqa .status)" failed "its summary says failed"
like "$(jqa .error)" "disk 1|source|NBD" "and why: $(jqa .error)"
api GET "/api/v1/backups/$B2"
is "$(jqb .status)" failed "the hub has the job failed"
like "$(jqb .error)" "agent: " "with the agent's reason"
is "$(bitmaps_of "$D0")" "$B1" "disk 0 keeps only the last good backup's bitmap"

# --- The next incremental builds on the last good backup.
qemu-io -f qcow2 -c 'write -P 0x13 8M 64k' "$D0" > /dev/null
qemu-io -f raw -c 'write -P 0x22 40M 1M' "$D1" > /dev/null
agent_ok "the next backup succeeds" backup --vm lost1 --json "$D0" "$D1"
B3=$(jqa .backup_id)
is "$(jqa '.disks[0].mode')" incremental "disk 0 is incremental"
is "$(jqa '.disks[0].bytes_written')" $((128 * 1024)) "disk 0 copies what changed since the last good backup"
api GET "/api/v1/backups/$B3"
is "$(jqb '[.disks[].parent_backup_id] | join(",")')" "$B1,$B1" "both disks build on the last good backup"
snapshot "$D0" "$T/p3-0.raw"
restore_is "$B3" 0 "$T/p3-0.raw" "disk 0 restores bit-identical"
restore_is "$B3" 1 "$D1" "disk 1 restores bit-identical"
restore_is "$B1" 0 "$T/p1-0.raw" "the first point still restores (disk 0)"
restore_is "$B1" 1 "$T/p1-1.raw" "the first point still restores (disk 1)"

no_qemu_nbd "no qemu-nbd is left behind"
done_testing
