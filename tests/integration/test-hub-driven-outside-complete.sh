#!/usr/bin/env bash
# test-hub-driven-outside-complete.sh - only the hub's workers complete the
# disks of a hub-driven job.  A client's POST .../complete of such a disk,
# while the worker still copies it, is a 409 conflict that changes nothing:
# the copy goes on, the job completes by itself, and the point restores
# exactly as the source.  (Found by the soak test: the hub answered 200,
# recorded the half-copied disk completed, left the job finishing for good,
# and the point restored different from its source.)

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-storage-daemon nbdinfo nbdcopy jq curl cmp

SRC=$T/src.raw
truncate -s 32M "$SRC"
dd if=/dev/urandom of="$SRC" bs=1M count=16 seek=4 conv=notrunc status=none
SOCK=$T/src.sock
throttled_source "$SRC" "$SOCK" $((3 * MiB))
ok "a throttled NBD source serves the disk" nbdinfo --size "nbd+unix:///src?socket=$SOCK"

start_hub
api PUT /api/v1/vms/oc1 "$(jq -cn --arg s "nbd+unix:///src?socket=$SOCK" \
  '{disks:[{disk_index:0,size_bytes:33554432,source:$s}]}')"
is "$API_STATUS" 201 "a VM whose disk is the throttled NBD source"
api POST /api/v1/backups '{"vm_name":"oc1","backup_type":"full"}'
is "$API_STATUS" 201 "its hub-driven backup starts"
B=$(jqb .backup_id)

copying ()
{
  hub_get "/api/v1/backups/$B" |
    jq -e '.disks[0].progress | . != null and .bytes_done > 0 and .bytes_done < .bytes_total' \
    > /dev/null
}
ok "the copy is under way" wait_for 30 copying

api POST "/api/v1/backups/$B/complete" '{"disk_id":0}'
is_error 409 conflict "a client's complete of the disk the hub copies is a conflict"
like "$(jqb .error.message)" "hub" "the message says the hub completes it"
api GET "/api/v1/backups/$B"
is "$(jqb '.status + "/" + .disks[0].status')" running/running "the job and its disk still run"

ok "the job ends by itself" wait_for 120 job_ended "$B"
api GET "/api/v1/backups/$B"
is "$(jqb .status)" completed "completed by its worker"
api POST "/api/v1/backups/$B/complete" '{"disk_id":0}'
is_error 409 conflict "a client's complete of the completed disk is a conflict too"

api POST /api/v1/restores "{\"backup_id\":\"$B\",\"disk_index\":0}"
is "$API_STATUS" 201 "a restore export of it"
ok "it reads exactly as the source" nbdcopy "$(jqb .nbd_uri)" "$T/out.raw"
ok "byte for byte" cmp "$SRC" "$T/out.raw"
api DELETE "/api/v1/restores/$(jqb .restore_id)"

kill "$SRC_QSD_PID" 2>/dev/null
wait "$SRC_QSD_PID" 2>/dev/null
done_testing
