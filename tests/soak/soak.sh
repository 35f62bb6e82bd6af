#!/usr/bin/env bash
# tests/soak/soak.sh - "make soak": the hub under mixed load for SOAK_SECONDS
# (default 1800), then every point it holds checked.  TAP; exits non-zero
# when any check failed.
#
# One real hub with an API token (--api-token-file), on loopback only (the
# helpers of tests/lib/hub.sh pick free ports on 127.0.0.1), and at the same
# time:
#   - SOAK_VMS VMs (default 3; VM i has 1 + i%2 disks of SOAK_DISK_MIB,
#     default 64 MiB), each a QCOW2 file source, so every backup is
#     hub-driven.  One loop per VM: write random patterns and zeroes at
#     random offsets into its sources (qemu-io; never while a backup of the
#     VM runs), mirrored in a raw twin of each source whose SHA-256 is the
#     point's expected content, start a backup (incremental, a full one time
#     in five) through the API, wait for it to end; every SOAK_PRUNE_EVERY
#     completed backups a prune to the newest SOAK_KEEP points, every
#     SOAK_VERIFY_EVERY a verify of the context;
#   - SOAK_CLIENTS API clients (default 3): batches of listings, GETs of
#     known and unknown objects, /metrics and dashboard scrapes and bad
#     inputs, each request with the status class it must get (2xx, 4xx, or
#     either where a prune may have removed the object);
#   - a restorer: `strata restore --output` of a random completed point,
#     compared with the point's recorded checksum;
#   - a killer: SIGKILL of the hub's qemu-storage-daemon every
#     SOAK_KILL_MIN..SOAK_KILL_MAX seconds (default 60..180), at a moment a
#     disk is being copied when one is within 20 s; the hub must restart it.
# Then: every job ends within SOAK_QUIESCE_SECONDS (no job stuck running or
# finishing), the repository holds exactly the files of the catalog's disks
# (and their manifests), the hub restarts and its start-up recovery finds
# nothing to delete, every completed point restores (strata restore) to its
# recorded checksum, no request got a 5xx (503 only to a backup start while
# the storage daemon restarts, counted), and the figures are printed.
#
# Bounds: processes: the hub, its storage daemon, 3 + SOAK_VMS +
# SOAK_CLIENTS loops and their short-lived curl/qemu-io/strata children.
# Disk, in $TMPDIR: the sources and their twins (2 x the disks' size), the
# repository (at most about SOAK_KEEP + 3 copies of each disk: fulls are
# sparse, incrementals hold what changed) and one restored disk at a time
# per restorer: with the defaults under 2.5 GiB, usually a few hundred MiB.
# Everything is removed by the EXIT trap of tests/lib/setup.sh, whatever
# happens; the loops are ended by pid.

TEST_NAME=soak
source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-storage-daemon jq curl sha256sum

SOAK_SECONDS=${SOAK_SECONDS:-1800}
SOAK_VMS=${SOAK_VMS:-3}
SOAK_DISK_MIB=${SOAK_DISK_MIB:-64}
SOAK_CLIENTS=${SOAK_CLIENTS:-3}
SOAK_KILL_MIN=${SOAK_KILL_MIN:-60}
SOAK_KILL_MAX=${SOAK_KILL_MAX:-180}
SOAK_KEEP=${SOAK_KEEP:-4}
SOAK_PRUNE_EVERY=${SOAK_PRUNE_EVERY:-4}
SOAK_VERIFY_EVERY=${SOAK_VERIFY_EVERY:-7}
SOAK_JOB_TIMEOUT=${SOAK_JOB_TIMEOUT:-300}
SOAK_QUIESCE_SECONDS=${SOAK_QUIESCE_SECONDS:-300}

S=$T/soak                 # sources, twins, the run's records
EVENTS=$S/events          # one line per event: EPOCH KIND FIELDS...
POINTS=$S/points          # BACKUP-ID DISK-INDEX SHA256, one line per disk of a started backup
mkdir -p "$S/work"
: > "$EVENTS"
: > "$POINTS"

TOKEN=tok-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
TOKEN_FILE=$T/token
echo "$TOKEN" > "$TOKEN_FILE"
chmod 600 "$TOKEN_FILE"
API_TOKEN=$TOKEN

# event KIND FIELDS...: append one line to the run's record (one write of
# a short line, so the loops' lines never mix).
event ()
{
  printf '%s %s\n' "$(date +%s.%N)" "$*" >> "$EVENTS"
}

