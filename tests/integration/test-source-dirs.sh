#!/usr/bin/env bash
# test-source-dirs.sh - --source-dirs limits what hub-driven backups may read:
# an inventory source outside those folders (also through a symbolic link)
# is refused with 400 and nothing is stored; one inside is backed up; a
# restart with other folders refuses the same VM's backup, recording
# nothing.  Bad values stop start-up.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl

mkdir -p "$T/allowed" "$T/other" "$T/elsewhere"
qemu-img create -q -f qcow2 "$T/allowed/d0.qcow2" 16M
qemu-io -f qcow2 -c 'write -P 0x41 0 1M' "$T/allowed/d0.qcow2" > /dev/null
qemu-img create -q -f qcow2 "$T/other/secret.qcow2" 16M
ln -s "$T/other/secret.qcow2" "$T/allowed/link.qcow2"

# Bad values are usage errors, and the hub does not start.
for bad in "relative/dir" "$T/allowed:" "$T/missing"; do
  out=$("$STRATA" serve --data-dir "$T/bad" --source-dirs "$bad" 2>&1 < /dev/null)
  rc=$?
  isnt "$rc" 0 "--source-dirs '$bad' stops start-up"
  like "$out" "source-dirs" "and says which option"
done

start_hub --source-dirs "$T/allowed:$T/elsewhere"
put_source () # VM SOURCE
{
  api PUT "/api/v1/vms/$1" "$(jq -cn --arg s "$2" '{disks:[{disk_index:0,size_bytes:16777216,source:$s}]}')"
}

put_source sd1 "$T/other/secret.qcow2"
is "$API_STATUS" 400 "a source outside --source-dirs is refused"
like "$(jqb .error.message)" "outside the folders" "with the reason"
api GET /api/v1/vms/sd1
is "$API_STATUS" 404 "and nothing is stored"

put_source sd1 "$T/allowed/link.qcow2"
is "$API_STATUS" 400 "a symbolic link inside that leads outside is refused"

put_source sd1 "$T/allowed/../other/secret.qcow2"
is "$API_STATUS" 400 "a '..' path that leads outside is refused"

put_source sd1 "$T/allowed/d0.qcow2"
is "$API_STATUS" 201 "a source inside is taken"
api POST /api/v1/backups '{"vm_name":"sd1","backup_type":"full"}'
is "$API_STATUS" 201 "its hub-driven backup starts"
B=$(jqb .backup_id)
ok "and completes" wait_for 60 eval \
  "curl -s http://127.0.0.1:\$HUB_PORT/api/v1/backups/$B | jq -e '.status == \"completed\"' > /dev/null"

# Restarted with other folders, the same inventory may not be read.
stop_hub
start_hub --source-dirs "$T/elsewhere"
api POST /api/v1/backups '{"vm_name":"sd1","backup_type":"incremental"}'
is "$API_STATUS" 400 "after a restart with other --source-dirs the backup is refused"
like "$(jqb .error.message)" "outside the folders" "with the reason"
api GET "/api/v1/backups?vm_name=sd1"
is "$(jqb .total)" 1 "and no job is recorded"

# NBD URIs are not paths: --source-dirs does not apply to them.
put_source sd2 "nbd+unix:///?socket=$T/nowhere.sock"
is "$API_STATUS" 201 "an NBD URI source is taken"

done_testing
