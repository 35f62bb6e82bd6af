#!/usr/bin/env bash
# test-incremental-grow.sh - a disk that grew since its last backup gets an
# overlay of its new size, through which the old data still reads and the new
# area is writable; a disk added to the VM is taken as full in an incremental
# job, with full_reason set, and chains normally from then on.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo jq curl sqlite3

OLD=$((64 * MiB))
NEW=$((96 * MiB))
BIGGER=$((128 * MiB))
SMALL=$((32 * MiB))
start_hub

# The full of a 64 MiB disk: data at the start and at the very end.
put_vm g1 $OLD
start_backup g1 full; F=$BID; F_FILE=${QCOW2[0]}
write_ok "${NBD_URI[0]}" 0x11 0 1M
write_ok "${NBD_URI[0]}" 0x12 63M 1M
complete_disk "$F" 0 GF0 1

# The disk grew to 96 MiB and a second disk was added.
api PUT /api/v1/vms/g1 "{\"disks\":[{\"disk_index\":0,\"size_bytes\":$NEW},{\"disk_index\":1,\"size_bytes\":$SMALL}]}"
is "$API_STATUS" 200 "the inventory now says: disk 0 grew, disk 1 is new"
start_backup g1 incremental; I=$BID; I_FILES=("${QCOW2[@]}"); I_URIS=("${NBD_URI[@]}")
is "$(jqb '.disks[0] | [.backup_type, .size_bytes, .parent_backup_id, .previous_change_id, (.full_reason|tostring)] | map(tostring) | join(" ")')" \
   "incremental $NEW $F GF0 null" "the grown disk is an incremental of its new size on the full"
is "$(jqb '.disks[1] | [.backup_type, .size_bytes, (.parent_backup_id|tostring), (.previous_change_id|tostring)] | map(tostring) | join(" ")')" \
   "full $SMALL null null" "the new disk is taken as full"
like "$(jqb '.disks[1].full_reason | strings')" '.' "with full_reason set ($(jqb '.disks[1].full_reason'))"
is "$(jqb .backup_type)" incremental "the job stays an incremental"
is "$(img_info "${I_FILES[0]}" | jq -r '[."virtual-size", ."backing-filename"] | map(tostring) | join(" ")')" "$NEW $F.qcow2" "overlay: new virtual size, backed by the full"
is "$(img_info "${I_FILES[1]}" | jq -r '[."virtual-size", (."backing-filename" // "none")] | map(tostring) | join(" ")')" "$SMALL none" "the new disk's file: its size, no backing file"
is "$(nbdinfo --size "${I_URIS[0]}" 2>&1)" "$NEW" "the grown disk is exported at its new size"
is "$(nbdinfo --size "${I_URIS[1]}" 2>&1)" "$SMALL" "the new disk is exported at its size"
ok "the old data reads through the export, and the new area is zero" \
   qio -r -f raw -c 'read -P 0x11 0 1M' -c 'read -P 0x12 63M 1M' -c 'read -P 0 64M 32M' "${I_URIS[0]}"
write_ok "${I_URIS[0]}" 0x21 80M 1M
write_ok "${I_URIS[0]}" 0x22 95M 1M
write_ok "${I_URIS[1]}" 0x31 0 1M
complete_disk "$I" 0 GI0 1
complete_disk "$I" 1 GI1 1
is "$(jqb .job_status)" completed "the job completes"
ok "the grown disk's chain: old data, new data past the old end, zeros between" \
   qio -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0x12 63M 1M' -c 'read -P 0 64M 16M' -c 'read -P 0x21 80M 1M' -c 'read -P 0x22 95M 1M' "${I_FILES[0]}"
ref_image "$T/ref0.raw" $NEW
ref_write "$T/ref0.raw" 0x11 0 1M
ref_write "$T/ref0.raw" 0x12 63M 1M
ref_write "$T/ref0.raw" 0x21 80M 1M
ref_write "$T/ref0.raw" 0x22 95M 1M
ok "qemu-img compare: the grown chain equals the reference" qemu-img compare -q -f raw -F qcow2 "$T/ref0.raw" "${I_FILES[0]}"
ok "the new disk holds its data" qio -r -f qcow2 -c 'read -P 0x31 0 1M' "${I_FILES[1]}"
is "$(img_info "$F_FILE" | jq -r '."virtual-size"')" "$OLD" "the full keeps its old size"
is "$(sql "SELECT disk_index, size_bytes FROM backup_disks WHERE backup_job_id='$I' ORDER BY disk_index" | tr '\n' ' ')" "0|$NEW 1|$SMALL " "catalog: per-disk sizes"

# Next incremental: both disks chain; disk 0 grows again through inline disks.
start_backup g1 incremental "\"disks\":[{\"disk_index\":0,\"size_bytes\":$BIGGER},{\"disk_index\":1,\"size_bytes\":$SMALL}]"
J=$BID
is "$(jqb '[.disks[] | .backup_type + "/" + (.parent_backup_id|tostring) + "/" + (.size_bytes|tostring) + "/" + (.full_reason|tostring)] | join(" ")')" \
   "incremental/$I/$BIGGER/null incremental/$I/$SMALL/null" "the next incremental chains both disks; disk 0 grew again"
is "$(img_info "${QCOW2[0]}" | jq -r '."virtual-size"')" "$BIGGER" "its overlay has the newest size"
is "$(backing_of "${QCOW2[1]}")" "$I.qcow2" "the once-new disk is now backed by its first backup"
write_ok "${NBD_URI[0]}" 0x41 127M 1M
complete_disk "$J" 0 GJ0 1
complete_disk "$J" 1 GJ1 1
ok "the three-level chain across two growths reads everything" \
   qio -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0x12 63M 1M' -c 'read -P 0x21 80M 1M' -c 'read -P 0 96M 31M' -c 'read -P 0x41 127M 1M' "${QCOW2[0]}"
ok "the once-new disk's chain reads its data" qio -r -f qcow2 -c 'read -P 0x31 0 1M' "${QCOW2[1]}"

# A 1 TiB disk: the files are sparse, the export has the full size, and data
# at its very end goes through the chain.
TIB=$((1024 * 1024 * MiB))
put_vm huge $TIB
start_backup huge full; H=$BID
is "$(nbdinfo --size "${NBD_URI[0]}" 2>&1)" "$TIB" "a 1 TiB disk is exported at 1 TiB"
write_ok "${NBD_URI[0]}" 0x51 $((TIB - MiB)) 1M
complete_disk "$H" 0 HU0 1
start_backup huge incremental "\"disks\":[{\"disk_index\":0,\"size_bytes\":$((2 * TIB))}]"
is "$(img_info "${QCOW2[0]}" | jq -r '[."virtual-size", ."backing-filename"] | map(tostring) | join(" ")')" "$((2 * TIB)) $H.qcow2" "it grows to 2 TiB as an overlay on the full"
write_ok "${NBD_URI[0]}" 0x52 $((2 * TIB - MiB)) 1M
complete_disk "$BID" 0 HU1 1
ok "the 2 TiB chain reads the data at both ends" \
   qio -r -f qcow2 -c "read -P 0x51 $((TIB - MiB)) 1M" -c "read -P 0 $TIB 1M" -c "read -P 0x52 $((2 * TIB - MiB)) 1M" "${QCOW2[0]}"
cmp_ok "$(du -sk "$DATA/repository" | cut -f1)" -lt 65536 "the repository stays small (sparse files: $(du -sh "$DATA/repository" | cut -f1))"

done_testing