# in_workdir NAME: give this loop (a subshell) a folder of its own for the
# helpers' scratch files ($T/resp.body, $T/agent.out ...).
in_workdir ()
{
  T=$S/work/$1
  mkdir -p "$T"
}

rand () # rand N: 0..N-1 (N up to 2^30)
{
  echo $(( (RANDOM << 15 | RANDOM) % $1 ))
}

# count KIND: how many events of that kind.
count () { awk -v k="$1" '$2 == k' "$EVENTS" | wc -l; }

soak_over ()
{
  [ "$(date +%s)" -ge "$SOAK_END" ]
}

storage_up ()
{
  hub_get /healthz | jq -e '.storage_daemon == "up"' > /dev/null
}

# ------------------------------------------------------------- sources ----

vm_name () { echo "soak-vm$1"; }
src_of () { echo "$S/vm$1.disk$2.qcow2"; }
twin_of () { echo "$S/vm$1.disk$2.raw"; }
disks_of () { echo $((1 + $1 % 2)); }

DISK_BYTES=$((SOAK_DISK_MIB * MiB))

# mutate VM-INDEX: 1 to 4 writes into each disk of the VM: a random
# pattern, or zeroes one time in six, at a random 4 KiB-aligned offset, of
# 4 KiB to 1 MiB; the same writes into the disk's raw twin.  Fails when a
# write fails (the hub holding the source open would make it fail).
mutate ()
{
  local v=$1 d n i off len cmds
  for ((d = 0; d < $(disks_of "$v"); d++)); do
    cmds=()
    n=$((1 + $(rand 4)))
    for ((i = 0; i < n; i++)); do
      len=$(( (1 + $(rand 256)) * 4096 ))
      off=$(( $(rand $(( (DISK_BYTES - len) / 4096 + 1 ))) * 4096 ))
      if [ "$(rand 6)" = 0 ]; then
        cmds+=(-c "write -z $off $len")
      else
        cmds+=(-c "write -P $((1 + $(rand 255))) $off $len")
      fi
    done
    qio -f qcow2 "${cmds[@]}" "$(src_of "$v" "$d")" > "$T/mutate.out" 2>&1 ||
      { event mutate_failed "$(vm_name "$v")" "$(tr '\n' ' ' < "$T/mutate.out" | head -c 300)"; return 1; }
    qio -f raw "${cmds[@]}" "$(twin_of "$v" "$d")" > "$T/mutate.out" 2>&1 ||
      { event mutate_failed "$(vm_name "$v")" twin; return 1; }
  done
}

# ----------------------------------------------------------- VM loops ----

