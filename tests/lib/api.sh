# tests/lib/api.sh - the hub's HTTP API from the tests: requests and
# their status and body (api, jqb, is_error), requests that must be refused
# and change nothing (bad), and the backup flow through it: put a VM, start
# a backup, complete its disks, see whether a job has ended, race many
# starts; prune a context and follow its task.

# ----------------------------------------------------------------- API ----

API_STATUS=
API_BODY=
API_REQ=
API_CT=default        # "default": curl's own (as the seed's curl -d); "": none; else the value
API_CURL_EXTRA=()     # more curl arguments for every request (e.g. -H ...)

_api_context ()
{
  [ -n "$API_REQ" ] || return 0
  printf '    last request: %s\n    response: %s %s' "$API_REQ" "$API_STATUS" "$(printf '%s' "$API_BODY" | head -c 2000)"
}

# api METHOD PATH [BODY]: sets API_STATUS (000 when nothing answered) and
# API_BODY.  The body is sent as is (curl --data-binary); with API_CT=""
# no Content-Type header is sent at all.
api ()
{
  local method=$1 path=$2
  if [ $# -ge 3 ]; then
    printf '%s' "$3" > "$T/req.body"
    _api_send "$method" "$path" "$T/req.body" "$3"
  else
    _api_send "$method" "$path" "" ""
  fi
}

# api_file METHOD PATH FILE: the same with the body read from FILE.
api_file ()
{
  _api_send "$1" "$2" "$3" "<$(stat -c %s "$3") bytes from $3>"
}

_api_send ()
{
  local method=$1 path=$2 file=$3 shown=$4 args=()
  args=(-s -S -g --path-as-is -o "$T/resp.body" -w '%{http_code}' --max-time 30 -X "$method")
  [ -n "$API_TOKEN" ] && args+=(-H "Authorization: Bearer $API_TOKEN")
  args+=("${HUB_CURL_TLS[@]}" "${API_CURL_EXTRA[@]}")
  if [ -n "$file" ]; then
    args+=(--data-binary "@$file")
    case $API_CT in
      default) ;;
      "") args+=(-H 'Content-Type:') ;;
      *) args+=(-H "Content-Type: $API_CT") ;;
    esac
  fi
  : > "$T/resp.body"
  API_STATUS=$(curl "${args[@]}" "$HUB_SCHEME://$HUB_HOST:$HUB_PORT$path" 2> "$T/curl.err")
  [ -n "$API_STATUS" ] || API_STATUS=000
  API_BODY=$(cat "$T/resp.body")
  API_REQ="$method $path $(printf '%s' "$shown" | head -c 300)"
  if [ "$API_STATUS" = 000 ] && [ -n "$HUB_PID" ] && ! hub_alive; then
    wait "$HUB_PID" 2>/dev/null
    local rc=$?
    HUB_PID=
    diag "$API_REQ: no answer: $(cat "$T/curl.err")"
    bail_out "the hub died (exit status $rc$( [ $rc -gt 128 ] && echo ", signal $((rc - 128))"))"
  fi
}

# api_raw REQUEST: send a whole HTTP/1.1 request (with "Connection: close"),
# written with printf's %b escapes (\r\n, \0, \t...), byte for byte to the
# hub: what curl would not send.  Sets API_STATUS and API_BODY like api.
api_raw ()
{
  printf '%b' "$1" > "$T/req.raw"
  perl -MIO::Socket::INET -e '
    my $s = IO::Socket::INET->new (PeerAddr => "127.0.0.1:$ARGV[0]", Timeout => 30) or exit 1;
    open my $in, "<", $ARGV[1] or exit 1; binmode $in; local $/; print {$s} <$in>;
    my $r = <$s>; my ($head, $body) = split /\r\n\r\n/, $r, 2;
    my ($code) = $head =~ m{^HTTP/1\.[01] (\d{3})} or exit 1;
    open my $out, ">", $ARGV[2] or exit 1; print $out $body; print $code;' \
    "$HUB_PORT" "$T/req.raw" "$T/resp.body" > "$T/resp.code" || echo 000 > "$T/resp.code"
  API_STATUS=$(cat "$T/resp.code")
  API_BODY=$(cat "$T/resp.body")
  API_REQ="raw $(printf '%q' "$1" | head -c 300)"
}

# jqb FILTER: jq -r FILTER on the last response body.
jqb ()
{
  printf '%s' "$API_BODY" | jq -r "$@" 2>/dev/null
}

