#!/usr/bin/env bash
# test-agent-chain.sh - `strata backup` and `strata restore` over a 2-disk VM
# made of QCOW2 images: a full; writes, a discard and a disk resize, then an
# incremental that writes only the dirty data (and the discarded range as
# zeroes); an incremental after a bitmap was deleted, which copies that disk
# in full into its overlay and says why.  Every point is restored (raw and
# qcow2, and through --export) and compared with a copy of the source saved
# at that point.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-nbd nbdcopy nbdinfo jq curl cmp

start_hub
D0=$T/vm-disk0.qcow2
D1=$T/vm-disk1.qcow2
qemu-img create -q -f qcow2 "$D0" 64M
qemu-img create -q -f qcow2 "$D1" 32M
qemu-io -f qcow2 -c 'write -P 0x11 0 4M' -c 'write -P 0x12 30M 1M' -c 'write -P 0x13 63M 1M' "$D0" > /dev/null
qemu-io -f qcow2 -c 'write -P 0x21 1M 2M' -c 'write -z 8M 1M' "$D1" > /dev/null

# --- 1. The first backup: full (auto, no chain yet).
agent_ok "the first backup succeeds" backup --vm chain1 --json "$D0" "$D1"
B1=$(jqa .backup_id)
is "$(jqa .status)" completed "it reports the job completed"
is "$(jqa '[.disks[].mode] | join(",")')" "full,full" "both disks are copied in full"
is "$(jqa '.disks[0].bytes_written')" $((6 * MiB)) "disk 0: only its data is written"
is "$(jqa '.disks[0].change_id')" "$B1" "disk 0's change id is the new bitmap, named after the backup"
api GET "/api/v1/backups/$B1"
is "$(jqb .status)" completed "the hub has the job completed"
is "$(jqb .backup_type)" full "--type auto with no chain yet asks for a full job"
is "$(jqb '[.disks[].change_id] | join(",")')" "$B1,$B1" "with each disk's change id"
is "$(bitmaps_of "$D0")" "$B1" "disk 0 holds one bitmap, the backup's"
snapshot "$D0" "$T/p1-0.raw"
snapshot "$D1" "$T/p1-1.raw"

# --- 2. Writes, a discard, a resize; an incremental.
qemu-io -f qcow2 -c 'write -P 0x31 2M 64k' -c 'write -P 0x32 40M 192k' -c 'discard 30M 1M' "$D0" > /dev/null
qemu-img resize -q "$D1" 48M
qemu-io -f qcow2 -c 'write -P 0x41 40M 1M' -c 'write -P 0x42 1M 64k' "$D1" > /dev/null
agent_ok "the incremental succeeds" backup --vm chain1 --json "$D0" "$D1"
B2=$(jqa .backup_id)
is "$(jqa '[.disks[].mode] | join(",")')" "incremental,incremental" "both disks copy only what changed"
is "$(jqa '.disks[0].bytes_written')" $((256 * 1024)) "disk 0: the dirty data is written, no more"
is "$(jqa '.disks[0].bytes_zero')" $((1 * MiB)) "disk 0: the discarded MiB is written as zeroes"
is "$(jqa '.disks[0].bytes_read')" $((256 * 1024)) "disk 0: only dirty data is read"
api GET "/api/v1/backups/$B2"
is "$(jqb .backup_type)" incremental "--type auto on a chain asks for an incremental job"
is "$(jqb '.disks[1].size_bytes')" $((48 * MiB)) "disk 1's backup has the new size"
is "$(jqb '.disks[0].parent_backup_id')" "$B1" "disk 0's overlay builds on the full"
OV=$(jqb '.disks[0].qcow2_path')
is "$(overlay_data "$OV")" $((256 * 1024)) "disk 0's overlay holds the dirty data only"
is "$(bitmaps_of "$D0")" "$B2" "the older bitmap is removed once the job completed"
snapshot "$D0" "$T/p2-0.raw"
snapshot "$D1" "$T/p2-1.raw"

# --- 3. A lost bitmap: disk 0 in full, with the reason; disk 1 incremental.
qemu-io -f qcow2 -c 'write -P 0x51 10M 64k' "$D0" > /dev/null
qemu-io -f qcow2 -c 'write -P 0x52 20M 64k' "$D1" > /dev/null
qemu-img bitmap --remove "$D0" "$B2"
agent_ok "the incremental after a bitmap was deleted succeeds" backup --vm chain1 --json "$D0" "$D1"
B3=$(jqa .backup_id)
is "$(jqa '[.disks[].mode] | join(",")')" "full,incremental" "disk 0 falls back to a full copy, disk 1 does not"
like "$(jqa '.disks[0].full_reason')" "bitmap $B2 .* missing" "the summary says why"
api GET "/api/v1/backups/$B3"
like "$(jqb '.disks[0].full_reason')" "bitmap $B2 .* missing" "the hub records why"
is "$(jqb '.disks[0].backup_type')" incremental "disk 0 is still an overlay of the chain"
snapshot "$D0" "$T/p3-0.raw"
snapshot "$D1" "$T/p3-1.raw"

