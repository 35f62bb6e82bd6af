#!/usr/bin/env bash
# test-inventory.sh - the VM inventory: PUT creates (201) or replaces (200) a
# VM with its whole disk list, GET/list/DELETE; names are free text (spaces,
# UTF-8), percent-encoded in URLs and never used as paths; a backup with inline
# disks creates or updates the inventory.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl sqlite3

SIZE=$((64 * MiB))
start_hub
REPO=$DATA/repository
V=/api/v1/vms

api PUT $V/inv1 "{\"vmware_vm_id\":\"vm-42\",\"vm_path\":\"[ds1] inv1/inv1.vmx\",\"vcenter_host\":\"vc.example\",\"datacenter\":\"dc1\",\"disks\":[{\"disk_index\":0,\"size_bytes\":$SIZE,\"vmware_disk_key\":2000,\"unit_number\":0,\"source\":\"/vmfs/volumes/ds1/inv1/inv1.vmdk\"},{\"disk_index\":1,\"size_bytes\":$((2 * SIZE))}]}"
is "$API_STATUS" 201 "PUT a new VM: 201"
is "$(jqb '[.vm_name, .vmware_vm_id, .vm_path, .vcenter_host, .datacenter] | join("|")')" "inv1|vm-42|[ds1] inv1/inv1.vmx|vc.example|dc1" "the VM's fields"
is "$(jqb '[.disks[] | [.disk_index, .size_bytes, .vmware_disk_key, .unit_number, .source] | map(tostring) | join(",")] | join(" ")')" \
   "0,$SIZE,2000,0,/vmfs/volumes/ds1/inv1/inv1.vmdk 1,$((2 * SIZE)),null,null,null" "its disks, absent fields null"
like "$(jqb .created_at)" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$' "created_at is a UTC time"
is "$(sql "SELECT count(*) FROM vm_disks")" 2 "two vm_disks rows"

api GET $V/inv1
is "$API_STATUS/$(jqb '.disks | length')/$(jqb .vmware_vm_id)" "200/2/vm-42" "GET the VM"

# A source is an absolute path or an nbd:// / nbd+unix:// URI; nothing else.
for src in '[ds1] inv1/inv1.vmdk' 'disk.qcow2' 'http://x/disk' 'nbds://h/e'; do
  api PUT $V/inv1 "$(jq -cn --arg s "$src" '{disks:[{disk_index:0,size_bytes:1048576,source:$s}]}')"
  is_error 400 invalid_request "PUT with source '$src': 400"
done
api GET $V/inv1
is "$(jqb '.disks[0].source')" "/vmfs/volumes/ds1/inv1/inv1.vmdk" "the refused PUTs changed nothing"
for src in 'nbd://127.0.0.1:10809/e' 'nbd+unix:///e?socket=/run/s'; do
  api PUT $V/inv2 "$(jq -cn --arg s "$src" '{disks:[{disk_index:0,size_bytes:1048576,source:$s}]}')"
  like "$API_STATUS" '^20[01]$' "PUT with source '$src' is taken"
done
api DELETE $V/inv2

api PUT $V/inv1 "{\"disks\":[{\"disk_index\":3,\"size_bytes\":$SIZE}]}"
is "$API_STATUS" 200 "PUT it again: 200 (replaced)"
is "$(jqb '[.disks[].disk_index] | join(",")')" 3 "the disk list is replaced whole"
is "$(jqb .vmware_vm_id)" "" "omitted fields become empty"
api GET $V/inv1
is "$(jqb '[.disks[] | "\(.disk_index):\(.size_bytes)"] | join(",")')" "3:$SIZE" "GET shows the new disk list"
is "$(sql "SELECT count(*) FROM vm_disks")" 1 "one vm_disks row left"

api GET $V
is "$API_STATUS/$(jqb '[.vms[].vm_name] | join(",")')" "200/inv1" "the list holds the VM"

api DELETE $V/inv1
is "$API_STATUS" 204 "DELETE the VM: 204"
api GET $V/inv1
is_error 404 not_found "GET it afterwards: 404"
api DELETE $V/inv1
is_error 404 not_found "DELETE it again: 404"
is "$(sql "SELECT count(*) FROM vms")|$(sql "SELECT count(*) FROM vm_disks")" "0|0" "no VM and no disk rows left"

# --- A free-text name: spaces and UTF-8.
NAME='My VM – ünïcødé 日本 (prod) #1 %41 ?x=1 & "q"'
ENC=$(urlencode "$NAME")
api PUT "$V/$ENC" "$(vm_json $SIZE $SIZE)"
is "$API_STATUS" 201 "PUT a VM named with spaces, UTF-8 and URL characters: 201"
is "$(jqb .vm_name)" "$NAME" "the name comes back byte for byte"
api GET "$V/$ENC"
is "$API_STATUS/$(jqb .vm_name)" "200/$NAME" "GET by the percent-encoded name"
is "$(sql "SELECT vm_name FROM vms")" "$NAME" "the catalog stores the name as is"
api GET $V
is "$(jqb '[.vms[].vm_name] | join(",")')" "$NAME" "the list shows it"