# running_jobs VM: GET the VM's running backups into $API_BODY (.backups[],
# .total), for the waits that watch an agent's job from the hub's side.
running_jobs ()
{
  api GET "/api/v1/backups?vm_name=$(urlencode "$1")&status=running"
}

# hub_get PATH: print the body of GET PATH, sent as api sends it (the
# test's token, scheme and address) but leaving $API_STATUS/$API_BODY alone,
# so that the state helpers below can be polled by wait_for.
hub_get ()
{
  local args=(-s -g --max-time 30)
  [ -n "$API_TOKEN" ] && args+=(-H "Authorization: Bearer $API_TOKEN")
  curl "${args[@]}" "${HUB_CURL_TLS[@]}" "$HUB_SCHEME://$HUB_HOST:$HUB_PORT$1"
}

# job_status ID: the job's status as the API shows it now.
job_status ()
{
  hub_get "/api/v1/backups/$1" | jq -r .status
}

# job_ended ID: the job has ended: neither running nor finishing (a
# hub-driven job is finishing while the hub settles its bitmaps).
job_ended ()
{
  case $(job_status "$1") in running|finishing|''|null) return 1 ;; esac
}

# api_is METHOD PATH [BODY] STATUS DESC: call and assert the status in one go.
api_is ()
{
  local want=${@: -2:1} desc=${@: -1}
  api "${@:1:$#-2}"
  is "$API_STATUS" "$want" "$desc"
}

# is_error STATUS CODE DESC: the last response is STATUS with a JSON error
# body {"error":{"code":CODE,"message":"..."}}.
is_error ()
{
  local want=$1 code=$2 desc=$3
  if [ "$API_STATUS" = "$want" ] &&
       printf '%s' "$API_BODY" | jq -e --arg c "$code" \
         '(.error.code == $c) and (.error.message | type == "string" and length > 0)' > /dev/null 2>&1; then
    pass "$desc"
  else
    fail "$desc" "    expected $want with error code '$code'" "$(_api_context)"
  fi
}

# has_error_body: the last response body is {"error":{"code":"...","message":"..."}}.
has_error_body ()
{
  printf '%s' "$API_BODY" | jq -e '(.error.code | type == "string") and (.error.message | type == "string")' > /dev/null
}

# ------------------------------------------------ refused, unchanged ----
# A bad-input test saves the state once (state_save), then sends each bad
# request with bad, which checks the error and that the state is the same.

# state: the whole catalog (every row of every table) and the listing of
# the default repository.
state ()
{
  catalog_dump
  echo "== files"
  repo_listing "$DATA/repository"
}

state_save ()
{
  state > "$T/state.before"
}

# _state_same DESC: one test (only when it fails) that the state is as saved;
# a difference is reported once, then becomes the new reference.
_state_same ()
{
  state > "$T/state.after"
  if ! cmp -s "$T/state.before" "$T/state.after"; then
    fail "... and leaves catalog and repository as they were ($1)" "$(diff "$T/state.before" "$T/state.after" | head -20)"
    cp "$T/state.after" "$T/state.before"
  fi
}

# bad STATUS CODE DESC METHOD PATH [BODY]: the request gets STATUS with a
# JSON error of CODE, and changes nothing.
bad ()
{
  local status=$1 code=$2 desc=$3
  shift 3
  api "$@"
  is_error "$status" "$code" "$desc"
  _state_same "$desc"
}

# bad_file STATUS CODE DESC METHOD PATH FILE: the same with the body read
# from FILE.
bad_file ()
{
  local status=$1 code=$2 desc=$3
  api_file "$4" "$5" "$6"
  is_error "$status" "$code" "$desc"
  _state_same "$desc"
}

# percent-encode a string for a URL path segment.
urlencode ()
{
  jq -rn --arg s "$1" '$s|@uri'
}

# --------------------------------------------------------- backup flow ----

# vm_json SIZE [SIZE...]: a PUT /api/v1/vms body with one disk per size.
vm_json ()
{
  local i=0 s sep="" out='{"disks":['
  for s in "$@"; do
    out+="$sep{\"disk_index\":$i,\"size_bytes\":$s,\"vmware_disk_key\":$((2000 + i)),\"unit_number\":$i}"
    sep=,
    i=$((i + 1))
  done
  echo "$out]}"
}

