#!/usr/bin/env bash
# test-prune-crash.sh - the hub dies (SIGKILL, as in a power cut) at each
# step of a prune: once the task is recorded, and in a merge after the data
# is committed into the full, after the rename over the kept point, after
# the copy into the kept point, after its backing file changed, and after
# the step is recorded in the catalog.  Right after the crash, with the hub
# down, every backup the catalog lists completed reads from its files
# exactly as before; the next start carries the task to its end, and then
# the kept points still read as before, every file has its row and every
# row its file, and qemu-img check passes.
#
# The hub kills itself where STRATA_CRASH_AT says (util/crash.h).

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-nbd jq curl cmp

start_hub

# chain VM: five points of a fresh 32 MiB QCOW2 disk $T/VM.qcow2, with a
# discard, zero writes, a shrink to 24 MiB (hiding data at 28 MiB) and a
# grow to 40 MiB; sets P1..P5 and CTX.
chain ()
{
  local src=$T/$1.qcow2
  qemu-img create -q -f qcow2 "$src" 32M
  qemu-io -f qcow2 -c 'write -P 0x11 0 4M' -c 'write -P 0x12 28M 4M' "$src" > /dev/null
  take_point "$1" "$src"; P1=$BID
  qemu-io -f qcow2 -c 'write -P 0x21 2M 1M' -c 'discard 28M 1M' -c 'write -P 0x22 12M 64k' "$src" > /dev/null
  take_point "$1" "$src"; P2=$BID
  qemu-img resize -q --shrink "$src" 24M
  qemu-io -f qcow2 -c 'write -z 0 512k' -c 'write -P 0x31 20M 1M' "$src" > /dev/null
  take_point "$1" "$src"; P3=$BID
  qemu-img resize -q "$src" 40M
  qemu-io -f qcow2 -c 'write -P 0x41 36M 1M' -c 'write -P 0x42 3M 64k' "$src" > /dev/null
  take_point "$1" "$src"; P4=$BID
  qemu-io -f qcow2 -c 'write -P 0x51 8M 1M' -c 'write -z 20M 64k' "$src" > /dev/null
  take_point "$1" "$src"; P5=$BID
  CTX=$(context_of "$1")
}

# file_of BID: the backup's disk 0 file (from the catalog: the hub may be down).
file_of ()
{
  echo "$DATA/repository/$(sql "SELECT qcow2_path FROM backup_disks WHERE backup_job_id='$1' AND disk_index=0")"
}

points_of ()
{
  sql "SELECT id FROM backup_jobs WHERE vm_backup_context_id='$1' AND status='completed'
       ORDER BY created_at DESC, id DESC" | paste -sd ' '
}

# crash_prune POINT BODY "REMOVE...": restart the hub set to die at POINT, ask for a
# prune of $CTX by BODY, and wait until the hub died.  Sets TASK from the
# catalog (the request may have no answer).
crash_prune ()
{
  restart_hub_crashing_at "$1"
  curl -s -o /dev/null --max-time 30 -X POST --data-binary "$2" \
    "http://127.0.0.1:$HUB_PORT/api/v1/contexts/$CTX/prune"
  wait_hub_crashed "$1"
  TASK=$(sql "SELECT id FROM tasks WHERE context_id='$CTX' AND status='running'")
  like "$TASK" '^task-' "$1: the task is recorded and running"
  is "$(sql "SELECT count(*) FROM backup_jobs WHERE id IN ('${3// /\',\'}') AND status = 'completed'")" 0 \
     "$1: the points to remove are no longer listed completed"
}

# down_checks POINT: with the hub down, the completed points read back.
down_checks ()
{
  completed_points_read_back "$1 (hub down)"
  completed_rows_have_files "$1 (hub down)"
}

