#!/usr/bin/env bash
# test-libvirt-agent.sh - `strata backup --libvirt` against a real libvirtd:
# a running 2-disk domain (qcow2 vda, raw vdb, a cdrom skipped): a full and
# incrementals restored bit-identical to the disks at backup start; guest
# writes during the copy stay out of the point; an interrupted backup
# leaves no new checkpoint and the next one continues the chain; a QEMU
# killed between backups makes the next one a full with its reason and no
# hand repair; a disk added; the domain shut off: started paused and shut
# off again.

source "$(dirname "$0")/../functions.sh"
source "$top/tests/lib/libvirt.sh"
requires qemu-img qemu-io nbdinfo jq cmp
start_libvirtd
start_hub

DOM=${LV_PREFIX}a
A=$T/a.qcow2; B=$T/b.raw
qemu-img create -q -f qcow2 "$A" 64M
qemu-img create -q -f raw "$B" 32M
truncate -s 1M "$T/cd.iso"
ref_image "$T/ref-a" 64M
ref_image "$T/ref-b" 32M
ok "the domain is defined" define_domain "$DOM" "$A" "$B" "cdrom:$T/cd.iso"
ok "it starts" lv_virsh start "$DOM"

# lvbackup_ok DESC: one test that `strata backup --libvirt` of the domain succeeds.
lvbackup_ok ()
{
  agent_ok "$1" backup --vm "$DOM" --libvirt "$DOM" --connect "$LIBVIRT_URI" --json
}

# --- 1. A full of the running domain.
guest_write_ref "$DOM" vda "$T/ref-a" 0x11 0 4M
guest_write_ref "$DOM" vda "$T/ref-a" 0x12 40M 1M
guest_write_ref "$DOM" vdb "$T/ref-b" 0x21 1M 2M
lvbackup_ok "the first backup succeeds"
B1=$(jqa .backup_id)
is "$(jqa '[.disks[] | "\(.target):\(.mode)"] | join(",")')" "vda:full,vdb:full" \
   "the two writable disks in target order, the cdrom skipped, both full"
is "$(jqa '.disks[0].change_id')" "strata-$B1:vda" "vda's change id is the new checkpoint and its target"
is "$(jqa '.disks[1].change_id')" null "the raw disk has no change tracking"
is "$(checkpoints_of "$DOM")" "strata-$B1" "the domain has one checkpoint, strata's new one"
ok "no backup job is left on the domain" eval "! backup_job_running $DOM"
restore_is "$B1" 0 "$T/ref-a" "vda restores as it was at the backup"
restore_is "$B1" 1 "$T/ref-b" "vdb restores as it was at the backup"
cp "$T/ref-a" "$T/p1-a"

# --- 2. An incremental: only what the guest wrote.
guest_write_ref "$DOM" vda "$T/ref-a" 0x31 8M 128k
guest_write_ref "$DOM" vdb "$T/ref-b" 0x41 20M 64k
lvbackup_ok "the incremental succeeds"
B2=$(jqa .backup_id)
is "$(jqa '[.disks[].mode] | join(",")')" "incremental,full" "vda incremental; the raw vdb in full"
is "$(jqa '.disks[0].bytes_read')" $((128 * 1024)) "vda: only the dirty data is read"
is "$(checkpoints_of "$DOM")" "strata-$B2" "the previous checkpoint is deleted once the job completed"
restore_is "$B2" 0 "$T/ref-a" "vda's incremental restores bit-identical"
restore_is "$B2" 1 "$T/ref-b" "vdb restores bit-identical"

# --- 3. Writes during the copy stay out of the point; the backup is
# interrupted: no new checkpoint, the job failed at the hub.
cp "$T/ref-a" "$T/p2-a"
guest_write_ref "$DOM" vda "$T/ref-a" 0x51 16M 16M
cp "$T/ref-a" "$T/p3-a"
cp "$T/ref-b" "$T/p3-b"
# One 4 KiB request at a time keeps the job running long enough to be seen
# and interrupted; hashing would round the requests up to 64 KiB blocks.
export STRATA_COPY_CONNECTIONS=1 STRATA_COPY_REQUESTS=1 STRATA_COPY_REQUEST_SIZE=4096
export STRATA_COPY_HASH=0
"$STRATA" backup --hub "http://127.0.0.1:$HUB_PORT" --vm "$DOM" --libvirt "$DOM" \
  --connect "$LIBVIRT_URI" --json > "$T/slow.out" 2> "$T/slow.err" &
AG=$!
ok "the slow backup's job starts at libvirt" wait_for 30 backup_job_running "$DOM"
guest_write_ref "$DOM" vda "$T/ref-a" 0x61 20M 1M
ok "the guest wrote while the backup job still ran" backup_job_running "$DOM"
wait "$AG"
is "$?" 0 "the slow backup succeeds"
B3=$(jq -r .backup_id "$T/slow.out")
restore_is "$B3" 0 "$T/p3-a" "the point holds the disk as it was at backup start, not the later write"
restore_is "$B3" 1 "$T/p3-b" "vdb too"
is "$(checkpoints_of "$DOM")" "strata-$B3" "one checkpoint again"