# vm_loop VM-INDEX: until the soak is over: change the sources, back up,
# wait for the end; prune and verify now and then.
vm_loop ()
{
  local v=$1 vm bid type status d sums=() n_done=0 tries rc ctx task
  vm=$(vm_name "$v")
  in_workdir "$vm"
  while ! soak_over; do
    mutate "$v" || return 1
    sums=()
    for ((d = 0; d < $(disks_of "$v"); d++)); do
      sums[$d]=$(sha256sum < "$(twin_of "$v" "$d")" | cut -c1-64)
    done
    type=incremental
    [ "$(rand 5)" = 0 ] && type=full
    for tries in 1 2 3 4 5 6; do
      api POST /api/v1/backups "{\"vm_name\":\"$vm\",\"backup_type\":\"$type\"}"
      [ "$API_STATUS" = 503 ] || break
      event start_503 "$vm" "$(jqb .error.message | head -c 200)"
      wait_for 60 storage_up
    done
    if [ "$API_STATUS" != 201 ]; then
      event start_refused "$vm" "$API_STATUS" "$(printf '%s' "$API_BODY" | head -c 300)"
      sleep 1
      continue
    fi
    bid=$(jqb .backup_id)
    for ((d = 0; d < ${#sums[@]}; d++)); do
      echo "$bid $d ${sums[$d]}" >> "$POINTS"
    done
    event start "$vm" "$bid" "$type"
    if ! wait_for "$SOAK_JOB_TIMEOUT" job_ended "$bid"; then
      event stuck "$vm" "$bid" "$(job_status "$bid")"
      return 1
    fi
    api GET "/api/v1/backups/$bid"
    status=$(jqb .status)
    event end "$vm" "$bid" "$status" "$(jqb '[.disks[].bytes_transferred // 0] | add')" \
          "$(jqb '[.error // empty, (.disks[] | .error // empty)] | join("; ")' | tr '\n' ' ' | head -c 400)"
    [ "$status" = completed ] || continue
    n_done=$((n_done + 1))
    ctx=$(jqb .context_id)
    if [ $((n_done % SOAK_PRUNE_EVERY)) = 0 ]; then
      api POST "/api/v1/contexts/$ctx/prune" "{\"keep_last\":$SOAK_KEEP}"
      task=$(jqb '.task_id // empty')
      case $API_STATUS in
        200) event prune "$vm" none completed 0 0 ;;
        202) rc=timeout
             wait_for 300 task_ended "$task" && rc=$(task_status "$task")
             api GET "/api/v1/tasks/$task"
             event pruned "$vm" $(jqb '.result.remove[]?')
             event prune "$vm" "$task" "$rc" "$(jqb '.result.remove | length')" \
                   "$(jqb '.result.bytes_freed // 0')" "$(jqb '.error // ""' | head -c 300)" ;;
        *) event prune_refused "$vm" "$API_STATUS" "$(printf '%s' "$API_BODY" | head -c 300)" ;;
      esac
    fi
    if [ $((n_done % SOAK_VERIFY_EVERY)) = 0 ]; then
      api POST "/api/v1/contexts/$ctx/verify"
      task=$(jqb '.task_id // empty')
      if [ "$API_STATUS" = 202 ]; then
        rc=timeout
        wait_for 300 task_ended "$task" && rc=$(task_status "$task")
        api GET "/api/v1/tasks/$task"
        event verify "$vm" "$task" "$rc" "$(jqb '.result.points | length')" \
              "$(jqb '[.result.points[]? | select(.verify_state == "corrupt") | .backup_id] | join(",")')"
      else
        event verify_refused "$vm" "$API_STATUS" "$(printf '%s' "$API_BODY" | head -c 300)"
      fi
    fi
    sleep "0.$(rand 10)"          # pacing, not synchronisation
  done
}

# ------------------------------------------------------------ restores ----

# restore_point BID IDX SHA KIND: `strata restore --output` of the point and
# its checksum against SHA; one event KIND with the outcome: ok, differs,
# gone (no longer completed: a prune removed it), failed, or interrupted (a
# kill of the storage daemon since it began; then it is tried once more).
restore_point ()
{
  local bid=$1 idx=$2 sha=$3 kind=$4 retried=$5 out t0 got
  out=$T/restore.raw
  rm -f "$out"
  t0=$(date +%s.%N)
  agent restore --token-file "$TOKEN_FILE" --backup "$bid" --disk "$idx" --output "$out"
  if [ "$AGENT_RC" = 0 ]; then
    got=$(sha256sum < "$out" | cut -c1-64)
    if [ "$got" = "$sha" ]; then
      event "$kind" ok "$bid" "$idx" "$t0"
    else
      event "$kind" differs "$bid" "$idx" "$t0" "got $got"
    fi
  elif [ "$(job_status "$bid")" != completed ]; then
    event "$kind" gone "$bid" "$idx" "$t0"
  elif [ -z "$retried" ] && [ -n "$(awk -v t="$t0" '$2 == "kill" && $1 >= t - 1' "$EVENTS")" ]; then
    # The storage daemon serving the export was killed under it: again, once.
    event "$kind" interrupted "$bid" "$idx" "$t0" "exit $AGENT_RC: $(printf '%s' "$AGENT_ERR" | tr '\n' ' ' | head -c 200)"
    wait_for 60 storage_up
    restore_point "$bid" "$idx" "$sha" "$kind" retried
    return
  else
    event "$kind" failed "$bid" "$idx" "$t0" "exit $AGENT_RC: $(printf '%s' "$AGENT_ERR" | tr '\n' ' ' | head -c 300)"
  fi
  rm -f "$out"
}

# completed_ids: the backups the run saw complete, one a line.
completed_ids ()
{
  awk '$2 == "end" && $5 == "completed" { print $4 }' "$EVENTS"
}

restorer_loop ()
{
  local line
  in_workdir restorer
  while ! soak_over; do
    # A disk of a point the hub lists completed now (a prune may still take
    # it away before the restore opens it: "gone").
    line=$(grep -F -f <(hub_get '/api/v1/backups?status=completed&limit=1000' |
                          jq -r '.backups[].backup_id') "$POINTS" 2>/dev/null | shuf -n 1)
    if [ -n "$line" ]; then
      # shellcheck disable=SC2086
      restore_point $line restore
    fi
    sleep "$((1 + $(rand 4))).$(rand 10)"   # pacing
  done
}

