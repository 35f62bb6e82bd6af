#!/usr/bin/env bash
# test-restore-api.sh - /api/v1/restores: a read-only NBD export of a
# completed disk's point in time (its QCOW2 file read through its backing
# chain).  What it reads equals the disk at that backup; it can't be written;
# while it is open, nothing that would delete an image of its chain (the
# backup, a cascade from below, the context) goes through; it survives a
# storage daemon restart and ends with the hub.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo nbdcopy jq curl sqlite3 cmp

SIZE=$((64 * MiB))
start_hub

put_vm rs1 $SIZE $SIZE
ref_image "$T/ref0.raw" $SIZE
ref_image "$T/ref1.raw" $SIZE

# A full, then an incremental on top of it.
start_backup rs1 full
F=$BID; CTX_F=$CTX
write_ok "${NBD_URI[0]}" 0x11 0 4M
ref_write "$T/ref0.raw" 0x11 0 4M
write_ok "${NBD_URI[1]}" 0x22 1M 2M
ref_write "$T/ref1.raw" 0x22 1M 2M
cp "$T/ref1.raw" "$T/ref1-full.raw"
complete_disk "$F" 0 F0 4194304
complete_disk "$F" 1 F1 2097152

start_backup rs1 incremental
I=$BID
write_ok "${NBD_URI[0]}" 0x33 2M 1M
ref_write "$T/ref0.raw" 0x33 2M 1M
write_ok "${NBD_URI[1]}" 0x44 8M 1M
ref_write "$T/ref1.raw" 0x44 8M 1M
complete_disk "$I" 0 I0 1048576
complete_disk "$I" 1 I1 1048576
is "$(jqb .job_status)" completed "the incremental is completed"

# --- Open a restore of the incremental's disk 0 ----------------------------
api POST /api/v1/restores "{\"backup_id\":\"$I\",\"disk_index\":0}"
is "$API_STATUS" 201 "POST /restores: 201"
R1=$(jqb .restore_id)
U1=$(answer_uri)
like "$R1" '^restore-[A-Za-z0-9._-]+$' "restore_id is an id"
is "$(jqb '[.backup_id, .disk_index, .size_bytes] | map(tostring) | join(" ")')" \
   "$I 0 $SIZE" "backup_id, disk_index and size_bytes"
like "$(jqb .nbd_uri)" "^nbds://restore-$R1@127\.0\.0\.1:$NBD_PORT/strata-[0-9a-f]{32}$" \
     "nbd_uri names the restore's identity and a random export"
like "$(jqb .created_at)" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' "created_at is a time"

ok "the export serves" export_up "$U1"
is "$(nbdinfo --size "$U1")" "$SIZE" "the export has the disk's size"
ok "nbdcopy reads it out" nbdcopy "$U1" "$T/out0.raw"
ok "what it reads equals the disk at the incremental (chain read through)" \
   cmp "$T/ref0.raw" "$T/out0.raw"
ok "qemu-img compare agrees" qimg compare -q -f raw -F raw "$T/ref0.raw" "$U1"
ok "the export is flagged read-only" eval "nbdinfo --json '$U1' | jq -e '.exports[0].\"is_read_only\" == true'"
nok "a write into the export fails" qio -f raw -c 'write -P 0x99 0 64k' "$U1"
ok "and changed nothing" qimg compare -q -f raw -F raw "$T/ref0.raw" "$U1"

api GET /api/v1/restores
is "$API_STATUS/$(jqb '[.restores[].restore_id] | join(",")')" "200/$R1" "GET /restores lists it"
api GET "/api/v1/restores/$R1"
is "$API_STATUS/$(jqb .nbd_uri)" "200/${U1%%\?*}" "GET /restores/{id}"

# --- While it is open, its chain can't be deleted --------------------------
before="$(catalog_counts) $(repo_listing)"
api DELETE "/api/v1/backups/$I"
is_error 409 conflict "DELETE the restored backup: 409"
like "$(jqb .error.message)" "$R1" "the message names the restore"
api DELETE "/api/v1/backups/$F?cascade=true"
is_error 409 conflict "DELETE the full below it with cascade: 409"
api DELETE "/api/v1/contexts/$CTX_F?force=true"
is_error 409 conflict "DELETE its context even with force: 409"
is "$(catalog_counts) $(repo_listing)" "$before" "the refusals changed no row and no file"
ok "the export still serves" qimg compare -q -f raw -F raw "$T/ref0.raw" "$U1"

api DELETE "/api/v1/restores/$R1"
is "$API_STATUS" 204 "DELETE /restores/{id}: 204"
ok "its export is gone" export_gone "$U1"
api GET "/api/v1/restores/$R1"
is_error 404 not_found "GET it afterwards: 404"
api DELETE "/api/v1/restores/$R1"
is_error 404 not_found "DELETE it again: 404"