# --- Every point comes back bit-identical.
for p in 1 2 3; do
  eval "bid=\$B$p"
  restore_is "$bid" 0 "$T/p$p-0.raw" "point $p, disk 0 restores bit-identical (raw)"
  restore_is "$bid" 1 "$T/p$p-1.raw" "point $p, disk 1 restores bit-identical (raw)"
done
restore_is "$B2" 1 "$T/p2-1.raw" "point 2, disk 1 restores bit-identical (qcow2)" qcow2

# A raw restore stays sparse.
agent_ok "restore to a raw file" restore --backup "$B3" --disk 0 --output "$T/sparse.raw"
cmp_ok "$(( $(stat -c %b "$T/sparse.raw") * 512 ))" -lt $((16 * MiB)) \
       "the raw restore is sparse (64 MiB disk, 6 MiB of data)"

# --- --export: any NBD tool reads the point while the command runs.
"$STRATA" restore --hub "http://127.0.0.1:$HUB_PORT" --backup "$B2" --disk 0 --export \
  > "$T/export.out" 2> "$T/export.err" &
EXP=$!
ok "restore --export prints an NBD URI" wait_for 30 grep -q '^nbd' "$T/export.out"
URI=$(head -n1 "$T/export.out")
ok "the export reads the point with nbdcopy" nbdcopy "$URI" "$T/exported.raw"
ok "and it equals the source at that point" cmp "$T/p2-0.raw" "$T/exported.raw"
nok "the export is read-only" qemu-io -f raw -c 'write 0 64k' "$URI"
api GET /api/v1/restores
is "$(jqb '.restores | length')" 1 "the hub lists the restore export"
kill -INT $EXP
wait $EXP
is "$?" 0 "restore --export ends with exit 0 on Ctrl-C"
ok "and its export is gone" export_gone "$URI"
api GET /api/v1/restores
is "$(jqb '.restores | length')" 0 "the hub lists no restore export"

# --- --export --json: one JSON object, whatever the key file's path holds.
mkdir -p "$T/tmp \"q"
TMPDIR="$T/tmp \"q" "$STRATA" restore --hub "http://127.0.0.1:$HUB_PORT" --backup "$B2" \
  --disk 0 --export --json > "$T/export.json" 2> "$T/export.err" &
EXP=$!
ok "restore --export --json prints its line" wait_for 30 grep -q restore_id "$T/export.json"
ok "... which is JSON, with the restore's id" \
   eval "jq -e '.restore_id | startswith(\"restore-\")' '$T/export.json'"
kill -INT $EXP
wait $EXP
is "$?" 0 "restore --export --json ends with exit 0 on Ctrl-C"

# --- A progress line per disk without a terminal.
qemu-io -f qcow2 -c 'write -P 0x61 0 64k' "$D0" > /dev/null
agent_ok "a backup without --json" backup --vm chain1 "$D0" "$D1"
like "$AGENT_ERR" "disk 0: incremental, 64.0 KiB written" "prints a line for disk 0 when it is done"
like "$AGENT_ERR" "disk 1: incremental" "and one for disk 1"
like "$AGENT_OUT" "^backup backup-.* completed$" "and the completed backup on stdout"

# --- On a terminal: a live bar per disk, with bytes, rate and ETA.  script(1)
# gives the agent a pseudo-terminal; its output is what a user would see.
qemu-io -f qcow2 -c 'write -P 0x62 8M 2M' "$D0" > /dev/null
script -qec "$STRATA backup --hub http://127.0.0.1:$HUB_PORT --vm chain1 $D0 $D1" \
  "$T/tty.log" > /dev/null 2>&1 < /dev/null
is "$?" 0 "a backup on a terminal succeeds"
TTY_OUT=$(tr -d '\r' < "$T/tty.log")
like "$TTY_OUT" 'disk 0 +\[[#=> -]*\] +[0-9]+%' "it draws a bar for disk 0"
like "$TTY_OUT" 'disk 1 +\[' "and one for disk 1"
like "$TTY_OUT" '/s ETA ' "with the rate and the ETA"

# --- A new full replaces the chain: no bitmap of the old chain stays behind.
agent_ok "a full backup after the chain" backup --vm chain1 --type full --json "$D0" "$D1"
BF=$(jqa .backup_id)
is "$(bitmaps_of "$D0")" "$BF" "disk 0 holds only the new full's bitmap"
is "$(bitmaps_of "$D1")" "$BF" "disk 1 holds only the new full's bitmap"
agent_ok "an incremental builds on it" backup --vm chain1 --json "$D0" "$D1"
is "$(jqa '[.disks[].mode] | join(" ")')" "incremental incremental" "both disks incremental"

no_qemu_nbd "no qemu-nbd is left behind"
done_testing
