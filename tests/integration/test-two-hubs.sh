#!/usr/bin/env bash
# test-two-hubs.sh - two hubs, each with its own data folder, storage daemon
# and ports, share one catalog (the same MariaDB database, or with SQLite the
# same file) and its repository.  Simultaneous starts of a backup of the same
# VM into the same repository, half of them sent to each hub, give exactly one
# 201 across both hubs, round after round: never two running jobs in one
# context.  A backup started on one hub is seen, completed and built on
# through the other.  Then each hub's start touches only what is its own:
# (a) hub B (re)started while hub A's backup runs neither exports nor
# deletes A's disks, and refuses to complete A's job (409 naming hub A);
# (b) hub B started while hub A stands (STRATA_PAUSE_AT) between creating a
# backup's image and recording it leaves that image, and A's start goes on;
# (c) after A died (SIGKILL) there, B still leaves A's file, and A's next
# start removes it; (d) a running job that no hub owns (from before hubs
# recorded owners) is claimed by the first hub to start.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl sqlite3

SIZE=$((16 * MiB))
N=8
ROUNDS=4
start_hub

# --- Hub B: same catalog, its own folder and ports; STRATA_B may name
# another binary for it (an older strata, to see what these checks catch).
STRATA_B=${STRATA_B:-$STRATA}
DATA_B=$T/data-b
LOG_B=$T/hub-b.log
PORT_B=$(free_port) && NBD_B=$(free_port) || bail_out "no free port"
mkdir -p "$DATA_B"
if [ "$TEST_DB" = mariadb ]; then
  db_b=("${_hub_db_args[@]}")
else
  db_b=(--db "sqlite://$CATALOG")
fi
# start_hub_b: start hub B and wait (bounded) until its storage daemon is up
# (not under ok, which runs its command in a subshell: PID_B must stay set).
start_hub_b ()
{
  "$STRATA_B" serve --data-dir "$DATA_B" --listen "127.0.0.1:$PORT_B" \
    --nbd-listen "127.0.0.1:$NBD_B" "${db_b[@]}" < /dev/null >> "$LOG_B" 2>&1 &
  PID_B=$!
  wait_for 30 eval "curl -sf http://127.0.0.1:$PORT_B/healthz | grep -q '\"storage_daemon\":\"up\"'"
}

# stop_hub_b: SIGTERM hub B; true when it exits 0 in time.
stop_hub_b ()
{
  kill -TERM "$PID_B" && wait_for 15 eval "! kill -0 $PID_B" && wait "$PID_B"
}

start_hub_b
is "$?" 0 "hub B comes up on the same catalog"
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

# --- Each hub's start touches only its own jobs and files.
HUB_A_ID=$(curl -s "http://127.0.0.1:$HUB_PORT/healthz" | jq -r .hub_id)
HUB_B_ID=$(curl -s "http://127.0.0.1:$PORT_B/healthz" | jq -r .hub_id)
like "$HUB_A_ID|$HUB_B_ID" '^hub-[0-9a-f]{16}[|]hub-[0-9a-f]{16}$' "each hub shows its id"
isnt "$HUB_A_ID" "$HUB_B_ID" "and the ids differ"
is "$(cat "$DATA/hub-id")" "$HUB_A_ID" "hub A keeps its id in DATA-DIR/hub-id"

# b_log_since MARK: hub B's log after line MARK (mark_b gives the mark).
mark_b () { wc -l < "$LOG_B"; }
b_log_since () { tail -n "+$(($1 + 1))" "$LOG_B"; }

# (a) A's running backup, B started and restarted.
put_vm twohub2 $SIZE
start_backup twohub2 full
A_BID=$BID A_URI=${NBD_URI[0]} A_FILE=${QCOW2[0]}
is "$(jqb .owner_hub)" "$HUB_A_ID" "hub A's backup records hub A as its owner"
ref_image "$T/a.ref" $SIZE
write_ok "$A_URI" 0x11 0 1M && ref_write "$T/a.ref" 0x11 0 1M
mark=$(mark_b)
stop_hub_b
is "$?" 0 "hub B stops"
start_hub_b
is "$?" 0 "hub B starts while hub A's backup runs"
stop_hub_b && start_hub_b
is "$?" 0 "and restarts"
ok "hub A's image is still there" test -f "$A_FILE"
ok "hub B exported none of hub A's disks" eval "! b_log_since $mark | grep -q 're-export.*$A_BID'"
ok "nor failed, requeued or deleted anything of it" \
   eval "! b_log_since $mark | grep -qE '$A_BID|${A_FILE##*/}|deleting'"
write_ok "$A_URI" 0x22 1M 1M && ref_write "$T/a.ref" 0x22 1M 1M
code=$(curl -s -o "$T/b.body" -w '%{http_code}' -X POST \
         "http://127.0.0.1:$PORT_B/api/v1/backups/$A_BID/complete" -d '{"disk_id":0}')
is "$code|$(jq -r .error.code "$T/b.body")" "409|conflict" "hub B refuses to complete hub A's running job"
like "$(jq -r .error.message "$T/b.body")" "$HUB_A_ID" "naming hub A"
code=$(curl -s -o "$T/b.body" -w '%{http_code}' -X POST \
         "http://127.0.0.1:$PORT_B/api/v1/backups/$A_BID/cancel")
is "$code|$(jq -r .error.code "$T/b.body")" "409|conflict" "and to cancel it"
is "$(job_status "$A_BID")" running "which still runs"
is "$(curl -s "http://127.0.0.1:$PORT_B/api/v1/backups/$A_BID" |
      jq -r '"\(.owner_hub) \(.disks[0].nbd_uri) \(.nbd_tls)"')" "$HUB_A_ID null null" \
   "hub B shows hub A's running job without a target URI or NBD key (the target is on hub A)"
