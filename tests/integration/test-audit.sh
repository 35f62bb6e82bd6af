#!/usr/bin/env bash
# test-audit.sh - the change-tracking audit catches a bitmap that lies.
# `strata backup --audit[=PERCENT]` reads the source again after the copy and
# compares it with the new point as its chain's manifests describe it.  An
# honest incremental passes (whole, and a 10% sample).  Then the bitmap strata
# made is disabled while the guest writes 64 KiB, enabled again, and one more
# block written: the incremental misses the first write, and the audit says
# so ("change tracking missed 1 blocks (first at offset ...)"), exits 1, marks
# the point corrupt, and the next backup of the disk is a full that holds the
# write.  The same for hub-driven backups of a VM whose policy has
# "verify":{"audit_percent":100,"after_backup":true}: each backup is also
# verified once it completed, and that verify (the files hold what the copy
# read) does not clear what the audit found.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-nbd nbdcopy jq curl cmp

start_hub
SIZE=$((64 * MiB))
LIE=$((12 * MiB))          # where the guest writes while the bitmap is off

# io IMAGE CMD...: qemu-io commands on a source image, as the guest would write.
io ()
{
  local img=$1 a=() c
  shift
  for c in "$@"; do a+=(-c "$c"); done
  qemu-io -f qcow2 "${a[@]}" "$img" > /dev/null || fail "qemu-io $*"
}

# change_id_of VM: the change id (the bitmap's name) of disk 0's latest point.
change_id_of ()
{
  curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups/changeid?vm_name=$1&disk_id=0" | jq -r .change_id
}

# newest VM: the id of the VM's newest backup.
newest ()
{
  curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups?vm_name=$1&limit=1" | jq -r '.backups[0].backup_id'
}

# lie IMAGE VM: the guest writes 64 KiB at $LIE while the bitmap of the VM's
# last point is disabled, then one more block with the bitmap enabled again.
lie ()
{
  local cid
  cid=$(change_id_of "$2")
  is "$(bitmaps_of "$1")" "$cid" "the source holds one bitmap, the last point's change id"
  ok "qemu-img bitmap --disable" qemu-img bitmap --disable "$1" "$cid"
  io "$1" "write -P 0x66 $LIE 64k"
  ok "qemu-img bitmap --enable" qemu-img bitmap --enable "$1" "$cid"
  io "$1" "write -P 0x67 30M 64k"
}

# not_corrupt DESC BID: the backup and its disk are not marked corrupt.
not_corrupt ()
{
  api GET "/api/v1/backups/$2"
  is "$(jqb '"\(.status) \(.verify_state != "corrupt") \(.disks[0].verify_state != "corrupt") \(.disks[0].verify_error)"')" \
     "completed true true null" "$1: completed, nothing marked corrupt"
}

# caught DESC BID: the backup is completed, its disk marked corrupt with
# the audit's error.
caught ()
{
  api GET "/api/v1/backups/$2"
  is "$(jqb '"\(.status) \(.verify_state) \(.disks[0].verify_state)"')" "completed corrupt corrupt" \
     "$1: the backup completed, and is marked corrupt"
  like "$(jqb .disks[0].verify_error)" "change tracking missed 1 blocks? \\(first at offset $LIE\\)" \
     "$1: its disk's error says what the change tracking missed"
}

# refull DESC BID: the backup's disk is a full, saying why.
refull ()
{
  api GET "/api/v1/backups/$2"
  is "$(jqb '.disks[0] | "\(.backup_type) \(.parent_backup_id)"')" "full null" \
     "$1: the next backup's disk is a full"
  like "$(jqb .disks[0].full_reason)" 'verif' "$1: its full_reason mentions the failed verification"
}

# --- strata backup --audit --------------------------------------------------------
VM=au1
SRC=$T/au1-disk0.qcow2
qemu-img create -q -f qcow2 "$SRC" $SIZE
io "$SRC" 'write -P 0x11 0 16M'
take_point $VM "$SRC"; P1=$BID

for bad in 0 101 x -5 ''; do
  agent backup --vm $VM --audit="$bad" "$SRC"
  is "$AGENT_RC" 2 "--audit=$bad is a usage error (exit 2)"
done
is "$(newest $VM)" "$P1" "and starts no backup"

io "$SRC" 'write -P 0x21 20M 1M'
agent backup --vm $VM --audit --json "$SRC"
is "$AGENT_RC" 0 "an honest incremental with --audit exits 0"
P2=$(newest $VM)
isnt "$P2" "$P1" "it made a point"
is "$(jqa '.disks[0].mode')" incremental "an incremental"
unlike "$AGENT_ERR" 'missed' "the audit reports nothing missed"
not_corrupt "honest --audit" $P2

io "$SRC" 'write -P 0x31 24M 64k'
agent backup --vm $VM --audit=10 --json "$SRC"
is "$AGENT_RC" 0 "an honest incremental with --audit=10 exits 0"
P3=$(newest $VM)
is "$(jqa '.disks[0].mode')" incremental "an incremental"
not_corrupt "--audit=10" $P3