start_backup "$NAME" full
U=$BID
is "$(jqb .vm_name)" "$NAME" "a backup of it carries the name"
like "$U" '^[A-Za-z0-9._-]{1,128}$' "its backup_id is a safe id"
like "$CTX" '^[A-Za-z0-9._-]{1,128}$' "its context_id is a safe id"
for i in 0 1; do
  like "${QCOW2[$i]}" "^$REPO/[A-Za-z0-9._-]+/disk$i/[A-Za-z0-9._-]+\\.qcow2\$" "disk $i: the file path is made of ids only"
done
is "$(find "$REPO" -name '*[!A-Za-z0-9._-]*' | wc -l)" 0 "no file or folder in the repository takes the name"
write_ok "${NBD_URI[0]}" 0x11 0 1M
complete_disk "$U" 0 U0 1
complete_disk "$U" 1 U1 1
ok "the data is there" qio -r -f qcow2 -c 'read -P 0x11 0 1M' "${QCOW2[0]}"
api GET "/api/v1/backups/changeid?vm_name=$ENC&disk_id=1"
is "$API_STATUS/$(jqb .vm_name)/$(jqb .change_id)/$(jqb .backup_id)" "200/$NAME/U1/$U" "changeid by the encoded name"
api GET "/api/v1/backups?vm_name=$ENC"
is "$(jqb .total)/$(jqb '.backups[0].backup_id')" "1/$U" "listing filtered by the encoded name"
api GET "/api/v1/contexts?vm_name=$ENC"
is "$(jqb '.contexts | length')/$(jqb '.contexts[0].vm_name')" "1/$NAME" "contexts filtered by the encoded name"
# A name that differs only by case or a trailing character is another VM.
api GET "$V/$(urlencode "${NAME}x")"
is_error 404 not_found "a longer name is another (unknown) VM"

# Deleting the VM keeps its backups and context.
api DELETE "$V/$ENC"
is "$API_STATUS" 204 "DELETE the UTF-8 VM: 204"
api GET "/api/v1/backups/$U"
is "$API_STATUS/$(jqb .status)" "200/completed" "its backup stays"
api GET "/api/v1/contexts/$CTX"
is "$API_STATUS" 200 "its context stays"

# --- Backups with inline disks create and update the inventory.
api GET $V/inl1
is "$API_STATUS" 404 "inl1 is not in the inventory"
start_backup inl1 full "\"disks\":[{\"disk_index\":0,\"size_bytes\":$SIZE,\"vmware_disk_key\":2000,\"unit_number\":0}]"
X=$BID
is "$(jqb '[.disks[] | "\(.disk_index):\(.size_bytes):\(.vmware_disk_key)"] | join(",")')" "0:$SIZE:2000" "the job has the inline disk"
api GET $V/inl1
is "$API_STATUS/$(jqb '[.disks[] | "\(.disk_index):\(.size_bytes)"] | join(",")')" "200/0:$SIZE" "the inline disks created the VM in the inventory"
complete_disk "$X" 0 X0 1
start_backup inl1 incremental "\"disks\":[{\"disk_index\":0,\"size_bytes\":$SIZE},{\"disk_index\":1,\"size_bytes\":$SIZE}]"
is "$(jqb '.disks | length')" 2 "an incremental with two inline disks has two disks"
api GET $V/inl1
is "$(jqb '[.disks[].disk_index] | join(",")')" "0,1" "and replaced the inventory's disk list"
is "$(sql "SELECT count(*) FROM vm_disks")" 2 "two vm_disks rows for inl1"

# Repositories of type nfs and cifs: the folder where the share is mounted
# (an existing folder here stands in for a mount point), kept as the hub
# keeps a local one.
mkdir "$T/nfs-mnt" "$T/cifs-mnt"
for t in nfs cifs; do
  api POST /api/v1/repositories "{\"id\":\"r-$t\",\"name\":\"$t share\",\"type\":\"$t\",\"path\":\"$T/$t-mnt\"}"
  is "$API_STATUS/$(jqb .type)/$(jqb .path)" "201/$t/$T/$t-mnt" "a $t repository on its mounted folder: 201, with its type"
done
is "$(sql "SELECT type FROM backup_repositories WHERE id LIKE 'r-%' ORDER BY id" | paste -sd,)" \
   "cifs,nfs" "the catalog holds both types"
start_backup inl1 full '"repository_id":"r-nfs"'
complete_disk "$BID" 0 N0 1
complete_disk "$BID" 1 N1 1
is "$(jqb .job_status)" completed "a backup into the nfs repository completes"
like "${QCOW2[0]}" "^$T/nfs-mnt/ctx-" "its disk's file is in the share's folder"
ok "and exists there" test -f "${QCOW2[0]}"

done_testing
