#!/usr/bin/env bash
# test-schedule.sh - the scheduler, with the hub in the Europe/Berlin time
# zone (schedules are local time; the catalog and the API speak UTC):
#   due      a VM whose policy runs every minute gets a next run, and at
#            that time a hub-driven backup of it starts and completes; the
#            VM's last run is set and its next run moves on;
#   missed   a run missed while the hub was down (next_run_at in the past at
#            start-up, three daily runs ago) runs once at the start, not
#            once per missed run, and the next run is the schedule's next
#            local time; a changed schedule moves the next run;
#   skipped  a run that comes due while a backup of the VM still runs (here
#            when the hub starts again after dying under that backup) is
#            skipped: last_skipped_at is set, the next run moves on, the
#            hub's log says so and why, and no second job is made.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-storage-daemon nbdinfo jq curl sqlite3
[ -e /usr/share/zoneinfo/Europe/Berlin ] || skip_all "no tzdata for Europe/Berlin"

# The hub, and every date(1) below that is not -u, run in Berlin time.
export TZ=Europe/Berlin
SIZE=$((16 * MiB))
start_hub
H=http://127.0.0.1:$HUB_PORT/api/v1
P=/api/v1/policies
V=/api/v1/vms

get ()
{
  curl -s "$H$1" | jq -r "${@:2}"
}

# vm_set VM FIELD: the VM's FIELD is not null.
vm_set ()
{
  [ "$(get "/vms/$1" ".$2")" != null ]
}

# epoch TEXT: seconds since the epoch of a catalog time (UTC).
epoch ()
{
  date -u -d "$1" +%s
}

# local_next HH MM: the catalog's UTC text of the next HH:MM local time
# strictly after now.
local_next ()
{
  local s
  s=$(date -d "today $1:$2" +%s)
  [ "$s" -gt "$(date +%s)" ] || s=$(date -d "tomorrow $1:$2" +%s)
  date -u -d "@$s" +%Y-%m-%dT%H:%M:%S.000Z
}

# jobs_of VM: the VM's backup ids, newest first, on one line.
jobs_of ()
{
  get "/backups?vm_name=$1" '[.backups[].backup_id] | join(" ")'
}

# no_job_running VM
no_job_running ()
{
  [ "$(get "/backups?vm_name=$1" '[.backups[] | select(.status == "running" or .status == "finishing")] | length')" = 0 ]
}

# vm_with_source VM SOURCE SIZE [POLICY]: the PUT body of a one-disk VM.
vm_with_source ()
{
  jq -cn --arg s "$2" --argjson z "$3" --arg p "${4-}" \
    '{disks:[{disk_index:0,size_bytes:$z,source:$s}]} + (if $p != "" then {policy:$p} else {} end)'
}

# --- Due: every minute --------------------------------------------------------
qemu-img create -q -f qcow2 "$T/sd1.qcow2" $SIZE
qemu-io -f qcow2 -c 'write -P 0x11 0 2M' "$T/sd1.qcow2" > /dev/null
api PUT $P/every '{"schedule":"* * * * *"}'
is "$API_STATUS" 201 "a policy that runs every minute"
api PUT $V/sd1 "$(vm_with_source sd1 "$T/sd1.qcow2" $SIZE every)"
is "$API_STATUS/$(jqb .policy)" "201/every" "a VM with a source takes it"
ok "the scheduler gives it a next run" wait_for 30 vm_set sd1 next_run_at
N1=$(get /vms/sd1 .next_run_at)
now=$(date +%s)
like "$N1" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:00\.000Z$' "next_run_at is a whole minute, UTC ($N1)"
ok "... within the next minute" test "$(epoch "$N1")" -gt $((now - 2)) -a "$(epoch "$N1")" -le $((now + 60))
is "$(get /vms/sd1 .last_run_at)" null "no run yet"

ok "at that time the hub starts its backup (last_run_at set)" wait_for 150 vm_set sd1 last_run_at
R1=$(get /vms/sd1 .last_run_at)
ok "last_run_at ($R1) is not before the due time" test "$(epoch "$R1")" -ge "$(epoch "$N1")"
B1=$(jobs_of sd1 | awk '{print $NF}')
like "$B1" '^backup-' "the VM has a backup ($B1)"
api GET "/api/v1/backups/$B1"
is "$(jqb .driver)" hub "it is hub-driven"
ok "it ends" wait_for 120 job_ended "$B1"
is "$(job_status "$B1")" completed "it completed"
N2=$(get /vms/sd1 .next_run_at)
ok "next_run_at moved forward ($N1 -> $N2)" test "$(epoch "$N2")" -gt "$(epoch "$N1")" -a "$(epoch "$N2")" -gt "$(epoch "$R1")"
is "$(get /vms/sd1 .last_skipped_at)" null "nothing was skipped"
# Leave the schedule: a PUT without the policy clears the next run.
api PUT $V/sd1 "$(vm_with_source sd1 "$T/sd1.qcow2" $SIZE)"
is "$API_STATUS/$(jqb .policy)/$(jqb .next_run_at)" "200/null/null" "sd1 leaves the policy; no next run"
ok "sd1's backups have ended" wait_for 120 no_job_running sd1