# recovered POINT "KEEP...": start the hub, the task completes, the
# invariant holds and the context keeps exactly KEEP.
recovered ()
{
  start_hub
  ok "$1: the task ends after the restart" wait_for 120 task_ended "$TASK"
  api GET "/api/v1/tasks/$TASK"
  is "$(jqb .status)/$(jqb .error)" completed/null "$1: the task completed"
  is "$(points_of "$CTX")" "$2" "$1: the context keeps $2"
  is "$(sql "SELECT count(*) FROM backup_jobs WHERE vm_backup_context_id='$CTX' AND status <> 'completed'")" 0 \
     "$1: no backup is left removing"
  completed_points_read_back "$1 (after the restart)"
  repo_is_catalog "$1 (after the restart)"
  repo_images_check "$1 (after the restart)"
}

# --- The task is recorded, nothing merged yet -------------------------------------
chain cr-begun
crash_prune prune:begun '{"keep_last":3}' "$P2 $P1"
is "$(backing_of "$(file_of $P3)")" "$P2.qcow2" "prune:begun: no file was touched"
down_checks prune:begun
recovered prune:begun "$P5 $P4 $P3"

# --- Head: committed into the full, not yet renamed ---------------------------------
chain cr-committed
crash_prune merge:committed '{"keep_last":3}' "$P2 $P1"
ok "merge:committed: the full's file is still there" test -e "$(file_of $P1)"
is "$(backing_of "$(file_of $P3)")" "$P2.qcow2" "merge:committed: the kept point still has its backing file"
down_checks merge:committed
recovered merge:committed "$P5 $P4 $P3"
is "$(backing_of "$(file_of $P3)")" "" "merge:committed: the kept point became standalone"

# --- Head: renamed over the kept point, not yet recorded ----------------------------
chain cr-renamed
F1=$(file_of $P1)
crash_prune merge:renamed '{"keep_last":3}' "$P2 $P1"
ok "merge:renamed: the full's file is gone (renamed)" test ! -e "$F1"
is "$(backing_of "$(file_of $P3)")" "" "merge:renamed: the kept point's file has no backing file"
down_checks merge:renamed
recovered merge:renamed "$P5 $P4 $P3"

# --- Middle: copied into the kept point, not yet rebased ----------------------------
chain cr-copied
api PATCH "/api/v1/backups/$P1" '{"protected":true}'
is "$API_STATUS" 200 "protect $P1"
crash_prune merge:copied '{"keep_last":2}' "$P3 $P2"
is "$(backing_of "$(file_of $P4)")" "$P3.qcow2" "merge:copied: the kept point is still backed as before"
down_checks merge:copied
recovered merge:copied "$P5 $P4 $P1"
is "$(backing_of "$(file_of $P4)")" "$P1.qcow2" "merge:copied: the kept point is backed by $P1 in the end"

# --- Middle: rebased, not yet recorded -----------------------------------------------
chain cr-rebased
api PATCH "/api/v1/backups/$P1" '{"protected":true}'
is "$API_STATUS" 200 "protect $P1"
crash_prune merge:rebased '{"keep_last":2}' "$P3 $P2"
is "$(backing_of "$(file_of $P4)")" "$P1.qcow2" "merge:rebased: the kept point is backed by $P1"
down_checks merge:rebased
recovered merge:rebased "$P5 $P4 $P1"

# --- Recorded, the removed files not yet deleted; a middle step follows ------------
chain cr-recorded
api PATCH "/api/v1/backups/$P3" '{"protected":true}'
is "$API_STATUS" 200 "protect $P3"
F2=$(file_of $P2)
crash_prune merge:recorded '{"keep_last":1}' "$P4 $P2 $P1"
is "$(sql "SELECT count(*) FROM backup_jobs WHERE id IN ('$P1','$P2')")" 0 \
   "merge:recorded: the head step's removed backups are gone from the catalog"
ok "merge:recorded: a removed file is still there" test -e "$F2"
down_checks merge:recorded
recovered merge:recorded "$P5 $P3"
ok "merge:recorded: the next start deleted the file left over" test ! -e "$F2"
is "$(backing_of "$(file_of $P5)")" "$P3.qcow2" "merge:recorded: the middle step ran too"

no_qemu_nbd "no qemu-nbd is left behind"
done_testing