# --------------------------------------------------------------- killer ----

# copy_running: a hub worker is copying a disk now.
copy_running ()
{
  hub_get '/api/v1/backups?status=running&limit=100' |
    jq -e '[.backups[].disks[] | select(.progress != null and .progress.bytes_done > 0)] | length > 0'
}

killer_loop ()
{
  local pid t0 new
  in_workdir killer
  while :; do
    sleep "$((SOAK_KILL_MIN + $(rand $((SOAK_KILL_MAX - SOAK_KILL_MIN + 1)))))"   # the random period
    soak_over && return 0
    pid=$(qsd_pids | awk '{print $1}')
    if [ -z "$pid" ]; then
      event kill_nodaemon
      continue
    fi
    # Aim at a copy: the kill follows the first sight (within 20 s) of a
    # disk being copied at once (most copies here last well under a second).
    wait_for 20 eval "copy_running && kill -KILL $pid" && event kill_aim copying
    t0=$(date +%s.%N)
    kill -KILL "$pid" 2>/dev/null
    event kill "$pid"
    # Up again: another daemon of the hub's, and /healthz says so.
    if wait_for 60 eval "new=\$(qsd_pids); [ -n \"\$new\" ] && [ \"\$new\" != $pid ] && storage_up"; then
      event kill_up "$pid" "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')"
    else
      event kill_stuck "$pid"
    fi
  done
}

# ---------------------------------------------------------- API clients ----

# A request of the load: LABEL EXPECT METHOD PATH [BODY], EXPECT being 2
# (a 2xx), 4 (a 4xx) or 24 (either: the object may have been pruned).
# NOAUTH in front of the label: sent without the token.
_client_requests ()
{
  local vm bid ctx
  vm=$(vm_name "$(rand "$SOAK_VMS")")
  bid=$(cut -d' ' -f1 "$POINTS" 2>/dev/null | shuf -n 1)
  [ -n "$bid" ] || bid=backup-none-yet
  ctx=$(awk '$2 == "ctx" { print $3 }' "$EVENTS" | shuf -n 1)
  case $(rand 24) in
    0) echo "healthz 2 GET /healthz" ;;
    1) echo "vms 2 GET /api/v1/vms" ;;
    2) echo "vm 2 GET /api/v1/vms/$vm" ;;
    3) echo "backups 2 GET /api/v1/backups?limit=20" ;;
    4) echo "backups_vm 2 GET /api/v1/backups?vm_name=$vm&status=completed" ;;
    5) echo "backup 24 GET /api/v1/backups/$bid" ;;
    6) echo "contexts 2 GET /api/v1/contexts" ;;
    7) echo "repos 2 GET /api/v1/repositories/default" ;;
    8) echo "tasks 2 GET /api/v1/tasks?status=running" ;;
    9) echo "metrics 2 GET /metrics" ;;
    10) echo "dashboard 2 GET /" ;;
    11) echo "restores 2 GET /api/v1/restores" ;;
    12) echo "bad_id 4 GET /api/v1/backups/bad%20id" ;;
    13) echo "unknown_backup 4 GET /api/v1/backups/backup-nope-20260101T000000-000000000000" ;;
    14) echo "bad_limit 4 GET /api/v1/backups?limit=0" ;;
    15) echo "repeated_param 4 GET /api/v1/backups?limit=5&limit=6" ;;
    16) echo "bad_json 4 POST /api/v1/backups {\"vm_name\":" ;;
    17) echo "bad_type 4 POST /api/v1/backups {\"vm_name\":\"$vm\",\"backup_type\":\"weekly\"}" ;;
    18) echo "NOAUTH 4 GET /api/v1/vms" ;;
    19) echo "nul_name 4 DELETE /api/v1/vms/a%00b" ;;
    20) echo "complete_hub_job 4 POST /api/v1/backups/$bid/complete {\"disk_id\":0}" ;;
    21) echo "unknown_route 4 GET /api/v1/nothing" ;;
    22) echo "bad_patch 4 PATCH /api/v1/backups/$bid {\"protected\":\"yes\"}" ;;
    23) if [ -n "$ctx" ]; then echo "context 24 GET /api/v1/contexts/$ctx"
        else echo "unknown_prune 4 POST /api/v1/contexts/ctx-nope/prune {}"; fi ;;
  esac
}

