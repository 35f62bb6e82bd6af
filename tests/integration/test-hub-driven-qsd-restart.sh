#!/usr/bin/env bash
# test-hub-driven-qsd-restart.sh - the hub's qemu-storage-daemon dies
# (kill -9) while a hub-driven backup copies into it.  The hub starts a new
# daemon and exports the disk again under the same name; the worker copies
# the disk once more and the job completes by itself, restoring exactly as
# the source.  The source is an NBD export throttled to a few MB/s, so that
# the copy is still running when the daemon is killed.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-storage-daemon nbdinfo nbdcopy jq curl cmp

SRC=$T/src.raw
truncate -s 32M "$SRC"
dd if=/dev/urandom of="$SRC" bs=1M count=12 seek=4 conv=notrunc status=none
SOCK=$T/src.sock
throttled_source "$SRC" "$SOCK" $((3 * MiB))
ok "a throttled NBD source serves the disk" nbdinfo --size "nbd+unix:///src?socket=$SOCK"

start_hub
api PUT /api/v1/vms/qr1 "$(jq -cn --arg s "nbd+unix:///src?socket=$SOCK" \
  '{disks:[{disk_index:0,size_bytes:33554432,source:$s}]}')"
is "$API_STATUS" 201 "a VM whose disk is the throttled NBD source"
api POST /api/v1/backups '{"vm_name":"qr1","backup_type":"full"}'
is "$API_STATUS" 201 "its hub-driven backup starts"
B=$(jqb .backup_id)

# copying: the disk's progress shows bytes done, short of the total.
copying ()
{
  curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups/$B" |
    jq -e '.disks[0].progress | . != null and .bytes_done > 0 and .bytes_done < .bytes_total' \
    > /dev/null
}
ok "the copy is under way" wait_for 30 copying
old=$(qsd_pids)
ok "kill -9 the hub's qemu-storage-daemon mid-copy" kill -KILL "$old"

ok "the job ends by itself" wait_for 120 job_ended "$B"
api GET "/api/v1/backups/$B"
is "$(jqb .status)" completed "completed, after copying again"
like "$(cat "$HUB_LOG")" "storage daemon was restarted during the copy; copying again" \
     "the hub says it copied again"

api POST /api/v1/restores "{\"backup_id\":\"$B\",\"disk_index\":0}"
is "$API_STATUS" 201 "a restore export of it"
ok "it reads exactly as the source" nbdcopy "$(answer_uri)" "$T/out.raw"
ok "byte for byte" cmp "$SRC" "$T/out.raw"
api DELETE "/api/v1/restores/$(jqb .restore_id)"

kill "$SRC_QSD_PID" 2>/dev/null
wait "$SRC_QSD_PID" 2>/dev/null
done_testing
