#!/usr/bin/env bash
# test-libvirt-two-vms.sh - two running libvirt domains backed up at once by
# two `strata backup --libvirt` runs: each gets its own job, export folder
# and checkpoint, both incrementals restore bit-identical, and neither
# touches a checkpoint strata did not make.

source "$(dirname "$0")/../functions.sh"
source "$top/tests/lib/libvirt.sh"
requires qemu-img qemu-io jq cmp
start_libvirtd
start_hub

for v in x y; do
  qemu-img create -q -f qcow2 "$T/$v.qcow2" 32M
  ref_image "$T/ref-$v" 32M
  ok "domain $v is defined" define_domain "${LV_PREFIX}$v" "$T/$v.qcow2"
  ok "and started" lv_virsh start "${LV_PREFIX}$v"
done
# A checkpoint someone else made on x: never touched.
cat > "$T/own.xml" <<EOF2
<domaincheckpoint><name>theirs</name><disks><disk name='vda' checkpoint='bitmap'/></disks></domaincheckpoint>
EOF2
ok "a foreign checkpoint is made on x" lv_virsh checkpoint-create "${LV_PREFIX}x" "$T/own.xml"

# both DESC: back both domains up at once; BX and BY get the backup ids.
both ()
{
  local v
  for v in x y; do
    "$STRATA" backup --hub "http://127.0.0.1:$HUB_PORT" --libvirt "${LV_PREFIX}$v" \
      --connect "$LIBVIRT_URI" --json > "$T/$v.out" 2> "$T/$v.err" &
    eval "P$v=\$!"
  done
  wait "$Px"; local rx=$?
  wait "$Py"; local ry=$?
  is "$rx,$ry" "0,0" "$1"
  [ "$rx,$ry" = "0,0" ] || diag "$(cat "$T/x.err" "$T/y.err")"
  BX=$(jq -r .backup_id "$T/x.out")
  BY=$(jq -r .backup_id "$T/y.out")
}

guest_write_ref "${LV_PREFIX}x" vda "$T/ref-x" 0x11 1M 2M
guest_write_ref "${LV_PREFIX}y" vda "$T/ref-y" 0x22 3M 2M
both "two fulls at once succeed"
restore_is "$BX" 0 "$T/ref-x" "x restores bit-identical"
restore_is "$BY" 0 "$T/ref-y" "y restores bit-identical"

guest_write_ref "${LV_PREFIX}x" vda "$T/ref-x" 0x33 10M 64k
guest_write_ref "${LV_PREFIX}y" vda "$T/ref-y" 0x44 20M 64k
both "two incrementals at once succeed"
is "$(jq -r '.disks[0].mode' "$T/x.out"),$(jq -r '.disks[0].mode' "$T/y.out")" \
   "incremental,incremental" "both are incrementals"
is "$(jq -r '.disks[0].bytes_read' "$T/x.out")" 65536 "x reads only its own changes"
restore_is "$BX" 0 "$T/ref-x" "x's incremental restores bit-identical"
restore_is "$BY" 0 "$T/ref-y" "y's incremental restores bit-identical"
is "$(checkpoints_of "${LV_PREFIX}x" | tr '\n' ' ')" "strata-$BX theirs " \
   "x keeps the foreign checkpoint and strata's latest"
is "$(checkpoints_of "${LV_PREFIX}y")" "strata-$BY" "y has strata's latest only"

done_testing
