#!/usr/bin/env bash
# test-race-start.sh - simultaneous starts of a backup of one VM give exactly
# one 201 and 409s for the rest, with exactly one running job and one set of
# files; both for the first backup (the context is created in the race) and
# for an incremental in an existing context.  Backups of different VMs do not
# block each other.

source "$(dirname "$0")/../functions.sh"
requires qemu-img jq curl sqlite3

SIZE=$((64 * MiB))
N=8
start_hub
REPO=$DATA/repository

# the body of the one 201
race_winner ()
{
  local i
  for i in $(seq 1 $N); do
    [ "$(cat "$T/race.$i.code")" = 201 ] && cat "$T/race.$i.body"
  done
}

put_vm race1 $SIZE $SIZE

# --- First backup of the VM: the context does not exist yet.
race '{"vm_name":"race1","backup_type":"full"}'
is "$(race_codes)" "201×1 409×$((N - 1)) " "$N simultaneous first starts: one 201, the rest 409"
ok "every loser gets a JSON conflict error" race_losers_are_conflicts
W=$(race_winner)
BID=$(jq -r .backup_id <<< "$W")
CTX=$(jq -r .context_id <<< "$W")
is "$(sql "SELECT count(*) FROM vm_backup_contexts WHERE vm_name='race1'")" 1 "exactly one context"
is "$(sql "SELECT count(*) FROM backup_jobs")|$(sql "SELECT count(*) FROM backup_jobs WHERE status='running'")|$(sql "SELECT id FROM backup_jobs WHERE status='running'")" \
   "1|1|$BID" "exactly one job, running, the winner's"
is "$(sql "SELECT count(*) FROM backup_disks")" 2 "exactly one set of disk rows"
is "$(cd "$REPO" && find . -type f ! -name strata-repository.json | sort | tr '\n' ' ')" "./$CTX/disk0/$BID.qcow2 ./$CTX/disk1/$BID.qcow2 " "exactly one set of files"
is "$(cd "$REPO" && find . -mindepth 1 -maxdepth 1 ! -name strata-repository.json | wc -l)" 1 "exactly one context folder"
api GET /api/v1/contexts/$CTX
is "$(jqb .total_backups_run)" 1 "the context counts one started backup"

for i in 0 1; do
  complete_disk "$BID" $i "R$i" 0
done

# --- Incremental in the existing context.
race '{"vm_name":"race1","backup_type":"incremental"}'
is "$(race_codes)" "201×1 409×$((N - 1)) " "$N simultaneous incrementals: one 201, the rest 409"
ok "every loser gets a JSON conflict error" race_losers_are_conflicts
W=$(race_winner)
BID2=$(jq -r .backup_id <<< "$W")
is "$(jq -r '.context_id' <<< "$W")" "$CTX" "the winner uses the context"
is "$(sql "SELECT count(*) FROM backup_jobs WHERE status='running'")|$(sql "SELECT id FROM backup_jobs WHERE status='running'")" "1|$BID2" "exactly one running job, the winner's"
is "$(sql "SELECT count(*) FROM backup_jobs")|$(sql "SELECT count(*) FROM backup_disks")" "2|4" "two jobs, four disk rows in all"
is "$(cd "$REPO" && find . -name "*.qcow2" | wc -l)|$(cd "$REPO" && find . -name "$BID2.qcow2" | wc -l)" "4|2" "one new set of overlays"
api GET /api/v1/contexts/$CTX
is "$(jqb .total_backups_run)" 2 "the context counts two started backups"

# A start while one runs is refused, the full kind too.
api POST /api/v1/backups '{"vm_name":"race1","backup_type":"full"}'
is_error 409 conflict "a full while the incremental runs: 409"

# --- Different VMs at once: all start.
pids=()
for v in 1 2 3 4; do
  put_vm par$v $SIZE
done
for v in 1 2 3 4; do
  start_backup_bg par$v "$T/par.$v"
  pids+=("$BG_PID")
done
wait "${pids[@]}"
is "$(for v in 1 2 3 4; do echo "$(cat "$T/par.$v.code")"; done | tr '\n' ' ')" "201 201 201 201 " "4 different VMs started at once all get 201"
is "$(sql "SELECT count(*) FROM vm_backup_contexts")|$(sql "SELECT count(*) FROM backup_jobs WHERE status='running'")" "5|5" "five contexts, five running jobs"

ok "the hub is still healthy" curl -sf "http://127.0.0.1:$HUB_PORT/healthz"

done_testing