# --- Local time -----------------------------------------------------------------
# A daily run at HH:30 Berlin time, HH twelve hours from now so that it never
# comes during the test.  The catalog holds it in UTC: one or two hours
# earlier (03:30 in Berlin is 02:30Z in winter).
HH=$(( (10#$(date +%H) + 12) % 24 ))
qemu-img create -q -f qcow2 "$T/sd2.qcow2" $SIZE
qemu-io -f qcow2 -c 'write -P 0x22 1M 2M' "$T/sd2.qcow2" > /dev/null
api PUT $P/daily "{\"schedule\":\"30 $HH * * *\"}"
is "$API_STATUS/$(jqb .schedule)" "201/30 $HH * * *" "a daily policy at $HH:30 local time"
api PUT $V/sd2 "$(vm_with_source sd2 "$T/sd2.qcow2" $SIZE daily)"
is "$API_STATUS" 201 "a second VM with a source takes it"
ok "it gets a next run" wait_for 30 vm_set sd2 next_run_at
D1=$(get /vms/sd2 .next_run_at)
is "$D1" "$(local_next $HH 30)" "next_run_at is the next $HH:30 in Berlin, in UTC ($(date +%Z) now)"
isnt "$(date -u -d "$D1" +%-H)" "$HH" "... not $HH:30 UTC"

# --- Missed while down ------------------------------------------------------------
stop_hub
sql_write "UPDATE vms SET next_run_at = '$(ts_ago '3 days')' WHERE vm_name = 'sd2'"
is "$(sql "SELECT count(*) FROM vms WHERE vm_name = 'sd2' AND next_run_at < '$(ts_ago '2 days')'")" 1 \
   "with the hub down, sd2's next run is set three days back (three daily runs missed)"
before=$(jobs_of sd2)
is "$before" "" "sd2 has no backup yet"
started=$(date +%s)
start_hub
ok "at start-up the missed run runs (last_run_at set)" wait_for 60 vm_set sd2 last_run_at
R2=$(get /vms/sd2 .last_run_at)
ok "last_run_at ($R2) is after the start" test "$(epoch "$R2")" -ge $((started - 1))
B2=$(jobs_of sd2)
like "$B2" '^backup-[^ ]+$' "exactly one backup runs for the three missed runs ($B2)"
ok "it ends" wait_for 120 job_ended "$B2"
is "$(job_status "$B2")" completed "it completed"
is "$(jobs_of sd2)" "$B2" "and it is still the only one"
is "$(get /vms/sd2 .next_run_at)" "$(local_next $HH 30)" "the next run is the next $HH:30 local time again"
is "$(get /vms/sd2 .last_skipped_at)" null "nothing was skipped"

# --- A changed schedule -------------------------------------------------------------
# The VMs of a policy whose schedule changes run at the new schedule's next
# time, not once more at the old one's.
HH2=$(( (HH + 1) % 24 ))
api PUT $P/daily "{\"schedule\":\"15 $HH2 * * *\"}"
is "$API_STATUS/$(jqb .schedule)" "200/15 $HH2 * * *" "the daily policy moves to $HH2:15"
ok "sd2's next run follows: the next $HH2:15 local time" \
   wait_for 30 eval '[ "$(get /vms/sd2 .next_run_at)" = "$(local_next $HH2 15)" ]'

# --- Skipped while running --------------------------------------------------------
# sk1 reads its disk through a throttled NBD server, so that its backup
# runs for some seconds (24 MiB at 4 MiB/s).
truncate -s 32M "$T/slow.raw"
dd if=/dev/urandom of="$T/slow.raw" bs=1M count=24 seek=4 conv=notrunc status=none
throttled_source "$T/slow.raw" "$T/slow.sock" $((4 * MiB))
ok "a throttled NBD source serves sk1's disk" nbdinfo --size "nbd+unix:///src?socket=$T/slow.sock"
api PUT $P/yearly '{"schedule":"0 0 1 1 *"}'
is "$API_STATUS" 201 "a policy that runs on the first of January"
api PUT $V/sk1 "$(vm_with_source sk1 "nbd+unix:///src?socket=$T/slow.sock" $((32 * MiB)) yearly)"
is "$API_STATUS/$(jqb .policy)" "201/yearly" "sk1 takes it"
ok "sk1 gets a next run" wait_for 30 vm_set sk1 next_run_at
api POST /api/v1/backups '{"vm_name":"sk1","backup_type":"full"}'
is "$API_STATUS/$(jqb .driver)/$(jqb .status)" "201/hub/running" "a (slow) backup of sk1 runs"
RUN=$(jqb .backup_id)
# The hub dies under it; at the restart the backup is still running and the
# run is due.
kill_hub
sql_write "UPDATE vms SET next_run_at = '$(ts_ago '1 hour')' WHERE vm_name = 'sk1'"
start_hub
ok "the due run is skipped (last_skipped_at set)" wait_for 60 vm_set sk1 last_skipped_at
S=$(get /vms/sk1 .last_skipped_at)
like "$S" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' "last_skipped_at is a time ($S)"
is "$(get /vms/sk1 .last_run_at)" null "sk1 has no last run"
is "$(get /vms/sk1 .next_run_at)" "$(date -u -d "@$(date -d "$(( $(date +%Y) + 1 ))-01-01 00:00" +%s)" +%Y-%m-%dT%H:%M:%S.000Z)" \
   "the next run moved on to the next first of January, 00:00 local"
is "$(jobs_of sk1)" "$RUN" "no second job was made"
ok "the hub's log says sk1 skipped the run, and why" \
   grep -qE "sk1.*skip.*(already running|$RUN)" "$HUB_LOG"
ok "the running backup goes on and ends" wait_for 120 job_ended "$RUN"
is "$(job_status "$RUN")" completed "it completed"
is "$(jobs_of sk1)" "$RUN" "it is still sk1's only job"
kill "$SRC_QSD_PID" 2>/dev/null
wait "$SRC_QSD_PID" 2>/dev/null

done_testing
