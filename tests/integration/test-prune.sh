#!/usr/bin/env bash
# test-prune.sh - pruning a chain of backups of one QCOW2 disk merges the
# removed points into those that stay, and every point that stays restores
# bit for bit as before.  The chain holds what a guest does between backups:
# scattered writes, discards, zero writes, and the disk shrunk then grown in
# the middle of it.  A dry run changes nothing; a prune of the oldest points
# commits them into the first kept one, which becomes a full; prunes of
# middle points (consecutive ones too, around protected points) rebase the
# next kept point; a whole older chain goes.  After every task: the removed
# backups and their files are gone, every file has its row and passes
# qemu-img check, bytes were freed and the repository uses less, and every
# kept point verifies against the merged manifests.  Then
# `strata prune` end to end, with --dry-run --json.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-nbd jq curl cmp shuf

start_hub
VM=pr1
SRC=$T/pr1-disk0.qcow2
qemu-img create -q -f qcow2 "$SRC" 64M

# io CMD...: qemu-io commands on the source, as the guest would write.
io ()
{
  local a=()
  for c in "$@"; do a+=(-c "$c"); done
  qemu-io -f qcow2 "${a[@]}" "$SRC" > /dev/null || fail "qemu-io $*"
}

# scattered SEED PATTERN COUNT: COUNT writes of 64 KiB at distinct offsets
# spread over the whole disk, picked by SEED.
scattered ()
{
  local blocks=$(( $(img_info "$SRC" | jq '."virtual-size"') / 65536 ))
  shuf -i 0-$((blocks - 1)) -n "$3" --random-source=<(yes "$1") |
    awk -v p="$2" '{ printf "write -P %s %d 64k\n", p, $1 * 65536 }' |
    qemu-io -f qcow2 "$SRC" > /dev/null || fail "scattered writes $2"
}

# --- The chain: ten points ---------------------------------------------------
io 'write -P 0x11 0 8M' 'write -P 0x12 20M 2M' 'write -P 0x13 56M 8M'
take_point $VM "$SRC"; P1=$BID
scattered 2 0x21 24; io 'discard 20M 1M'
take_point $VM "$SRC"; P2=$BID
io 'write -z 4M 1M' 'write -P 0x31 30M 512k'; scattered 3 0x32 16
take_point $VM "$SRC"; P3=$BID
qemu-img resize -q --shrink "$SRC" 48M; io 'write -P 0x41 40M 1M'      # hides 0x13
take_point $VM "$SRC"; P4=$BID
qemu-img resize -q "$SRC" 80M; io 'write -P 0x51 70M 1M' 'write -P 0x52 0 64k'
take_point $VM "$SRC"; P5=$BID
io 'discard 0 2M' 'write -P 0x61 10M 3M'; scattered 6 0x62 16
take_point $VM "$SRC"; P6=$BID
io 'write -z 40M 1M' 'write -P 0x71 75M 1M'
take_point $VM "$SRC"; P7=$BID
qemu-img resize -q "$SRC" 96M; io 'write -P 0x81 90M 1M'
take_point $VM "$SRC"; P8=$BID
scattered 9 0x91 24; io 'discard 70M 1M'
take_point $VM "$SRC"; P9=$BID
io 'write -z 0 4M' 'write -P 0xa1 50M 1M'
take_point $VM "$SRC"; P10=$BID
CTX=$(context_of $VM)
like "$CTX" '^ctx-' "the VM has its context"

api GET "/api/v1/backups?vm_name=$VM&limit=1000"
is "$(jqb '[.backups[] | .disks[0].backup_type] | join(" ")')" \
   "$(echo incremental incremental incremental incremental incremental incremental incremental incremental incremental full)" \
   "one full and nine incrementals"
is "$(jqb '[.backups[] | .disks[0].size_bytes / 1048576] | join(" ")')" "96 96 96 80 80 80 48 64 64 64" \
   "the disk shrank to 48 MiB, then grew to 80 and 96"