# put_vm NAME SIZE...: PUT the VM into the inventory with one disk per size
# (keys 2000+i, unit i); one test that it answers 201 or 200.
put_vm ()
{
  local name=$1
  shift
  api PUT "/api/v1/vms/$(urlencode "$name")" "$(vm_json "$@")"
  like "$API_STATUS" '^20[01]$' "PUT VM $name with $# disk(s)"
}

# ------------------------------------------------------- NBD credentials ----
# The hub's NBD targets speak TLS-PSK: each running job and open restore has
# its own credential, "nbd_tls":{identity,psk} in the answer that started it
# (and in GET of that one object).  Tests keep them in $T/keys/IDENTITY.psk
# (IDENTITY:KEY, mode 0600), the file libnbd's ?tls-psk-file= reads.

# nbd_credential_save JSON: write the credential of an answer (nothing when
# it has none, with --nbd-insecure) and print its file.
nbd_credential_save ()
{
  local id psk
  id=$(printf '%s' "$1" | jq -r '.nbd_tls.identity // empty' 2>/dev/null)
  psk=$(printf '%s' "$1" | jq -r '.nbd_tls.psk // empty' 2>/dev/null)
  [ -n "$id" ] || return 0
  mkdir -p "$T/keys"
  ( umask 077; printf '%s:%s\n' "$id" "$psk" > "$T/keys/$id.psk" )
  echo "$T/keys/$id.psk"
}

# nbd_key_file IDENTITY: the file of an NBD identity's key: a saved
# credential; else the job's or restore's as the hub hands it out now (GET);
# else, for the hub's master identity, $NBD_MASTER_PSK (default
# $DATA/nbd.psk).  Prints nothing when there is none.
nbd_key_file ()
{
  local id=$1
  if [ -f "$T/keys/$id.psk" ]; then
    echo "$T/keys/$id.psk"
  elif [[ $id == job-* ]]; then
    ( api GET "/api/v1/backups/${id#job-}"; nbd_credential_save "$API_BODY" )
  elif [[ $id == restore-* ]]; then
    ( api GET "/api/v1/restores/${id#restore-}"; nbd_credential_save "$API_BODY" )
  else
    echo "${NBD_MASTER_PSK:-$DATA/nbd.psk}"
  fi
}