# client_loop N: batches of 10 to 30 requests, one curl each (kept-alive
# connection), each answer one event: req CLIENT LABEL EXPECT CODE SECONDS.
client_loop ()
{
  local c=$1 i n label expect method path body args
  in_workdir "client$c"
  while ! soak_over; do
    n=$((10 + $(rand 21)))
    args=()
    for ((i = 0; i < n; i++)); do
      read -r label expect method path body < <(_client_requests)
      [ $i -gt 0 ] && args+=(--next)
      args+=(-s -g --path-as-is -o /dev/null --max-time 30 -X "$method"
             -w "req c$c $label $expect %{http_code} %{time_total}\n")
      [ "$label" = NOAUTH ] || args+=(-H "Authorization: Bearer $TOKEN")
      [ -n "$body" ] && args+=(--data-binary "$body")
      args+=("http://127.0.0.1:$HUB_PORT$path")
    done
    # The batch's lines are stamped when it ends.
    curl "${args[@]}" 2>/dev/null > "$T/batch"
    sed "s/^/$(date +%s.%N) /" "$T/batch" >> "$EVENTS"
    sleep "0.$(rand 10)"          # pacing
  done
}

# ----------------------------------------------------------------- run ----

diag "soak: $SOAK_SECONDS s, $SOAK_VMS VMs of $SOAK_DISK_MIB MiB disks, $SOAK_CLIENTS API clients," \
     "storage daemon killed every $SOAK_KILL_MIN..$SOAK_KILL_MAX s, in $T"

start_hub --api-token-file "$TOKEN_FILE"
api GET /api/v1/vms
is "$API_STATUS" 200 "the hub answers with its token"
api_raw "GET /api/v1/vms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
is "$API_STATUS" 401 "and refuses a request without it"

for ((v = 0; v < SOAK_VMS; v++)); do
  disks=()
  for ((d = 0; d < $(disks_of "$v"); d++)); do
    qemu-img create -q -f qcow2 "$(src_of "$v" "$d")" "$DISK_BYTES" || bail_out "qemu-img create"
    truncate -s "$DISK_BYTES" "$(twin_of "$v" "$d")"
    disks+=("$(jq -cn --argjson i "$d" --argjson s "$DISK_BYTES" --arg src "$(src_of "$v" "$d")" \
                 '{disk_index:$i, size_bytes:$s, source:$src}')")
  done
  api PUT "/api/v1/vms/$(vm_name "$v")" "{\"disks\":[$(IFS=,; echo "${disks[*]}")]}"
  is "$API_STATUS" 201 "VM $(vm_name "$v") with $(disks_of "$v") QCOW2 file source(s)"
done

SOAK_START=$(date +%s)
SOAK_END=$((SOAK_START + SOAK_SECONDS))
loops=()
for ((v = 0; v < SOAK_VMS; v++)); do
  vm_loop "$v" &
  loops+=($!)
done
for ((c = 0; c < SOAK_CLIENTS; c++)); do
  client_loop "$c" &
  loops+=($!)
done
restorer_loop &
loops+=($!)
killer_loop &
killer=$!

# Contexts, for the clients' GETs, as they appear; and the hub's health.
while ! soak_over; do
  hub_alive || break
  if [ "$(awk '$2 == "ctx"' "$EVENTS" | wc -l)" -lt "$SOAK_VMS" ]; then
    for ctx in $(hub_get /api/v1/contexts | jq -r '.contexts[]?.context_id'); do
      grep -q " ctx $ctx\$" "$EVENTS" || event ctx "$ctx"
    done
  fi
  sleep 1
done
ok "the hub ran through the soak" hub_alive
hub_alive || bail_out "the hub died during the soak"

# The loops end by themselves once the time is over (a VM loop after its
# running backup ends); bounded, then ended by pid.
kill "$killer" 2>/dev/null
deadline=$((SECONDS + SOAK_JOB_TIMEOUT + 60))
for p in "${loops[@]}"; do
  while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
  kill -0 "$p" 2>/dev/null && { diag "loop $p did not end in time; killing it"; kill -KILL "$p"; }
  wait "$p" 2>/dev/null
done
wait "$killer" 2>/dev/null

# ------------------------------------------------------------ quiesce ----