lie "$SRC" $VM
agent backup --vm $VM --audit "$SRC"
is "$AGENT_RC" 1 "the incremental over a lying bitmap with --audit exits 1"
like "$AGENT_ERR" "change tracking missed 1 blocks? \\(first at offset $LIE\\)" "and says what the bitmap missed"
P4=$(newest $VM)
isnt "$P4" "$P3" "it made a point"
api GET "/api/v1/backups/$P4"
is "$(jqb '.disks[0] | "\(.backup_type) \(.parent_backup_id)"')" "incremental $P3" "an incremental on $P3"
caught "agent" $P4
# The point really misses the write: it restores the old data there.
agent restore --backup $P4 --disk 0 --output "$T/p4.raw"
is "$AGENT_RC" 0 "$P4 restores"
ok "$P4 holds the old data at $LIE (the write the bitmap missed is not there)" \
   qio -f raw -c "read -P 0x11 $LIE 64k" "$T/p4.raw"
rm -f "$T/p4.raw"

io "$SRC" 'write -P 0x68 40M 64k'
take_point $VM "$SRC"; P5=$BID
is "$(jqa '.disks[0].mode')" full "the next strata backup copies the disk in full"
refull "agent" $P5
points_restore_ok $P5
io "$SRC" 'write -P 0x69 44M 64k'
agent backup --vm $VM --audit --json "$SRC"
is "$AGENT_RC/$(jqa '.disks[0].mode')" "0/incremental" "the chain goes on from the new full, audited honest"

# --- Hub-driven: a policy with "verify":{"audit_percent":100} ---------------------------
VM=hd1
SRC=$T/hd1-disk0.qcow2
qemu-img create -q -f qcow2 "$SRC" $SIZE
io "$SRC" 'write -P 0x11 0 16M'
api PUT /api/v1/policies/audited '{"verify":{"audit_percent":100,"after_backup":true}}'
is "$API_STATUS" 201 "a policy that audits every block"
is "$(jqb .verify.audit_percent)" 100 "it shows verify.audit_percent"
api GET /api/v1/policies/audited
is "$(jqb .verify.audit_percent)" 100 "and reads it back"
api PUT /api/v1/vms/$VM "$(jq -cn --arg s "$SRC" --argjson z $SIZE \
  '{policy:"audited", disks:[{disk_index:0, size_bytes:$z, source:$s}]}')"
is "$API_STATUS" 201 "a VM with a QCOW2 source, using the policy"

# verify_task_ended BID: a verify task that has the backup in its list has
# ended (the policy's after_backup starts one when a backup completes).
verify_task_ended ()
{
  curl -s "http://127.0.0.1:$HUB_PORT/api/v1/tasks" |
    jq -e --arg b "$1" 'any(.tasks[]; .kind == "verify" and .status != "running"
                                       and (.result.backups | index($b)))' > /dev/null
}

# hub_backup TYPE DESC: a hub-driven backup of $VM; sets BID once it ended.
hub_backup ()
{
  api POST /api/v1/backups "{\"vm_name\":\"$VM\",\"backup_type\":\"$1\"}"
  is "$API_STATUS/$(jqb .driver)" "201/hub" "$2: the hub runs it"
  BID=$(jqb .backup_id)
  ok "$2: the job ends" wait_for 120 job_ended "$BID"
  is "$(job_status "$BID")" completed "$2: completed"
}

hub_backup full "hub-driven full"
H1=$BID
not_corrupt "hub-driven full, audited" $H1
io "$SRC" 'write -P 0x21 20M 1M'
hub_backup incremental "hub-driven honest incremental"
H2=$BID
api GET "/api/v1/backups/$H2"
is "$(jqb '.disks[0].backup_type')" incremental "an incremental"
not_corrupt "hub-driven incremental, audited" $H2
ok "the policy's after_backup verified it" wait_for 60 verify_task_ended $H2
api GET "/api/v1/backups/$H2"
is "$(jqb '"\(.verify_state) \(.disks[0].verify_state)"')" "ok ok" "and found it ok"

lie "$SRC" $VM
hub_backup incremental "hub-driven incremental over a lying bitmap"
H3=$BID
api GET "/api/v1/backups/$H3"
is "$(jqb '.disks[0] | "\(.backup_type) \(.parent_backup_id)"')" "incremental $H2" "an incremental on $H2"
caught "hub-driven" $H3
ok "the policy's after_backup verified it too" wait_for 60 verify_task_ended $H3
caught "hub-driven, after its files verified ok (they hold what the copy read)" $H3

io "$SRC" 'write -P 0x68 40M 64k'
hub_backup incremental "the next hub-driven backup"
H4=$BID
refull "hub-driven" $H4
agent restore --backup $H4 --disk 0 --output "$T/h4.raw"
snapshot "$SRC" "$T/src-now.raw"
ok "the new full holds what the source holds, the missed write too" cmp "$T/src-now.raw" "$T/h4.raw"
not_corrupt "the new full, audited" $H4

no_qemu_nbd "no qemu-nbd is left behind"
done_testing
