#!/usr/bin/env bash
# test-libvirt-hub.sh - hub-driven backups of a libvirt domain: the VM's
# inventory source is libvirt://DOMAIN (the hub's --libvirt-uri), resolved
# to the domain's writable disks at each backup.  A full and an incremental
# restore bit-identical; a disk added later becomes a new disk of the
# chain; an unknown domain is refused and changes nothing.

source "$(dirname "$0")/../functions.sh"
source "$top/tests/lib/libvirt.sh"
requires qemu-img qemu-io jq curl cmp
start_libvirtd
start_hub --libvirt-uri "$LIBVIRT_URI"

DOM=${LV_PREFIX}h
qemu-img create -q -f qcow2 "$T/a.qcow2" 32M
qemu-img create -q -f qcow2 "$T/b.qcow2" 16M
ref_image "$T/ref-a" 32M
ref_image "$T/ref-b" 16M
ok "the domain is defined" define_domain "$DOM" "$T/a.qcow2" "$T/b.qcow2"
ok "and started" lv_virsh start "$DOM"

api PUT "/api/v1/vms/$DOM" "$(jq -cn --arg s "libvirt://$DOM" \
  '{disks:[{disk_index:0,size_bytes:512,source:$s}]}')"
is "$API_STATUS" 201 "PUT a VM whose source is the libvirt domain" || bail_out "PUT refused: $(jqb .)"

# hub_backup DESC: POST a backup of the VM and wait until the hub ended it;
# one test that it completed.  Sets BID and JOB.
hub_backup ()
{
  api POST /api/v1/backups "$(jq -cn --arg v "$DOM" '{vm_name:$v, backup_type:"incremental"}')"
  BID=$(jqb .backup_id)
  wait_for 60 job_ended "$BID"
  JOB=$(curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups/$BID")
  is "$(jq -r .status <<< "$JOB")" completed "$1" || diag "$JOB"
}

guest_write_ref "$DOM" vda "$T/ref-a" 0x11 1M 2M
guest_write_ref "$DOM" vdb "$T/ref-b" 0x22 3M 1M
hub_backup "the hub backs the domain up by itself"
is "$(jq -r '.disks | length' <<< "$JOB")" 2 "the domain's two disks"
is "$(jq -r '.disks[0].change_id' <<< "$JOB")" "strata-$BID:vda" "vda's change id names the checkpoint and the target"
restore_is "$BID" 0 "$T/ref-a" "vda restores bit-identical"
restore_is "$BID" 1 "$T/ref-b" "vdb restores bit-identical"
B1=$BID

guest_write_ref "$DOM" vda "$T/ref-a" 0x33 20M 64k
hub_backup "the hub's incremental"
is "$(jq -r '[.disks[].backup_type] | join(",")' <<< "$JOB")" "incremental,incremental" "both disks incremental"
is "$(jq -r '.disks[0].bytes_transferred' <<< "$JOB")" 65536 "vda: only the change is written"
restore_is "$BID" 0 "$T/ref-a" "vda's incremental restores bit-identical"
is "$(checkpoints_of "$DOM")" "strata-$BID" "the previous checkpoint is deleted"

qemu-img create -q -f qcow2 "$T/c.qcow2" 16M
ok "a disk is attached" lv_virsh attach-disk "$DOM" "$T/c.qcow2" vdc --driver qemu --subdriver qcow2 --targetbus virtio --persistent
ref_image "$T/ref-c" 16M
guest_write_ref "$DOM" vdc "$T/ref-c" 0x44 2M 1M
hub_backup "the backup after a disk was added"
is "$(jq -r '[.disks[].backup_type] | join(",")' <<< "$JOB")" "incremental,incremental,full" "the new disk is a new disk of the chain, in full"
restore_is "$BID" 2 "$T/ref-c" "it restores bit-identical"

api PUT "/api/v1/vms/${LV_PREFIX}none" '{"disks":[{"disk_index":0,"size_bytes":512,"source":"libvirt://'"${LV_PREFIX}"'none"}]}'
api POST /api/v1/backups "$(jq -cn --arg v "${LV_PREFIX}none" '{vm_name:$v, backup_type:"full"}')"
is "$API_STATUS" 400 "a backup of an unknown domain is refused"
like "$(jqb .error.message)" "no domain" "saying so"

done_testing