# The points as they restore before any prune: the references.
points_restore_ok $P1 $P2 $P3 $P4 $P5 $P6 $P7 $P8 $P9 $P10

# --- Helpers -----------------------------------------------------------------

# points_of VM: its completed backups, newest first, on one line.
points_of ()
{
  curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups?vm_name=$1&status=completed&limit=1000" |
    jq -r '[.backups[].backup_id] | join(" ")'
}

# file_of BID: the backup's disk 0 file.
file_of ()
{
  curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups/$1" | jq -r '.disks[0].qcow2_path'
}

# pruned DESC BODY "KEEP..." "REMOVE...": a prune by BODY that keeps
# exactly KEEP and removes exactly REMOVE (newest first each), and what
# must hold once its task completed.
pruned ()
{
  local desc=$1 body=$2 keep=$3 remove=$4 used0 used1 b gone="" files=() f
  used0=$(repo_used_bytes)
  for b in $remove; do files+=("$(file_of "$b")"); done
  prune_ok "$CTX" "$body" "$desc"
  is "$(jqb '.result.keep | join(" ")')" "$keep" "$desc: the task keeps $keep"
  is "$(jqb '.result.remove | join(" ")')" "$remove" "$desc: and removes $remove"
  is "$(jqb '"\(.steps_done)/\(.steps_total) \(.progress) \(.message) \(.error)"')" \
     "$(jqb .steps_total)/$(jqb .steps_total) 1 null null" "$desc: every step done, no message, no error"
  like "$(jqb .completed_at)" '^[0-9]{4}-' "$desc: the task has its completion time"
  cmp_ok "$(jqb .result.bytes_freed)" -gt 0 "$desc: the task freed bytes ($(jqb .result.bytes_freed))"
  used1=$(repo_used_bytes)
  cmp_ok "$used1" -lt "$used0" "$desc: the repository uses less ($used0 -> $used1 bytes)"
  is "$(points_of $VM)" "$keep" "$desc: the VM's backups are the kept ones"
  for b in $remove; do
    api GET "/api/v1/backups/$b"
    [ "$API_STATUS" = 404 ] || gone+=" $b:$API_STATUS"
  done
  is "$gone" "" "$desc: every removed backup is gone (404)"
  gone=""
  for f in "${files[@]}"; do [ -e "$f" ] && gone+=" $f"; done
  is "$gone" "" "$desc: and its file"
  repo_is_catalog "$desc"
  repo_images_check "$desc"
  points_restore_ok $keep
  # The merged layers' manifests are the union of what they took in: every
  # kept point verifies against them, hashes and all.
  verify_ok "/api/v1/contexts/$CTX/verify" "$desc"
  is "$(jqb '[.result.points[] | .verify_state + "/" + (.disks[0].hashed | tostring)] | unique | join(" ")')" \
     "ok/true" "$desc: every kept point verifies ok against its manifests"
}

# became_full DESC BID: the backup (one disk) is a full now, its file
# standalone.
became_full ()
{
  api GET "/api/v1/backups/$2"
  is "$(jqb '"\(.backup_type) \(.disks[0].backup_type) \(.disks[0].parent_backup_id)"')" "full full null" \
     "$1: $2 is a full now"
  is "$(backing_of "$(jqb '.disks[0].qcow2_path')")" "" "$1: its file has no backing file"
}

# backed_by DESC BID PARENT: the backup's disk is an incremental on PARENT,
# its file backed by PARENT's by a relative name.
backed_by ()
{
  api GET "/api/v1/backups/$2"
  is "$(jqb '.disks[0] | "\(.backup_type) \(.parent_backup_id)"')" "incremental $3" "$1: $2 builds on $3"
  is "$(backing_of "$(jqb '.disks[0].qcow2_path')")" "$3.qcow2" "$1: its file is backed by $3.qcow2"
}

