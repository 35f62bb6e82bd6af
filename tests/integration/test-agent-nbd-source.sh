#!/usr/bin/env bash
# test-agent-nbd-source.sh - `strata backup` of a disk given as an NBD URI,
# the form of libvirt's pull-mode backup exports: the owner of the disk
# manages its bitmaps (here by hand with qemu-img, as libvirt does with
# checkpoints), exports the disk read-only with the bitmap of the last
# checkpoint, and tells the agent that bitmap (--dirty-bitmap) and the new
# checkpoint's name (--change-id).  A full, then an incremental that reads
# only the dirty extents (a write and a discard), then one whose bitmap the
# export lacks (a full copy into the overlay, with the reason); each point
# restored and compared.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-nbd nbdinfo jq curl cmp

start_hub
IMG=$T/disk.qcow2
SOCK=$T/src.sock
qemu-img create -q -f qcow2 "$IMG" 64M
qemu-io -f qcow2 -c 'write -P 0x51 0 8M' -c 'write -P 0x52 40M 2M' "$IMG" > /dev/null

# serve_source [BITMAP]: export IMG read-only on SOCK, with BITMAP if given
# (not in a subshell: SRC_PID must stay set for stop_source).
SRC_PID=
serve_source ()
{
  stop_source
  rm -f "$SOCK"
  qemu-nbd -r -f qcow2 --socket "$SOCK" --persistent --shared=0 ${1:+--bitmap="$1"} "$IMG" \
    > "$T/src-nbd.log" 2>&1 &
  SRC_PID=$!
  wait_for 20 nbdinfo --size "nbd+unix:///?socket=$SOCK"
}
stop_source ()
{
  if [ -n "$SRC_PID" ]; then
    kill "$SRC_PID" 2>/dev/null
    wait "$SRC_PID" 2>/dev/null
    SRC_PID=
  fi
}
URI="nbd+unix:///?socket=$SOCK"

# --- The first checkpoint, and a full backup.
ok "checkpoint cp1 (a persistent bitmap) is added by the disk's owner" \
   qemu-img bitmap --add "$IMG" cp1
snapshot "$IMG" "$T/p1.raw"
serve_source
is "$?" 0 "the disk is exported read-only"
agent_ok "a full backup from the NBD URI" backup --vm nbd1 --json --change-id cp1 "$URI"
B1=$(jqa .backup_id)
is "$(jqa '.disks[0].mode + " " + (.disks[0].bytes_written|tostring)')" "full $((10 * MiB))" \
   "it is a full copy of the data only"
api GET "/api/v1/backups/$B1"
is "$(jqb '.disks[0].change_id')" cp1 "the hub records the given change id"
stop_source

# --- Changes; the next checkpoint; an incremental from cp1's bitmap.
qemu-io -f qcow2 -c 'write -P 0x61 4M 64k' -c 'discard 40M 1M' -c 'write -P 0x62 60M 128k' \
  "$IMG" > /dev/null
ok "checkpoint cp2 is added" qemu-img bitmap --add "$IMG" cp2
snapshot "$IMG" "$T/p2.raw"
serve_source cp1
is "$?" 0 "the disk is exported with cp1's bitmap"
agent_ok "an incremental backup from the NBD URI" \
  backup --vm nbd1 --json --dirty-bitmap cp1 --change-id cp2 "$URI"
B2=$(jqa .backup_id)
is "$(jqa '.disks[0].mode')" incremental "it is incremental"
is "$(jqa '.disks[0].bytes_written')" $((192 * 1024)) "it writes only the dirty data"
is "$(jqa '.disks[0].bytes_zero')" "$MiB" "and the discarded range as zeroes"
api GET "/api/v1/backups/$B2"
is "$(jqb '.disks[0].backup_type + " " + .disks[0].previous_change_id + " " + .disks[0].change_id')" \
   "incremental cp1 cp2" "the hub chains it on cp1 and records cp2"
stop_source
is "$(bitmaps_of "$IMG" | tr '\n' ' ')" "cp1 cp2 " "strata leaves the owner's bitmaps alone"

restore_is "$B1" 0 "$T/p1.raw" "the full restores as the disk was at cp1"
restore_is "$B2" 0 "$T/p2.raw" "the incremental restores as the disk was at cp2"

# --- A bitmap the export does not carry: the disk is copied in full into
# its overlay, and the reason is recorded; the backup is still right.
qemu-io -f qcow2 -c 'write -P 0x71 10M 64k' "$IMG" > /dev/null
snapshot "$IMG" "$T/p3.raw"
serve_source
is "$?" 0 "the disk is exported without a bitmap"
agent_ok "an incremental from a bitmap the export lacks still succeeds" \
  backup --vm nbd1 --json --dirty-bitmap cp2 --change-id cp3 "$URI"
B3=$(jqa .backup_id)
is "$(jqa '.disks[0].mode')" full "it copies the disk in full"
like "$(jqa '.disks[0].full_reason')" "cp2" "and says why, naming the bitmap"
api GET "/api/v1/backups/$B3"
is "$(jqb '.disks[0].backup_type + " " + .disks[0].previous_change_id')" "incremental cp2" \
   "into an overlay on the chain"
like "$(jqb '.disks[0].full_reason')" "cp2" "the hub records the reason"
stop_source
restore_is "$B3" 0 "$T/p3.raw" "it restores as the disk is now"
restore_is "$B2" 0 "$T/p2.raw" "and the point before it still restores"

done_testing
