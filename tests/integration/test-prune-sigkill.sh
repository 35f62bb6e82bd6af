#!/usr/bin/env bash
# test-prune-sigkill.sh - a long prune (four disks, a full and twelve
# incrementals, twenty merge steps) survives SIGKILLs of the hub at
# pseudo-random moments: after each kill, with the hub down, every backup
# the catalog lists completed reads from its files exactly as before; the
# hub restarts and the task goes on, until it completes.  At the end the
# context keeps exactly the points the prune kept, each restores bit for
# bit, and the repository's files are exactly the catalog's.
#
# The delays come from a seeded generator: PRUNE_KILL_SEED (printed) gives
# the same sequence again.  At most PRUNE_KILLS (8) kills, then the task is
# left to finish.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-nbd jq curl cmp shuf awk

SEED=${PRUNE_KILL_SEED:-9}
KILLS=${PRUNE_KILLS:-8}
diag "kill delays seeded with PRUNE_KILL_SEED=$SEED"

start_hub
VM=pk1
D0=$T/pk1-disk0.qcow2
D1=$T/pk1-disk1.qcow2
D2=$T/pk1-disk2.qcow2
D3=$T/pk1-disk3.qcow2
qemu-img create -q -f qcow2 "$D0" 48M
qemu-img create -q -f qcow2 "$D1" 32M
qemu-img create -q -f qcow2 "$D2" 32M
qemu-img create -q -f qcow2 "$D3" 16M

# dirty IMAGE N PATTERN: 48 writes of 64 KiB scattered by N, a discard and a
# zero write, so that every layer carries data of its own.
dirty ()
{
  local blocks=$(( $(img_info "$1" | jq '."virtual-size"') / 65536 ))
  { shuf -i 0-$((blocks - 1)) -n 48 --random-source=<(yes "$2") |
      awk -v p="$3" '{ printf "write -P %s %d 64k\n", p, $1 * 65536 }'
    echo "discard $(( ($2 * 7 % (blocks - 1)) * 65536 )) 128k"
    echo "write -z $(( ($2 * 13 % blocks) * 65536 )) 64k"
  } | qemu-io -f qcow2 "$1" > /dev/null || fail "writes into $1"
}

qemu-io -f qcow2 -c 'write -P 0x10 0 16M' "$D0" > /dev/null
qemu-io -f qcow2 -c 'write -P 0x20 4M 8M' "$D1" > /dev/null
qemu-io -f qcow2 -c 'write -P 0x21 0 2M' "$D3" > /dev/null
DISKS=("$D0" "$D1" "$D2" "$D3")
P=()
take_point $VM "${DISKS[@]}"; P[1]=$BID
for i in $(seq 2 13); do
  for k in 0 1 2 3; do
    dirty "${DISKS[$k]}" $((i + 100 * k)) $((0x30 + 16 * k + i))
  done
  [ $i = 7 ] && qemu-img resize -q "$D1" 40M
  take_point $VM "${DISKS[@]}"; P[$i]=$BID
done
CTX=$(context_of $VM)

# Protected points between the removed ones make many merge steps: per
# disk a head step (1, 2 into 3) and four middle ones (4, 6, 8, 10).
for i in 3 5 7 9 11; do
  api PATCH "/api/v1/backups/${P[$i]}" '{"protected":true}'
  is "$API_STATUS" 200 "protect point $i"
done
KEEP="${P[13]} ${P[12]} ${P[11]} ${P[9]} ${P[7]} ${P[5]} ${P[3]}"

# The delays: seconds in [0.01, 0.13), from the seed: a merge step takes about
# 50 ms here, so that most kills land in the middle of the task.
DELAYS=($(awk -v s="$SEED" -v n="$KILLS" 'BEGIN { srand(s); for (i = 0; i < n; i++) printf "%.2f ", 0.01 + rand() * 0.12 }'))
diag "kill delays: ${DELAYS[*]}"

api POST "/api/v1/contexts/$CTX/prune" '{"keep_last":2}'
is "$API_STATUS" 202 "the prune starts a task"
TASK=$(jqb .task_id)
is "$(jqb '.keep | join(" ")')" "$KEEP" "it keeps the newest two and the protected ones"

task_status_sql ()
{
  sql "SELECT status FROM tasks WHERE id='$TASK'"
}

killed=0
for delay in "${DELAYS[@]}"; do
  [ "$(task_status_sql)" = running ] || break
  sleep "$delay"             # not a synchronisation: the moment of the kill
  kill_hub
  killed=$((killed + 1))
  st=$(task_status_sql)
  diag "kill $killed after ${delay}s: task $st, $(sql "SELECT steps_done FROM tasks WHERE id='$TASK'") step(s) done"
  completed_points_read_back "kill $killed (hub down)"
  completed_rows_have_files "kill $killed (hub down)"
  start_hub
done
cmp_ok "$killed" -ge 1 "the hub was killed at least once during the task"

ok "the task ends" wait_for 180 task_ended "$TASK"
api GET "/api/v1/tasks/$TASK"
is "$(jqb .status)/$(jqb .error)" completed/null "the task completed"
is "$(jqb '"\(.steps_done)/\(.steps_total)"')" "$(jqb .steps_total)/$(jqb .steps_total)" "every step counted"
cmp_ok "$(jqb .result.bytes_freed)" -gt 0 "it freed bytes"
is "$(curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups?vm_name=$VM&status=completed&limit=1000" |
      jq -r '[.backups[].backup_id] | join(" ")')" "$KEEP" "the kept points are the VM's backups"
is "$(sql "SELECT count(*) FROM backup_jobs")" 7 "and the only ones in the catalog"
completed_points_read_back "the end"
repo_is_catalog "the end"
repo_images_check "the end"
points_restore_ok $KEEP

# The chain goes on: an incremental on the newest point.
dirty "$D0" 99 0x99
take_point $VM "${DISKS[@]}"
points_restore_ok "$BID"
done_testing