# Enough dirty data that, one 4 KiB request at a time, the copy of vda
# lasts seconds: the signal must come while a disk is still being copied (a
# stop once every disk is recorded stops nothing, and the job completes).
guest_write_ref "$DOM" vda "$T/ref-a" 0x62 0 32M
"$STRATA" backup --hub "http://127.0.0.1:$HUB_PORT" --vm "$DOM" --libvirt "$DOM" \
  --connect "$LIBVIRT_URI" --json > "$T/int.out" 2> "$T/int.err" &
AG=$!
ok "the next job starts at libvirt" wait_for 30 backup_job_running "$DOM"
# disk_copying: the hub has the VM's running job with a disk not yet recorded.
disk_copying ()
{
  running_jobs "$DOM"
  jqb -e '[.backups[].disks[] | select(.status == "running")] | length > 0' > /dev/null
}
ok "and its copy of vda is under way at the hub" wait_for 30 disk_copying
kill -TERM "$AG"
wait "$AG"
is "$?" 1 "an interrupted backup exits 1"
B4=$(jq -r .backup_id "$T/int.out")
api GET "/api/v1/backups/$B4"
is "$(jqb .status)" failed "the hub has it failed"
is "$(checkpoints_of "$DOM")" "strata-$B3" "its new checkpoint is deleted, the previous one stays"
ok "no backup job is left" eval "! backup_job_running $DOM"
unset STRATA_COPY_CONNECTIONS STRATA_COPY_REQUESTS STRATA_COPY_REQUEST_SIZE STRATA_COPY_HASH

lvbackup_ok "the next backup succeeds"
B5=$(jqa .backup_id)
is "$(jqa '.disks[0].mode')" incremental "it continues the chain from the last good checkpoint"
restore_is "$B5" 0 "$T/ref-a" "and restores bit-identical"

# --- 4. QEMU killed: the bitmaps were never saved.
guest_write_ref "$DOM" vda "$T/ref-a" 0x71 30M 64k
ok "QEMU is killed" kill_domain "$DOM"
ok "the domain starts again" lv_virsh start "$DOM"
guest_write_ref "$DOM" vda "$T/ref-a" 0x72 50M 64k
lvbackup_ok "the backup after the crash succeeds, with no hand repair"
B6=$(jqa .backup_id)
is "$(jqa '.disks[0].mode')" full "vda is copied in full"
like "$(jqa '.disks[0].full_reason')" "checkpoint strata-$B5 is inconsistent" "and says why"
api GET "/api/v1/backups/$B6"
like "$(jqb .disks[0].full_reason)" "inconsistent" "the hub records the reason"
is "$(checkpoints_of "$DOM")" "strata-$B6" "the broken checkpoint is gone, the new one stays"
restore_is "$B6" 0 "$T/ref-a" "vda restores bit-identical"
lvbackup_ok "the next backup"
is "$(jqa '.disks[0].mode')" incremental "is an incremental again"

# --- 5. A disk added (hot-plugged vdc): a new disk of the chain, in full.
C=$T/c.qcow2
qemu-img create -q -f qcow2 "$C" 16M
ok "a disk is attached" lv_virsh attach-disk "$DOM" "$C" vdc --driver qemu --subdriver qcow2 --targetbus virtio --persistent
ref_image "$T/ref-c" 16M
guest_write_ref "$DOM" vdc "$T/ref-c" 0x81 1M 1M
lvbackup_ok "the backup with the added disk succeeds"
B7=$(jqa .backup_id)
is "$(jqa '[.disks[] | "\(.target):\(.mode)"] | join(",")')" "vda:incremental,vdb:full,vdc:full" \
   "the new disk is disk 2, in full; vda goes on incrementally"
restore_is "$B7" 2 "$T/ref-c" "the added disk restores bit-identical"

# --- 6. Shut off: started paused for the backup, shut off again.
ok "the domain shuts off" lv_virsh destroy "$DOM"
lvbackup_ok "the shut-off domain is backed up"
B8=$(jqa .backup_id)
is "$(jqa '.disks[0].mode')" incremental "its checkpoint survived the shutdown: an incremental"
is "$(domain_state "$DOM")" "shut off" "the domain is shut off again"
restore_is "$B8" 0 "$T/ref-a" "vda restores bit-identical"
lvbackup_ok "once more, shut off"
is "$(jqa '.disks[0].mode')" incremental "the checkpoint stays usable across the shut-off backups"
is "$(checkpoints_of "$DOM")" "strata-$(jqa .backup_id)" "one checkpoint"

# --- 7. Bad input changes nothing.
agent backup --vm x --libvirt "${LV_PREFIX}nope" --connect "$LIBVIRT_URI"
is "$AGENT_RC" 2 "an unknown domain is a usage error"
like "$AGENT_ERR" "no domain" "saying so"

done_testing