# --- Bad requests change nothing ---------------------------------------------
BEFORE=$(catalog_counts; repo_listing)
api POST "/api/v1/contexts/$CTX/prune" '{}'
is_error 400 invalid_request "no rules and no policy: 400"
api POST "/api/v1/contexts/$CTX/prune"
is_error 400 invalid_request "no body, no policy: 400"
api POST "/api/v1/contexts/$CTX/prune" '{"keep_last":-1}'
is_error 400 invalid_request "a negative rule: 400"
api POST "/api/v1/contexts/$CTX/prune" '{"keep_last":1,"keep_everything":true}'
is_error 400 invalid_request "an unknown field: 400"
api POST "/api/v1/contexts/$CTX/prune" '{"keep_last":"2"}'
is_error 400 invalid_request "a rule that is not an integer: 400"
api POST /api/v1/contexts/ctx-nosuch/prune '{"keep_last":1}'
is_error 404 not_found "an unknown context: 404"
api PATCH "/api/v1/backups/$P5" '{"protected":"yes"}'
is_error 400 invalid_request "PATCH protected with a string: 400"
api PATCH /api/v1/backups/backup-nosuch '{"protected":true}'
is_error 404 not_found "PATCH an unknown backup: 404"
is "$(catalog_counts; repo_listing)" "$BEFORE" "nothing changed"

# --- A dry run changes nothing -------------------------------------------------
api GET "/api/v1/backups?vm_name=$VM&limit=1000"
LIST0=$API_BODY
FILES0=$(repo_listing)
USED0=$(repo_used_bytes)
api POST "/api/v1/contexts/$CTX/prune" '{"keep_last":3,"dry_run":true}'
is "$API_STATUS" 200 "dry run: 200"
is "$(jqb '.keep | join(" ")')" "$P10 $P9 $P8" "dry run: keeps the newest three"
is "$(jqb '.remove | join(" ")')" "$P7 $P6 $P5 $P4 $P3 $P2 $P1" "dry run: would remove the seven others, newest first"
is "$(jqb '.task_id // "none"')" none "dry run: no task"
api GET /api/v1/tasks
is "$(jqb '.tasks | length')" 0 "dry run: the hub lists no task"
api GET "/api/v1/backups?vm_name=$VM&limit=1000"
is "$API_BODY" "$LIST0" "dry run: the listing is the same, byte for byte"
is "$(repo_listing)" "$FILES0" "dry run: the repository's files, sizes and modes are the same"
is "$(repo_used_bytes)" "$USED0" "dry run: the repository uses the same space"

# --- Head: the full and the incremental after it go into P3 --------------------
pruned "head" '{"keep_last":8}' "$P10 $P9 $P8 $P7 $P6 $P5 $P4 $P3" "$P2 $P1"
became_full "head" $P3
backed_by "head" $P4 $P3

# --- Protected points; middle runs of two ---------------------------------------
api PATCH "/api/v1/backups/$P3" '{"protected":true}'
is "$API_STATUS/$(jqb .protected)" "200/true" "protect $P3"
api PATCH "/api/v1/backups/$P6" '{"protected":true}'
is "$API_STATUS/$(jqb .protected)" "200/true" "protect $P6"
api GET "/api/v1/backups/$P6"
is "$(jqb .protected)" true "the backup reads back protected"
api GET "/api/v1/backups/$P5"
is "$(jqb .protected)" false "another one does not"
# Kept: the newest two by the rule, and the protected ones beside them.
pruned "middle" '{"keep_last":2}' "$P10 $P9 $P6 $P3" "$P8 $P7 $P5 $P4"
became_full "middle" $P3
backed_by "middle" $P6 $P3
backed_by "middle" $P9 $P6
backed_by "middle" $P10 $P9

# --- Unprotected, the full goes into P6 and the middle P9 out -------------------
api PATCH "/api/v1/backups/$P3" '{"protected":false}'
is "$API_STATUS/$(jqb .protected)" "200/false" "unprotect $P3"
pruned "head and middle" '{"keep_last":1}' "$P10 $P6" "$P9 $P3"
became_full "head and middle" $P6
backed_by "head and middle" $P10 $P6

