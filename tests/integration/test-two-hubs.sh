#!/usr/bin/env bash
# test-two-hubs.sh - two hubs, each with its own data folder, storage daemon
# and ports, share one catalog (the same MariaDB database, or with SQLite the
# same file).  Simultaneous starts of a backup of the same VM into the same
# repository, half of them sent to each hub, give exactly one 201 across
# both hubs, round after round: never two running jobs in one context.  A
# backup started on one hub is seen, completed and built on through the other.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl sqlite3

SIZE=$((16 * MiB))
N=8
ROUNDS=4
start_hub

# --- Hub B: same catalog, its own folder and ports.
DATA_B=$T/data-b
LOG_B=$T/hub-b.log
PORT_B=$(free_port) && NBD_B=$(free_port) || bail_out "no free port"
mkdir -p "$DATA_B"
if [ "$TEST_DB" = mariadb ]; then
  db_b=("${_hub_db_args[@]}")
else
  db_b=(--db "sqlite://$CATALOG")
fi
"$STRATA" serve --data-dir "$DATA_B" --listen "127.0.0.1:$PORT_B" \
  --nbd-listen "127.0.0.1:$NBD_B" "${db_b[@]}" < /dev/null >> "$LOG_B" 2>&1 &
PID_B=$!
ok "hub B comes up on the same catalog" wait_for 30 \
  curl -sf "http://127.0.0.1:$PORT_B/healthz"
api GET /api/v1/repositories
is "$(jqb '[.repositories[].id] | join(" ")')" default "hub A sees one repository"
is "$(curl -s "http://127.0.0.1:$PORT_B/api/v1/repositories" | jq -r '[.repositories[].id] | join(" ")')" \
   default "hub B sees the same one: it made no repository of its own"

# The port of the hub whose answer was the 201, and the backup id.
race_winner ()
{
  local i
  for i in $(seq 1 $N); do
    if [ "$(cat "$T/race.$i.code")" = 201 ]; then
      if [ $((i % 2)) = 0 ]; then echo "$PORT_B"; else echo "$HUB_PORT"; fi
      jq -r .backup_id "$T/race.$i.body"
      return
    fi
  done
}

put_vm twohub1 $SIZE $SIZE
winners_a=0 winners_b=0
for round in $(seq 1 $ROUNDS); do
  race '{"vm_name":"twohub1","backup_type":"full"}' "$HUB_PORT" "$PORT_B"
  is "$(race_codes)" "201×1 409×$((N - 1)) " \
     "round $round: $N simultaneous starts on two hubs: one 201, the rest 409"
  ok "round $round: every loser gets a JSON conflict error" race_losers_are_conflicts
  is "$(sql "SELECT count(*) FROM vm_backup_contexts WHERE vm_name='twohub1'")|$(sql "SELECT count(*) FROM backup_jobs WHERE status='running'")" \
     "1|1" "round $round: one context, one running job in the shared catalog"
  read -r port bid < <(race_winner | paste -sd ' ')
  if [ "$port" = "$HUB_PORT" ]; then winners_a=$((winners_a + 1)); else winners_b=$((winners_b + 1)); fi
  # The job is cancelled through the hub that exports its disks.
  code=$(curl -s -o "$T/cancel.body" -w '%{http_code}' -X POST \
           "http://127.0.0.1:$port/api/v1/backups/$bid/cancel")
  is "$code" 200 "round $round: the winner's hub cancels it"
done
note "winners: hub A $winners_a, hub B $winners_b"
is "$(sql "SELECT count(*) FROM backup_jobs")|$(sql "SELECT count(*) FROM backup_jobs WHERE status='cancelled'")|$(sql "SELECT total_backups_run FROM vm_backup_contexts WHERE vm_name='twohub1'")" \
   "$ROUNDS|$ROUNDS|$ROUNDS" "one job per round was written and counted, all cancelled"

# --- One chain through both hubs: a full on A, seen and completed via B...
start_backup twohub1 full
FULL=$BID
write_ok "${NBD_URI[0]}" 0x5a 0 1M
code=$(curl -s -o "$T/b.body" -w '%{http_code}' "http://127.0.0.1:$PORT_B/api/v1/backups/$FULL")
is "$code|$(jq -r .status "$T/b.body")" "200|running" "hub B sees hub A's running backup"
code=$(curl -s -o "$T/b.body" -w '%{http_code}' -X POST \
         "http://127.0.0.1:$PORT_B/api/v1/backups" -d '{"vm_name":"twohub1","backup_type":"full"}')
is "$code|$(jq -r .error.code "$T/b.body")" "409|conflict" "hub B refuses a second start while it runs"
complete_disk "$FULL" 0 TWO_A0 1048576
complete_disk "$FULL" 1 TWO_A1 0
code=$(curl -s -o "$T/b.body" -w '%{http_code}' \
         "http://127.0.0.1:$PORT_B/api/v1/backups/changeid?vm_name=twohub1&disk_id=0")
is "$code|$(jq -r .change_id "$T/b.body")" "200|TWO_A0" "hub B reads the change id that hub A recorded"
# ... and an incremental started on B builds on it.
code=$(curl -s -o "$T/b.body" -w '%{http_code}' -X POST \
         "http://127.0.0.1:$PORT_B/api/v1/backups" -d '{"vm_name":"twohub1","backup_type":"incremental"}')
is "$code" 201 "hub B starts the incremental"
is "$(jq -r '[.disks[] | .parent_backup_id + "/" + .previous_change_id] | join(" ")' "$T/b.body")" \
   "$FULL/TWO_A0 $FULL/TWO_A1" "on the full that hub A took"
INC=$(jq -r .backup_id "$T/b.body")
for d in 0 1; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST \
           "http://127.0.0.1:$PORT_B/api/v1/backups/$INC/complete" -d "{\"disk_id\":$d,\"change_id\":\"TWO_B$d\"}")
  is "$code" 200 "hub B completes disk $d of its incremental"
done
api GET "/api/v1/backups/$INC"
is "$(jqb .status)" completed "hub A sees it completed"

# --- Hub B stops cleanly.
kill -TERM "$PID_B"
wait_for 15 eval "! kill -0 $PID_B"
wait "$PID_B"
is "$?" 0 "hub B exits 0 on SIGTERM"
ok "hub B's log has no sanitizer report" eval "! grep -qE 'Sanitizer|runtime error:' '$LOG_B'"
[ $_tap_failed -gt 0 ] && diag "---- hub B log ----" "$(tail -n 100 "$LOG_B")"

done_testing