# A restore of the full's disk 1: the incremental on top of it is not in its
# chain and may go; the full itself may not.
api POST /api/v1/restores "{\"backup_id\":\"$F\",\"disk_index\":1}"
is "$API_STATUS" 201 "restore the full's disk 1"
R2=$(jqb .restore_id); U2=$(answer_uri)
ok "it reads as disk 1 was at the full" qimg compare -q -f raw -F raw "$T/ref1-full.raw" "$U2"
api DELETE "/api/v1/backups/$I"
is "$API_STATUS" 200 "the incremental above it can be deleted"
api DELETE "/api/v1/backups/$F"
is_error 409 conflict "the full itself can't"
ok "the restore still reads right" qimg compare -q -f raw -F raw "$T/ref1-full.raw" "$U2"

# --- The storage daemon restarts: the restore comes back -------------------
old=$(qsd_pids)
ok "kill -9 the qemu-storage-daemon" kill -KILL "$old"
new_daemon ()
{
  local p
  p=$(qsd_pids)
  [[ $p =~ ^[0-9]+$ ]] && [ "$p" != "$old" ]
}
ok "a new daemon starts" wait_for 20 new_daemon
ok "the restore's export comes back at the same URI" wait_for 20 export_up "$U2"
ok "and reads the same data" qimg compare -q -f raw -F raw "$T/ref1-full.raw" "$U2"
nok "still read-only after the restart" qio -f raw -c 'write -P 0x99 0 64k' "$U2"

# --- Only completed disks can be restored ----------------------------------
start_backup rs1 incremental
RUN=$BID
api POST /api/v1/restores "{\"backup_id\":\"$RUN\",\"disk_index\":0}"
is_error 409 conflict "a running disk can't be restored: 409"
api POST "/api/v1/backups/$RUN/fail" '{"disk_id":1,"error":"agent lost disk 1"}'
is "$API_STATUS" 200 "fail that backup"
api POST /api/v1/restores "{\"backup_id\":\"$RUN\",\"disk_index\":1}"
is_error 409 conflict "a failed disk can't be restored: 409"

# --- Bad input ---------------------------------------------------------------
before="$(catalog_counts) $(nbd_exports)"
api POST /api/v1/restores '{}'
is_error 400 invalid_request "no fields: 400"
api POST /api/v1/restores "{\"backup_id\":\"$F\"}"
is_error 400 invalid_request "no disk_index: 400"
api POST /api/v1/restores "{\"backup_id\":\"$F\",\"disk_index\":-1}"
is_error 400 invalid_request "a negative disk_index: 400"
api POST /api/v1/restores "{\"backup_id\":\"$F\",\"disk_index\":\"0\"}"
is_error 400 invalid_request "a string disk_index: 400"
api POST /api/v1/restores '{"backup_id":"../etc","disk_index":0}'
is_error 400 invalid_request "a malformed backup_id: 400"
api POST /api/v1/restores "{\"backup_id\":\"$F\",\"disk_index\":0,\"mode\":\"rw\"}"
is_error 400 invalid_request "an unknown field: 400"
api POST /api/v1/restores '[1]'
is_error 400 invalid_request "not an object: 400"
api POST /api/v1/restores '{"backup_id":"backup-nope","disk_index":0}'
is_error 404 not_found "an unknown backup: 404"
api POST /api/v1/restores "{\"backup_id\":\"$F\",\"disk_index\":7}"
is_error 404 not_found "an unknown disk: 404"
api GET /api/v1/restores/restore-nope
is_error 404 not_found "GET an unknown restore: 404"
api GET '/api/v1/restores?x=1'
is_error 400 invalid_request "an unknown query parameter: 400"
api PUT /api/v1/restores
is_error 405 method_not_allowed "PUT /restores: 405"
is "$(catalog_counts) $(nbd_exports)" "$before" "bad input changed nothing and exported nothing"

# --- Restores end with the hub ---------------------------------------------
api GET /healthz
S1=$(jqb .started_at)
like "$S1" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$' "healthz: started_at is a UTC time"
stop_hub
start_hub
api GET /healthz
S2=$(jqb .started_at)
like "$S2" '^[0-9]{4}-' "healthz: started_at after the restart"
ok "it is later than the first hub's" test "$S2" \> "$S1"
api GET /api/v1/restores
is "$API_STATUS/$(jqb '.restores | length')" "200/0" "no restore after a hub restart"
ok "its export is gone" export_gone "$U2"
api DELETE "/api/v1/backups/$F?cascade=true"
is "$API_STATUS" 200 "the full can be deleted now"

done_testing