# Nothing left to remove: no task.
api POST "/api/v1/contexts/$CTX/prune" '{"keep_last":1}'
is "$API_STATUS/$(jqb .task_id)" "200/null" "a prune with nothing to remove: 200, no task"
is "$(jqb '.keep | join(" ")')/$(jqb '.remove | length')" "$P10 $P6/0" "it keeps both"

# --- strata prune ---------------------------------------------------------------
agent_ok "strata prune --dry-run --json" prune --vm $VM --keep-last 1 --dry-run --json
is "$(jqa '.keep | join(" ")')/$(jqa '.remove | length')" "$P10 $P6/0" \
   "it prints the plan: the protected point stays"
api PATCH "/api/v1/backups/$P6" '{"protected":false}'
is "$API_STATUS" 200 "unprotect $P6"
agent_ok "strata prune --dry-run --json, unprotected" prune --vm $VM --keep-last 1 --dry-run --json
is "$(jqa '.keep | join(" ")')/$(jqa '.remove | join(" ")')" "$P10/$P6" "it would remove $P6"
is "$(points_of $VM)" "$P10 $P6" "the dry run removed nothing"
USED0=$(repo_used_bytes)
agent_ok "strata prune --keep-last 1" prune --vm $VM --keep-last 1
like "$AGENT_OUT" "removing \(1\):.*$P6" "it says what it removes"
like "$AGENT_OUT" 'done: [1-9][0-9]* bytes freed' "and, once the task is done, the bytes freed"
is "$(points_of $VM)" "$P10" "only the newest point is left"
became_full "strata prune" $P10
cmp_ok "$(repo_used_bytes)" -lt "$USED0" "strata prune: the repository uses less"
repo_is_catalog "strata prune"
repo_images_check "strata prune"
points_restore_ok $P10

# --- A whole older chain goes (tail), the newer full merges into its child -----
io 'write -P 0xb1 5M 1M'
agent backup --vm $VM --type full --json "$SRC"
P11=$(jqa .backup_id)
api GET "/api/v1/backups/$P11"
is "$AGENT_RC/$(jqb .backup_type)" "0/full" "a new full starts a second chain"
snapshot "$SRC" "$(ref_of $P11 0)"
scattered 12 0xc1 24; io 'write -z 8M 2M'
take_point $VM "$SRC"; P12=$BID
backed_by "second chain" $P12 $P11
FILE10=$(file_of $P10)
FILE11=$(file_of $P11)
agent_ok "strata prune --keep-last 1 --json" prune --vm $VM --keep-last 1 --json
is "$(jqa .status)" completed "it prints the completed task"
is "$(jqa '.result.remove | join(" ")')" "$P11 $P10" "which removed the new full and the whole old chain"
cmp_ok "$(jqa .result.bytes_freed)" -gt 0 "and freed bytes"
is "$(points_of $VM)" "$P12" "only the newest point is left"
ok "the old chain's file is gone" test ! -e "$FILE10"
ok "the new full's file is gone (renamed over $P12's)" test ! -e "$FILE11"
became_full "tail" $P12
repo_is_catalog "tail"
repo_images_check "tail"
points_restore_ok $P12

# The chain goes on from the pruned point.
io 'write -P 0xd1 60M 1M'
take_point $VM "$SRC"; P13=$BID
backed_by "after the prunes" $P13 $P12
points_restore_ok $P12 $P13

api GET "/api/v1/tasks?status=completed"
is "$(jqb '[.tasks[] | select(.kind == "prune")] | length')" 5 "the hub lists the five completed prune tasks"
api GET "/api/v1/tasks?status=running"
is "$(jqb '.tasks | length')" 0 "and none running"
no_qemu_nbd "no qemu-nbd is left behind"
done_testing