nothing_runs ()
{
  [ "$(hub_get '/api/v1/backups?status=running&limit=1' | jq -r .total)" = 0 ] &&
  [ "$(hub_get '/api/v1/backups?status=finishing&limit=1' | jq -r .total)" = 0 ] &&
  [ "$(hub_get '/api/v1/tasks?status=running' | jq -r '.tasks | length')" = 0 ]
}
ok "no job runs or finishes, no task runs, within ${SOAK_QUIESCE_SECONDS}s" \
   wait_for "$SOAK_QUIESCE_SECONDS" nothing_runs
is "$(grep -c ' stuck ' "$EVENTS")" 0 "no backup stayed running past ${SOAK_JOB_TIMEOUT}s"

# ------------------------------------------------------------ orphans ----

# all_backups: every backup the hub lists (every status), as JSON objects, one a line.
all_backups ()
{
  local off=0 page
  while :; do
    page=$(hub_get "/api/v1/backups?limit=1000&offset=$off")
    jq -c '.backups[]' <<< "$page"
    off=$((off + 1000))
    [ "$off" -lt "$(jq -r .total <<< "$page")" ] || break
  done
}

# repo_against_api DESC: the repository's files (but its marker
# strata-repository.json) are exactly the images of
# the disks the API lists with a file, and those images' manifests (a
# completed disk has one; a failed one may not).  Two tests.
repo_against_api ()
{
  local repo files images
  repo=$(cd "$DATA/repository" && pwd -P)
  files=$(cd "$repo" && find . -type f ! -path ./strata-repository.json | sed 's|^\./||' | sort)
  images=$(all_backups | jq -r '.disks[].qcow2_path // empty' | sed "s|^$repo/||" | sort -u)
  is "$(comm -23 <(echo "$files") <( (echo "$images"; sed 's/$/.manifest/' <<< "$images") | sort))" "" \
     "$1: every file of the repository is a listed disk's image or its manifest"
  is "$(comm -13 <(echo "$files") <(echo "$images"))" "" "$1: every listed image is in the repository"
}
repo_against_api "after the soak"

api GET /metrics
is "$(printf '%s\n' "$API_BODY" | awk '/^strata_storage_daemon_restarts_total/ { print $2 }')" "$(count kill)" \
   "the hub's metrics count every restart of its storage daemon"

# The hub's own start-up recovery, at a restart, finds nothing to delete.
stop_hub
marker=$(wc -l < "$HUB_LOG")
start_hub
ok "the restarted hub runs" hub_alive
recovery=$(tail -n +"$((marker + 1))" "$HUB_LOG" | grep -E "belongs to no backup|no backup owned|deleting it|was (running|finishing) when")
is "$recovery" "" "the restarted hub's recovery finds no orphan and no interrupted job"
repo_against_api "after the restart"

# ------------------------------------------------------- every point ----

in_main_T=$T
in_workdir final
completed=$(hub_get '/api/v1/backups?status=completed&limit=1000' | jq -r '.backups[] | .backup_id as $b | .disks[] | "\($b) \(.disk_index)"')
n_final=0
while read -r bid idx; do
  [ -n "$bid" ] || continue
  sha=$(awk -v b="$bid" -v i="$idx" '$1 == b && $2 == i { print $3 }' "$POINTS")
  if [ -z "$sha" ]; then
    event final failed "$bid" "$idx" 0 "no recorded checksum"
    continue
  fi
  restore_point "$bid" "$idx" "$sha" final
  n_final=$((n_final + 1))
done <<< "$completed"
T=$in_main_T
cmp_ok "$n_final" -gt 0 "some completed points to restore"
bad_final=$(awk '$2 == "final" && $3 != "ok"' "$EVENTS")
is "$bad_final" "" "every completed point ($n_final disk(s)) restores to the checksum taken before its backup"
# Those the run saw complete and no prune removed are all still there.
missing=""
for bid in $(completed_ids); do
  [ "$(job_status "$bid")" = completed ] && continue
  awk '$2 == "pruned"' "$EVENTS" | grep -qw -- "$bid" || missing+=" $bid($(job_status "$bid"))"
done
is "$missing" "" "every backup that completed is still completed, unless a prune removed it"

# ------------------------------------------------------------ figures ----

is "$(awk '$2 == "restore" && ($3 == "differs" || $3 == "failed")' "$EVENTS")" "" \
   "every restore during the soak was identical (or its point pruned meanwhile, or retried once after a daemon kill)"