is "$(hub_get "/api/v1/backups/$A_BID" | jq -r '"\(.disks[0].nbd_uri | startswith("nbds://job-")) \(.nbd_tls.identity)"')" \
   "true job-$A_BID" "hub A shows both"
ok "hub A's storage daemon accepts the job's key" grep -q "^job-$A_BID:" "$DATA/run/tls/keys.psk"
ok "hub B's does not" eval "! grep -q '^job-$A_BID:' '$DATA_B/run/tls/keys.psk'"
complete_disk "$A_BID" 0 TWO_C0 2097152
restore_is "$A_BID" 0 "$T/a.ref" "hub A's backup restores equal to what was written"

# (b) Hub A stopped between creating an image and recording its row.
put_vm twohub3 $SIZE
put_vm twohub4 $SIZE
stop_hub
export STRATA_PAUSE_AT=start:images
start_hub
unset STRATA_PAUSE_AT
hub_a_paused () { [ "$(awk '{print $3}' "/proc/$HUB_PID/stat" 2>/dev/null)" = T ]; }
# new_image BEFORE: the image file that is in the repository now and was
# not in the listing BEFORE.
new_image ()
{
  comm -13 <(echo "$1") <(repo_listing) | awk '$2 == "f" && $1 ~ /qcow2$/ { print substr($1, 3) }'
}
before=$(repo_listing)
start_backup_bg twohub3 "$T/win" 90
ok "hub A stops between creating its image and recording it" wait_for 30 hub_a_paused
win_file=$(new_image "$before")
ok "its new image is there ($win_file)" test -n "$win_file" -a -f "$DATA/repository/$win_file"
mark=$(mark_b)
stop_hub_b && start_hub_b
is "$?" 0 "hub B restarts meanwhile"
ok "and leaves hub A's new image" test -f "$DATA/repository/$win_file"
ok "saying whose start it is" \
   eval "b_log_since $mark | grep -q 'belongs to no backup yet, but to hub $HUB_A_ID'"
kill -CONT "$HUB_PID"
wait "$BG_PID"
is "$(cat "$T/win.code")" 201 "hub A goes on: its start succeeds"
WIN_BID=$(jq -r .backup_id "$T/win.body")
is "$(jq -r '.disks[0].qcow2_path | split("/") | last' "$T/win.body")" "${win_file##*/}" \
   "with that image"
complete_disk "$WIN_BID" 0

# (c) Hub A killed there: its leftover is its own next start's to remove.
before=$(repo_listing)
start_backup_bg twohub4 "$T/dead" 90
ok "hub A stops there again" wait_for 30 hub_a_paused
dead_file=$(new_image "$before")
ok "with a new image ($dead_file)" test -n "$dead_file" -a -f "$DATA/repository/$dead_file"
kill_hub
wait "$BG_PID"
mark=$(mark_b)
stop_hub_b && start_hub_b
is "$?" 0 "hub B restarts after hub A died"
ok "and leaves hub A's leftover" test -f "$DATA/repository/$dead_file"
is "$(sql "SELECT hub_id FROM file_intents")" "$HUB_A_ID" "still under hub A's intent"
start_hub
ok "hub A's next start removes it" test ! -f "$DATA/repository/$dead_file"
is "$(sql "SELECT count(*) FROM file_intents")" 0 "and its intent"
is "$(sql "SELECT count(*) FROM backup_jobs WHERE vm_name = 'twohub4'")" 0 "no job was recorded"

# (d) A running job that no hub owns is the first starting hub's.
put_vm twohub5 $SIZE
start_backup twohub5 full
D_BID=$BID
stop_hub_b
is "$?" 0 "hub B stops"
stop_hub
sql_write "UPDATE backup_jobs SET owner_hub = NULL WHERE id = '$D_BID'"
is "$(sql "SELECT coalesce(owner_hub, 'none') FROM backup_jobs WHERE id = '$D_BID'")" none \
   "a running job owned by no hub (as before migration 0007)"
mark=$(mark_b)
start_hub_b
is "$?" 0 "hub B starts first"
is "$(sql "SELECT owner_hub FROM backup_jobs WHERE id = '$D_BID'")" "$HUB_B_ID" "and claims it"
ok "and exports its disk again" eval "b_log_since $mark | grep -q 're-exported $D_BID disk 0'"
a_mark=$(wc -l < "$HUB_LOG")
start_hub
ok "hub A, started next, leaves it" \
   eval "! tail -n +$((a_mark + 1)) '$HUB_LOG' | grep -q 're-export.*$D_BID'"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST \
         "http://127.0.0.1:$PORT_B/api/v1/backups/$D_BID/complete" -d '{"disk_id":0}')
is "$code" 200 "hub B completes it"

# --- Hub B stops cleanly.
stop_hub_b
is "$?" 0 "hub B exits 0 on SIGTERM"

# A damaged hub-id stops the start, saying so.
echo "hub-not-hex" > "$DATA_B/hub-id"
timeout 30 "$STRATA_B" serve --data-dir "$DATA_B" --listen "127.0.0.1:$PORT_B" \
  --nbd-listen "127.0.0.1:$NBD_B" "${db_b[@]}" < /dev/null > "$T/bad-id.log" 2>&1
isnt "$?" 0 "a hub whose DATA-DIR/hub-id is damaged does not start"
ok "and says why" grep -q "hub-id is not a hub id" "$T/bad-id.log"
ok "hub B's log has no sanitizer report" eval "! grep -qE 'Sanitizer|runtime error:' '$LOG_B'"
[ $_tap_failed -gt 0 ] && diag "---- hub B log ----" "$(tail -n 100 "$LOG_B")"

done_testing