# nbd_keyed URI: the URI with ?tls-psk-file= its identity's key file (an
# nbd:// URI, or one that has it already, as it is).
nbd_keyed ()
{
  local uri=$1 id
  if [[ $uri == nbds://*@* && $uri != *\?* ]]; then
    id=${uri#nbds://}
    id=${id%%@*}
    uri="$uri?tls-psk-file=$(nbd_key_file "$id")"
  fi
  echo "$uri"
}

# answer_uri [FILTER]: the NBD URI at FILTER (default .nbd_uri) of the last
# answer, with its key (nbd_keyed; the answer's own credential first).
answer_uri ()
{
  nbd_credential_save "$API_BODY" > /dev/null
  nbd_keyed "$(jqb "${1:-.nbd_uri}")"
}

# master_keyed URI: the URI opened with the hub's master key instead of its
# own identity's (what the hub's own clients use): for checks of what the
# NBD server serves, whether or not a job's key is still in force.
master_keyed ()
{
  local uri=${1%%\?*} file id
  if [[ $uri == nbds://*@* ]]; then
    file=${NBD_MASTER_PSK:-$DATA/nbd.psk}
    id=$(head -n 1 "$file" 2>/dev/null)
    id=${id%%:*}
    uri="nbds://$id@${uri#*@}?tls-psk-file=$file"
  fi
  echo "$uri"
}

# start_backup VM TYPE [EXTRA-JSON-MEMBERS]: POST /api/v1/backups; one test
# that it answers 201.  Sets BID, CTX and, per disk index, NBD_URI[i] (with
# the job's key: ?tls-psk-file=) and QCOW2[i] from the answer, and
# NBD_KEY_FILE (the job's credential, empty without TLS).
start_backup ()
{
  local body
  body=$(jq -cn --arg v "$1" --arg t "$2" '{vm_name:$v, backup_type:$t}')
  [ -n "$3" ] && body="${body%\}},$3}"
  _start_backup_body "$1" "$2" "$body"
}

# start_backup_bg VM PREFIX [MAX-SECONDS]: POST /api/v1/backups of a full
# backup of VM in the background (curl, bounded by MAX-SECONDS, default 30);
# the status goes to PREFIX.code, the body to PREFIX.body, curl's pid to BG_PID.
start_backup_bg ()
{
  local args=(-s -o "$2.body" -w '%{http_code}' --max-time "${3:-30}" -X POST)
  [ -n "$API_TOKEN" ] && args+=(-H "Authorization: Bearer $API_TOKEN")
  curl "${args[@]}" --data-binary "{\"vm_name\":\"$1\",\"backup_type\":\"full\"}" \
    "http://127.0.0.1:$HUB_PORT/api/v1/backups" > "$2.code" &
  BG_PID=$!
}

_start_backup_body ()
{
  local idx uri path
  api POST /api/v1/backups "$3"
  is "$API_STATUS" 201 "start $2 backup of $1"
  BID=$(jqb .backup_id)
  CTX=$(jqb .context_id)
  BACKUP_JSON=$API_BODY
  NBD_KEY_FILE=$(nbd_credential_save "$API_BODY")
  NBD_URI=()
  QCOW2=()
  while read -r idx uri path; do
    [ -n "$idx" ] || continue
    NBD_URI[$idx]=$(nbd_keyed "$uri")
    QCOW2[$idx]=$path
  done < <(jqb '.disks[]? | "\(.disk_index) \(.nbd_uri) \(.qcow2_path)"')
}

# complete_disk BID IDX [CHANGE_ID [BYTES]]: one test that it answers 200.
complete_disk ()
{
  local body
  body=$(jq -cn --argjson d "$2" --arg c "${3-}" --arg b "${4:-}" \
    '{disk_id:$d} + (if $c != "" then {change_id:$c} else {} end)
                  + (if $b != "" then {bytes_transferred:($b|tonumber)} else {} end)')
  api POST "/api/v1/backups/$1/complete" "$body"
  is "$API_STATUS" 200 "complete disk $2 of $1"
}

# copying ID: disk 0 of job ID is being copied by the hub: its progress
# shows bytes done, short of the total.
copying ()
{
  hub_get "/api/v1/backups/$1" |
    jq -e '.disks[0].progress | . != null and .bytes_done > 0 and .bytes_done < .bytes_total' \
    > /dev/null
}

# slow_hub_backup VM: a hub-driven full backup of VM, whose one 32 MiB disk
# (16 MiB of random data, kept in $T/src.raw) is an NBD source throttled
# to 3 MB/s (throttled_source), so that its copy lasts seconds.  Tests that
# the source serves, the VM is made, the backup starts and its copy gets
# under way.  Sets SRC, B (the backup id) and SRC_QSD_PID.
slow_hub_backup ()
{
  SRC=$T/src.raw
  truncate -s 32M "$SRC"
  dd if=/dev/urandom of="$SRC" bs=1M count=16 seek=4 conv=notrunc status=none
  throttled_source "$SRC" "$T/src.sock" $((3 * MiB))
  ok "a throttled NBD source serves the disk" nbdinfo --size "nbd+unix:///src?socket=$T/src.sock"
  api PUT "/api/v1/vms/$(urlencode "$1")" "$(jq -cn --arg s "nbd+unix:///src?socket=$T/src.sock" \
    '{disks:[{disk_index:0,size_bytes:33554432,source:$s}]}')"
  is "$API_STATUS" 201 "a VM whose disk is the throttled NBD source"
  api POST /api/v1/backups "$(jq -cn --arg v "$1" '{vm_name:$v,backup_type:"full"}')"
  is "$API_STATUS" 201 "its hub-driven backup starts"
  B=$(jqb .backup_id)
  ok "the copy is under way" wait_for 30 copying "$B"
}

# restores_as_src ID: three tests: a restore export of disk 0 of backup ID
# opens, and reads (nbdcopy) byte for byte as $SRC; the export is closed.
restores_as_src ()
{
  api POST /api/v1/restores "{\"backup_id\":\"$1\",\"disk_index\":0}"
  is "$API_STATUS" 201 "a restore export of it"
  ok "it reads exactly as the source" nbdcopy "$(answer_uri)" "$T/out.raw"
  ok "byte for byte" cmp "$SRC" "$T/out.raw"
  api DELETE "/api/v1/restores/$(jqb .restore_id)"
  rm -f "$T/out.raw"
}

# ------------------------------------------------------ tasks, prunes ----

# task_status ID: the task's status as the API shows it now (polled by
# wait_for; leaves $API_STATUS/$API_BODY alone).
task_status ()
{
  hub_get "/api/v1/tasks/$1" | jq -r .status
}

# task_ended ID: the task is no longer running (completed or failed).
task_ended ()
{
  case $(task_status "$1") in completed|failed) return 0 ;; esac
  return 1
}

# context_of VM: the context id of the VM's backups (its only context).
context_of ()
{
  hub_get "/api/v1/contexts?vm_name=$(urlencode "$1")" |
    jq -r '.contexts[0].context_id // empty'
}

# prune CTX BODY: POST /api/v1/contexts/CTX/prune BODY; sets TASK (empty
# when the answer names no task).
prune ()
{
  api POST "/api/v1/contexts/$1/prune" "$2"
  TASK=$(jqb '.task_id // empty')
}

# prune_ok CTX BODY DESC: three tests: the prune is accepted (202 with a
# task), the task ends in time, and it completed.  Leaves the task object
# in $API_BODY and its id in $TASK.
prune_ok ()
{
  prune "$1" "$2"
  is "$API_STATUS" 202 "$3: the prune starts a task"
  [ -n "$TASK" ] || { fail "$3: the answer names the task"; return 1; }
  ok "$3: the task ends" wait_for "${PRUNE_TIMEOUT:-120}" task_ended "$TASK"
  api GET "/api/v1/tasks/$TASK"
  is "$(jqb .status)" completed "$3: the task completed$( [ "$(jqb .status)" = completed ] || echo " (error: $(jqb .error))")"
}

# verify_ok PATH DESC: POST PATH (a backup's or a context's .../verify);
# three tests: the verify is accepted (202 with a task), the task ends in
# time, and it completed (a verify that finds corruption still completes:
# what it found is in its result).  Leaves the task object in $API_BODY and
# its id in $TASK.
verify_ok ()
{
  api POST "$1"
  is "$API_STATUS" 202 "$2: the verify starts a task"
  TASK=$(jqb '.task_id // empty')
  [ -n "$TASK" ] || { fail "$2: the answer names the task"; return 1; }
  ok "$2: the task ends" wait_for "${VERIFY_TIMEOUT:-120}" task_ended "$TASK"
  api GET "/api/v1/tasks/$TASK"
  is "$(jqb .kind)/$(jqb .status)" "verify/completed" \
     "$2: the verify task completed$( [ "$(jqb .status)" = completed ] || echo " (error: $(jqb .error))")"
}

# verified BID FILTER: FILTER (jq) on the entry of backup BID in the last
# verify task's result.points (from $API_BODY).
verified ()
{
  jqb --arg b "$1" ".result.points[] | select(.backup_id == \$b) | $2"
}

# repo_used_bytes [ID]: the repository's used_bytes (default: "default").
repo_used_bytes ()
{
  hub_get "/api/v1/repositories/${1:-default}" | jq -r .used_bytes
}

# ------------------------------------------------------- racing starts ----
# Tests of simultaneous starts set N (the number of requests).

# race BODY [PORT...]: fire N identical POST /api/v1/backups at once, the
# i-th to the ((i-1) mod count)-th PORT (default: this test's hub); leaves
# the statuses in $T/race.I.code and the bodies in $T/race.I.body.
race ()
{
  local body=$1 i port pids=()
  shift
  local ports=("$@")
  [ ${#ports[@]} -gt 0 ] || ports=("$HUB_PORT")
  rm -f "$T"/race.*
  printf '%s' "$body" > "$T/race.req"
  for i in $(seq 1 $N); do
    port=${ports[$(((i - 1) % ${#ports[@]}))]}
    curl -s -o "$T/race.$i.body" -w '%{http_code}' --max-time 30 -X POST \
      --data-binary "@$T/race.req" "http://127.0.0.1:$port/api/v1/backups" > "$T/race.$i.code" &
    pids+=($!)
  done
  wait "${pids[@]}"
}

# race_codes: the statuses of the last race, counted: "201×1 409×7 ".
race_codes ()
{
  local i
  for i in $(seq 1 $N); do cat "$T/race.$i.code"; echo; done | sort | uniq -c |
    awk '{printf "%s×%s ", $2, $1}'
}

# race_losers_are_conflicts: every answer but the 201 is a JSON conflict.
race_losers_are_conflicts ()
{
  local i
  for i in $(seq 1 $N); do
    [ "$(cat "$T/race.$i.code")" = 201 ] && continue
    jq -e '.error.code == "conflict"' "$T/race.$i.body" > /dev/null || { cat "$T/race.$i.body"; return 1; }
  done
}