is "$(awk '$2 == "req" && $6 ~ /^5/' "$EVENTS")" "" "no API request got a 5xx"
is "$(awk '$2 == "req" && !($6 ~ "^[" $5 "]")' "$EVENTS" | head -20)" "" \
   "every API request got the status class it should"
is "$(awk '$2 == "start_refused" || $2 == "prune_refused" || $2 == "verify_refused" || $2 == "mutate_failed"' "$EVENTS")" "" \
   "no backup start, prune or verify was refused; every write into a source worked"
is "$(awk '$2 == "prune" && $5 != "completed"' "$EVENTS")" "" "every prune task completed"
is "$(awk '$2 == "verify" && ($5 != "completed" || $7 != "")' "$EVENTS")" "" "every verify completed and found nothing corrupt"
is "$(count kill_stuck)" 0 "the hub restarted its storage daemon after every kill"
failed_jobs=$(awk '$2 == "end" && $5 != "completed"' "$EVENTS")
is "$failed_jobs" "" "every backup completed"

lat=$(awk '$2 == "req" { print $7 }' "$EVENTS" | sort -n)
nreq=$(printf '%s\n' "$lat" | grep -c .)
pct () { printf '%s\n' "$lat" | awk -v p="$1" -v n="$nreq" 'NR == int((n - 1) * p) + 1 { printf "%.1f", $1 * 1000 }'; }
{
  echo "soak figures ($SOAK_SECONDS s, $SOAK_VMS VMs, $SOAK_CLIENTS clients, --workers 2):"
  echo "  backups started $(count start), completed $(awk '$2 == "end" && $5 == "completed"' "$EVENTS" | wc -l)," \
       "failed/cancelled $(awk '$2 == "end" && $5 != "completed"' "$EVENTS" | wc -l)," \
       "starts answered 503 $(count start_503), refused $(count start_refused)"
  awk '$2 == "end" && $5 != "completed" { $1 = ""; $2 = ""; print "    " $0 }' "$EVENTS"
  echo "  fulls $(awk '$2 == "start" && $5 == "full"' "$EVENTS" | wc -l), bytes backed up" \
       "$(awk '$2 == "end" { s += $6 } END { printf "%d", s }' "$EVENTS")"
  echo "  restores during the run: $(awk '$2 == "restore" && $3 == "ok"' "$EVENTS" | wc -l) identical," \
       "$(awk '$2 == "restore" && $3 == "gone"' "$EVENTS" | wc -l) pruned meanwhile," \
       "$(awk '$2 == "restore" && $3 == "interrupted"' "$EVENTS" | wc -l) cut by a kill and retried," \
       "$(awk '$2 == "restore" && ($3 == "failed" || $3 == "differs")' "$EVENTS" | wc -l) bad; at the end $n_final"
  awk '$2 == "restore" && ($3 == "failed" || $3 == "differs") { $1 = ""; $2 = ""; print "    " $0 }' "$EVENTS"
  echo "  prunes $(count prune) (points removed $(awk '$2 == "prune" { s += $6 } END { print s + 0 }' "$EVENTS")," \
       "bytes freed $(awk '$2 == "prune" { s += $7 } END { printf "%d", s }' "$EVENTS")), verifies $(count verify)"
  echo "  storage daemon kills $(count kill) ($(count kill_aim) while a disk was being copied;" \
       "copies started again $(grep -c 'restarted during the copy' "$HUB_LOG")), back up in" \
       "$(awk '$2 == "kill_up" { printf "%s%.1f", sep, $4; sep = " " }' "$EVENTS") s"
  echo "  API requests $nreq: $(awk '$2 == "req" { c[substr($6, 1, 1) "xx"]++ } END { for (k in c) printf "%s %d  ", k, c[k] }' "$EVENTS")"
  echo "  API latency p50 $(pct 0.5) ms, p99 $(pct 0.99) ms, max $(pct 1) ms"
  echo "  repository $(du -sm "$DATA/repository" | cut -f1) MiB, sources and twins $(du -sm "$S" --exclude=work | cut -f1) MiB"
} > "$T/figures"
diag "$(cat "$T/figures")"
# What the run leaves for a look afterwards (make soak: build/soak/).
if [ -n "${SOAK_LOG_DIR:-}" ]; then
  mkdir -p "$SOAK_LOG_DIR"
  cp "$T/figures" "$EVENTS" "$POINTS" "$HUB_LOG" "$SOAK_LOG_DIR/"
fi

done_testing
