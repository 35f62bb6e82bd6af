# tests/functions.sh - shared helpers of the integration tests (bash, TAP).
#
# A test sources this file, then typically:
#
#   requires qemu-img
#   start_hub                      # temp data dir, free ports, waits for /healthz
#   api POST /api/v1/backups '{"vm_name":"x","backup_type":"full"}'
#   is "$API_STATUS" 201 "backup starts"
#   is "$(jqb .status)" running "it runs"
#   done_testing                   # stops the hub, prints the plan, exits
#
# Design notes:
# - Every test is isolated: its own mktemp -d folder ($T) holding the hub's
#   data dir ($DATA), its log ($HUB_LOG) and scratch files, and its own random
#   free ports for --listen and --nbd-listen.  The default ports are never used.
# - The plan is printed at the end (done_testing), so tests need not count.
# - Diagnostics go to stderr as "# " lines, like Test::More's diag, so that
#   prove shows them without -v.  When any test failed, the hub's log is
#   printed the same way.
# - The EXIT trap kills whatever the test started (the hub by its pid, and the
#   qemu-storage-daemon by the pids seen while the hub ran), reports any
#   daemon that outlived its hub, and removes $T.  A test must never leave a
#   process behind.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STRATA=${STRATA:-$top/build/strata}
TEST_NAME=$(basename "$0" .sh)

# Startup can be slow under ASan/valgrind: bounds are generous but finite.
HUB_START_TIMEOUT=${HUB_START_TIMEOUT:-30}
HUB_STOP_TIMEOUT=${HUB_STOP_TIMEOUT:-15}

MiB=1048576

# ---------------------------------------------------------------- TAP ----

_tap_n=0
_tap_failed=0
_tap_done=0

diag ()
{
  local arg line
  for arg in "$@"; do
    [ -n "$arg" ] || continue
    while IFS= read -r line; do
      printf '# %s\n' "$line" >&2
    done <<< "$arg"
  done
}

# note: like diag, but on stdout (shown by prove -v only).
note ()
{
  local arg line
  for arg in "$@"; do
    [ -n "$arg" ] || continue
    while IFS= read -r line; do
      printf '# %s\n' "$line"
    done <<< "$arg"
  done
}

# _caller_line: the line of the test script that called into these helpers.
_caller_line ()
{
  local i
  for ((i = 1; i < ${#BASH_SOURCE[@]}; i++)); do
    if [ "${BASH_SOURCE[$i]}" != "${BASH_SOURCE[0]}" ]; then
      echo "${BASH_LINENO[$((i - 1))]}"
      return
    fi
  done
  echo "?"
}

pass ()
{
  _tap_n=$((_tap_n + 1))
  printf 'ok %d - %s\n' "$_tap_n" "$1"
}

fail ()
{
  _tap_n=$((_tap_n + 1))
  _tap_failed=$((_tap_failed + 1))
  printf 'not ok %d - %s\n' "$_tap_n" "$1"
  diag "  Failed test '$1' in $TEST_NAME at line $(_caller_line)"
  shift
  [ $# -gt 0 ] && diag "$@"
  return 1
}

# ok DESC CMD [ARGS...]: passes when CMD exits 0.  Its output is shown on failure.
ok ()
{
  local desc=$1 out rc
  shift
  out=$("$@" 2>&1)
  rc=$?
  if [ $rc -eq 0 ]; then
    pass "$desc"
  else
    fail "$desc" "  command: $*" "  exit status: $rc" "$(printf '%s' "$out" | head -c 4000 | sed 's/^/    /')"
  fi
}

# nok DESC CMD [ARGS...]: passes when CMD exits non-zero.
nok ()
{
  local desc=$1 out rc
  shift
  out=$("$@" 2>&1)
  rc=$?
  if [ $rc -ne 0 ]; then
    pass "$desc"
  else
    fail "$desc" "  command unexpectedly succeeded: $*" "$(printf '%s' "$out" | head -c 2000 | sed 's/^/    /')"
  fi
}

# is GOT EXPECTED DESC
is ()
{
  if [ "$1" == "$2" ]; then
    pass "$3"
  else
    fail "$3" "         got: '$1'" "    expected: '$2'" "$(_api_context)"
  fi
}

# isnt GOT UNEXPECTED DESC
isnt ()
{
  if [ "$1" != "$2" ]; then
    pass "$3"
  else
    fail "$3" "         got: '$1'" "    expected anything else" "$(_api_context)"
  fi
}

# like GOT ERE DESC
like ()
{
  if [[ $1 =~ $2 ]]; then
    pass "$3"
  else
    fail "$3" "                  '$1'" "    doesn't match '$2'" "$(_api_context)"
  fi
}

# unlike GOT ERE DESC
unlike ()
{
  if [[ $1 =~ $2 ]]; then
    fail "$3" "                  '$1'" "    matches '$2'" "$(_api_context)"
  else
    pass "$3"
  fi
}

# cmp_ok A OP B DESC, with OP one of -eq -ne -lt -le -gt -ge
cmp_ok ()
{
  if [[ $1 =~ ^-?[0-9]+$ && $3 =~ ^-?[0-9]+$ ]] && [ "$1" "$2" "$3" ]; then
    pass "$4"
  else
    fail "$4" "    '$1' $2 '$3' does not hold" "$(_api_context)"
  fi
}

# bail_out MSG: abort the whole test file (the EXIT trap still cleans up).
bail_out ()
{
  printf 'Bail out! %s\n' "$*"
  _tap_failed=$((_tap_failed + 1))
  _tap_done=1
  _print_hub_log
  exit 255
}

# skip_all REASON
skip_all ()
{
  printf '1..0 # SKIP %s\n' "$*"
  _tap_done=1
  exit 0
}

# done_testing: stop the hub (checking that it leaves nothing behind), print
# the plan, print the hub's log when something failed, and exit.
done_testing ()
{
  if [ -n "$HUB_PID" ]; then
    stop_hub
  fi
  # Under the ASan/UBSan build, any report in the hub's log (across all its
  # restarts in this test) is a failure, even one the hub survived.
  if [ -s "$HUB_LOG" ]; then
    ok "the hub's log has no sanitizer report" \
       eval "! grep -qE 'Sanitizer|runtime error:' \"\$HUB_LOG\""
  fi
  printf '1..%d\n' "$_tap_n"
  _tap_done=1
  if [ $_tap_failed -gt 0 ]; then
    diag "Looks like you failed $_tap_failed test(s) of $_tap_n."
    _print_hub_log
    exit 1
  fi
  exit 0
}

# requires CMD...: skip the whole test when a tool is missing.
requires ()
{
  local c
  for c in "$@"; do
    command -v "$c" > /dev/null 2>&1 || skip_all "missing $c"
  done
}

# --------------------------------------------------------- temp & trap ----

T=$(mktemp -d "${TMPDIR:-/tmp}/strata-$TEST_NAME.XXXXXX") || { echo "Bail out! mktemp failed"; exit 255; }
DATA=$T/data
HUB_LOG=$T/hub.log
CATALOG=$DATA/catalog.db
# STRATA_TEST_DB=mariadb (set by tests/mariadb-server.sh, which runs a
# private server): the hub's catalog is a database of this test's own in
# that server, made now and dropped by the EXIT trap; sql and sql_write
# talk to it.  Otherwise the catalog is SQLite at $CATALOG.
TEST_DB=${STRATA_TEST_DB:-sqlite}
CATALOG_DB=
_hub_db_args=()
if [ "$TEST_DB" = mariadb ]; then
  [ -n "${STRATA_TEST_MARIADB_SOCKET:-}" ] && [ -n "${STRATA_TEST_MARIADB_ROOT:-}" ] ||
    { echo "Bail out! STRATA_TEST_DB=mariadb needs tests/mariadb-server.sh"; exit 255; }
  CATALOG_DB=strata_t_$$_$RANDOM
  $STRATA_TEST_MARIADB_ROOT -e "CREATE DATABASE $CATALOG_DB" ||
    { echo "Bail out! cannot create database $CATALOG_DB"; exit 255; }
  CATALOG_URL="mysql://$STRATA_TEST_MARIADB_USER@localhost/$CATALOG_DB?socket=$STRATA_TEST_MARIADB_SOCKET"
  _hub_db_args=(--db "$CATALOG_URL" --db-password-file "$STRATA_TEST_MARIADB_PWFILE")
fi
HUB_PID=
HUB_PORT=
NBD_PORT=
API_TOKEN=
_qsd_pids=()            # every qemu-storage-daemon pid seen while a hub ran
_hub_extra_args=()

_print_hub_log ()
{
  [ -s "$HUB_LOG" ] || return 0
  diag "---- hub log ($HUB_LOG) ----"
  diag "$(tail -n 300 "$HUB_LOG")"
  diag "---- end of hub log ----"
}

_cleanup ()
{
  local rc=$? p leftovers
  if [ -n "$HUB_PID" ] && kill -0 "$HUB_PID" 2>/dev/null; then
    kill -KILL "$HUB_PID" 2>/dev/null
    wait "$HUB_PID" 2>/dev/null
  fi
  _remember_qsd
  for p in "${_qsd_pids[@]}"; do
    if _pid_is_qsd "$p"; then
      # Give PR_SET_PDEATHSIG a moment, then end it ourselves.
      _wait_gone "$p" 3 || {
        printf '# qemu-storage-daemon %s outlived the hub; killing it\n' "$p" >&2
        kill -KILL "$p" 2>/dev/null
        rc=1
      }
    fi
  done
  # Anything else still running with our temp folder on its command line
  # was started by this test (helpers, daemons): end it by pid.
  leftovers=$(pgrep -f -- "$T/" 2>/dev/null | grep -vx "$$" || true)
  for p in $leftovers; do
    printf '# leftover process %s: %s\n' "$p" "$(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null)" >&2
    kill -KILL "$p" 2>/dev/null
  done
  if [ "$_tap_done" = 0 ]; then
    # The script died before done_testing: make that visible.
    printf '1..%d\n' "$_tap_n"
    printf '# %s exited early (status %d)\n' "$TEST_NAME" "$rc" >&2
    _print_hub_log
    [ $rc -eq 0 ] && rc=1
  fi
  # Tests may make folders immutable (chattr +i) to make the hub fail.
  [ -e "$T/.immutable" ] && chattr -R -i "$T" 2>/dev/null
  chmod -R u+w "$T" 2>/dev/null
  rm -rf "$T"
  [ -n "$CATALOG_DB" ] && $STRATA_TEST_MARIADB_ROOT -e "DROP DATABASE IF EXISTS $CATALOG_DB"
  exit $rc
}
trap _cleanup EXIT
trap 'exit 130' INT TERM
trap 'exit 141' PIPE

# ---------------------------------------------------------- processes ----

_pid_is_qsd ()
{
  [ -r "/proc/$1/comm" ] || return 1
  local comm
  comm=$(cat "/proc/$1/comm" 2>/dev/null)
  # comm is cut to 15 characters: "qemu-storage-da"
  [[ $comm == qemu-storage-d* ]]
}

# _wait_gone PID SECONDS: wait (polling) until PID is gone or a zombie.
_wait_gone ()
{
  local pid=$1 deadline=$((SECONDS + $2)) state
  while [ $SECONDS -le $deadline ]; do
    [ -d "/proc/$pid" ] || return 0
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)
    [ -z "$state" ] || [ "$state" = Z ] && return 0
    sleep 0.05
  done
  return 1
}

# qsd_pids: the qemu-storage-daemon processes of the current hub (children of
# the hub, plus the pid in DATA/run/qsd.pid if that is a live daemon).
qsd_pids ()
{
  local p pids=()
  if [ -n "$HUB_PID" ]; then
    for p in $(pgrep -P "$HUB_PID" 2>/dev/null); do
      _pid_is_qsd "$p" && pids+=("$p")
    done
  fi
  if [ -r "$DATA/run/qsd.pid" ]; then
    p=$(tr -dc '0-9' < "$DATA/run/qsd.pid")
    if [ -n "$p" ] && _pid_is_qsd "$p" && [[ " ${pids[*]} " != *" $p "* ]]; then
      pids+=("$p")
    fi
  fi
  # Daemons whose command line names our data dir.
  for p in $(pgrep -f -- "$DATA/" 2>/dev/null); do
    _pid_is_qsd "$p" && [[ " ${pids[*]} " != *" $p "* ]] && pids+=("$p")
  done
  echo "${pids[*]}"
}

_remember_qsd ()
{
  local p
  for p in $(qsd_pids); do
    [[ " ${_qsd_pids[*]} " == *" $p "* ]] || _qsd_pids+=("$p")
  done
}

# ---------------------------------------------------------------- ports ----

_port_free ()
{
  local p=$1
  [ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] && return 1
  # Nothing answers there either (covers namespaces ss can't see).
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && return 1
  return 0
}

# free_port: print a random port in 20000-60000 that nothing uses, and that
# differs from the ones this test already holds.
free_port ()
{
  local i p
  for i in $(seq 1 100); do
    p=$((20000 + RANDOM % 40001))
    [ "$p" = "$HUB_PORT" ] || [ "$p" = "$NBD_PORT" ] && continue
    _port_free "$p" && { echo "$p"; return 0; }
  done
  return 1
}

# ----------------------------------------------------------------- hub ----

# start_hub [EXTRA-ARGS...]: start the hub on $DATA with the current ports
# (picking free ones the first time), wait for GET /healthz (bounded) and
# set HUB_PID.  Extra args (e.g. --api-token-file F) are remembered for
# restarts.  Bails out, printing the log, when the hub does not come up.
start_hub ()
{
  local attempt rc
  [ $# -gt 0 ] && _hub_extra_args=("$@")
  [ -x "$STRATA" ] || bail_out "no hub binary at $STRATA (build it with make)"
  mkdir -p "$DATA"
  for attempt in 1 2 3; do
    if [ -z "$HUB_PORT" ]; then
      HUB_PORT=$(free_port) && NBD_PORT=$(free_port) || bail_out "no free port found"
      _fresh_ports=1
    fi
    _start_hub_once
    rc=$?
    [ $rc -eq 0 ] && return 0
    # The hub exited: if it lost a race for a fresh port, pick others.
    if [ $rc -eq 2 ] && [ "${_fresh_ports:-0}" = 1 ] &&
         tail -n 20 "$HUB_LOG" | grep -qiE 'in use|EADDRINUSE'; then
      diag "port clash on $HUB_PORT/$NBD_PORT, retrying with other ports"
      HUB_PORT= NBD_PORT=
      continue
    fi
    break
  done
  bail_out "hub did not come up on 127.0.0.1:$HUB_PORT (see its log)"
}

_start_hub_once ()
{
  local deadline code
  echo "==== $(date -u +%H:%M:%S.%N) start: $STRATA serve --data-dir $DATA --listen 127.0.0.1:$HUB_PORT --nbd-listen 127.0.0.1:$NBD_PORT ${_hub_extra_args[*]}" >> "$HUB_LOG"
  "$STRATA" serve --data-dir "$DATA" \
    --listen "127.0.0.1:$HUB_PORT" --nbd-listen "127.0.0.1:$NBD_PORT" \
    "${_hub_db_args[@]}" "${_hub_extra_args[@]}" < /dev/null >> "$HUB_LOG" 2>&1 &
  HUB_PID=$!
  deadline=$((SECONDS + HUB_START_TIMEOUT))
  while [ $SECONDS -le $deadline ]; do
    if ! kill -0 "$HUB_PID" 2>/dev/null; then
      wait "$HUB_PID" 2>/dev/null
      diag "hub exited during startup (status $?)"
      HUB_PID=
      return 2
    fi
    code=$(curl -s -o "$T/healthz" -w '%{http_code}' --max-time 2 \
             "http://127.0.0.1:$HUB_PORT/healthz" 2>/dev/null)
    if [ "$code" = 200 ] && jq -e '.storage_daemon == "up"' "$T/healthz" > /dev/null 2>&1; then
      _fresh_ports=0
      _remember_qsd
      return 0
    fi
    sleep 0.1
  done
  diag "hub did not answer GET /healthz with 200 within ${HUB_START_TIMEOUT}s (last: $code $(cat "$T/healthz" 2>/dev/null))"
  kill -KILL "$HUB_PID" 2>/dev/null
  wait "$HUB_PID" 2>/dev/null
  HUB_PID=
  return 1
}

# _check_no_qsd DESC PIDS...: one TAP test that none of the daemons survived.
_check_no_qsd ()
{
  local desc=$1 p alive=()
  shift
  if [ $# -eq 0 ]; then
    fail "$desc" "  the hub had no qemu-storage-daemon that this test could find"
    return
  fi
  for p in "$@"; do
    _wait_gone "$p" 5 || alive+=("$p")
  done
  if [ ${#alive[@]} -eq 0 ]; then
    pass "$desc"
  else
    fail "$desc" "  still running: ${alive[*]}" "$(ps -o pid,ppid,args -p "${alive[*]// /,}" 2>/dev/null)"
    for p in "${alive[@]}"; do kill -KILL "$p" 2>/dev/null; done
  fi
}

# stop_hub: SIGTERM, wait (bounded) for a clean exit; two TAP tests: the hub
# exits 0 in time, and no qemu-storage-daemon of it survives.
stop_hub ()
{
  local pids rc deadline
  [ -n "$HUB_PID" ] || return 0
  _remember_qsd
  pids=$(qsd_pids)
  kill -TERM "$HUB_PID" 2>/dev/null
  deadline=$((SECONDS + HUB_STOP_TIMEOUT))
  while kill -0 "$HUB_PID" 2>/dev/null && [ $SECONDS -le $deadline ]; do
    sleep 0.05
  done
  if kill -0 "$HUB_PID" 2>/dev/null; then
    fail "hub stops on SIGTERM within ${HUB_STOP_TIMEOUT}s"
    kill -KILL "$HUB_PID" 2>/dev/null
    wait "$HUB_PID" 2>/dev/null
  else
    wait "$HUB_PID" 2>/dev/null
    rc=$?
    is "$rc" 0 "hub exits 0 on SIGTERM"
  fi
  HUB_PID=
  _check_no_qsd "no qemu-storage-daemon outlives the hub" $pids
}

# kill_hub: SIGKILL the hub; one TAP test that its daemon dies with it.
kill_hub ()
{
  local pids
  [ -n "$HUB_PID" ] || return 0
  _remember_qsd
  pids=$(qsd_pids)
  kill -KILL "$HUB_PID" 2>/dev/null
  wait "$HUB_PID" 2>/dev/null
  HUB_PID=
  echo "==== $(date -u +%H:%M:%S.%N) hub killed with SIGKILL" >> "$HUB_LOG"
  _check_no_qsd "qemu-storage-daemon dies with the SIGKILLed hub" $pids
}

hub_alive ()
{
  [ -n "$HUB_PID" ] && kill -0 "$HUB_PID" 2>/dev/null
}

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
  args+=("${API_CURL_EXTRA[@]}")
  if [ -n "$file" ]; then
    args+=(--data-binary "@$file")
    case $API_CT in
      default) ;;
      "") args+=(-H 'Content-Type:') ;;
      *) args+=(-H "Content-Type: $API_CT") ;;
    esac
  fi
  : > "$T/resp.body"
  API_STATUS=$(curl "${args[@]}" "http://127.0.0.1:$HUB_PORT$path" 2> "$T/curl.err")
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

# jqb FILTER: jq -r FILTER on the last response body.
jqb ()
{
  printf '%s' "$API_BODY" | jq -r "$@" 2>/dev/null
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

# ------------------------------------------------------------- catalog ----

# sql QUERY: run QUERY on the catalog, read-only ("|"-separated, no header,
# NULL as an empty field, on either backend).
sql ()
{
  if [ "$TEST_DB" = mariadb ]; then
    _mariadb_sql "$1"
  else
    sqlite3 -readonly -batch -noheader -cmd '.timeout 5000' "$CATALOG" "$1"
  fi
}

_mariadb_sql ()
{
  $STRATA_TEST_MARIADB_ROOT --batch --raw --skip-column-names "$CATALOG_DB" -e "$1" |
    awk 'BEGIN { FS = "\t"; OFS = "|" }
         { for (i = 1; i <= NF; i++) if ($i == "NULL") $i = ""; $1 = $1; print }'
  return "${PIPESTATUS[0]}"
}

# ts_ago SPAN: the catalog's timestamp text (UTC, milliseconds) for SPAN
# ago, e.g. ts_ago '2 hours'.
ts_ago ()
{
  date -u -d "$1 ago" +%Y-%m-%dT%H:%M:%S.%3NZ
}

# hours_between T1 T2: whole hours (rounded) from catalog timestamp T1 to T2.
hours_between ()
{
  local a b
  a=$(date -u -d "$1" +%s) && b=$(date -u -d "$2" +%s) || return 1
  echo $(( (b - a + 1800) / 3600 ))
}

# sql_join SEP: the lines of stdin joined with SEP (for lists that SQLite's
# group_concat would make; portable to MariaDB).
sql_join ()
{
  paste -sd "$1"
}

# sql_write QUERY: change the catalog under the hub (tests of the seed 3.4 kind).
sql_write ()
{
  if [ "$TEST_DB" = mariadb ]; then
    _mariadb_sql "$1"
  else
    sqlite3 -batch -noheader -cmd '.timeout 5000' "$CATALOG" "$1"
  fi
}

# catalog_counts: one line with the row count of every table (for
# "nothing changed" checks).
catalog_counts ()
{
  local t out=""
  for t in backup_repositories vms vm_disks vm_backup_contexts backup_jobs backup_disks schema_migrations; do
    out+="$t=$(sql "SELECT count(*) FROM $t" 2>&1) "
  done
  echo "$out"
}

# repo_listing [DIR]: every file and folder under DIR (default: the default
# repository), with size and mode, sorted.
repo_listing ()
{
  local dir=${1:-$DATA/repository}
  (cd "$dir" 2>/dev/null && find . -printf '%p %y %s %m\n' | sort)
}

# ----------------------------------------------------------- images ----

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

# qio ARGS...: qemu-io that fails on a pattern mismatch even where qemu-io
# would exit 0 (old versions), printing what qemu-io said.
qio ()
{
  local out rc
  out=$(qemu-io "$@" 2>&1)
  rc=$?
  printf '%s\n' "$out"
  [ $rc -eq 0 ] || return $rc
  if printf '%s' "$out" | grep -qiE 'Pattern verification failed|error|failed|Could not'; then
    return 1
  fi
  return 0
}

# nbd_write URI PATTERN OFFSET LENGTH: write a pattern into an NBD target.
nbd_write ()
{
  qio -f raw -c "write -P $2 $3 $4" -c flush "$1"
}

# img_info FILE: qemu-img info --output=json (no locking: the file may be
# open in the storage daemon).
img_info ()
{
  qemu-img info -U --output=json "$1"
}

# wait_for SECONDS CMD...: poll CMD (every 0.1 s) until it succeeds; returns 1
# when it never did.
wait_for ()
{
  local deadline=$((SECONDS + $1))
  shift
  while :; do
    "$@" > /dev/null 2>&1 && return 0
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.1
  done
}

# file_mode FILE: octal permission bits.
file_mode ()
{
  stat -c %a "$1"
}

# percent-encode a string for a URL path segment.
urlencode ()
{
  jq -rn --arg s "$1" '$s|@uri'
}

# --------------------------------------------------------- backup flow ----

# put_vm NAME SIZE...: PUT the VM into the inventory with one disk per size
# (keys 2000+i, unit i); one test that it answers 201 or 200.
put_vm ()
{
  local name=$1
  shift
  api PUT "/api/v1/vms/$(urlencode "$name")" "$(vm_json "$@")"
  like "$API_STATUS" '^20[01]$' "PUT VM $name with $# disk(s)"
}

# start_backup VM TYPE [EXTRA-JSON-MEMBERS]: POST /api/v1/backups; one test
# that it answers 201.  Sets BID, CTX and, per disk index, NBD_URI[i] and
# QCOW2[i] from the answer.
start_backup ()
{
  local body
  body=$(jq -cn --arg v "$1" --arg t "$2" '{vm_name:$v, backup_type:$t}')
  [ -n "$3" ] && body="${body%\}},$3}"
  _start_backup_body "$1" "$2" "$body"
}

_start_backup_body ()
{
  local idx uri path
  api POST /api/v1/backups "$3"
  is "$API_STATUS" 201 "start $2 backup of $1"
  BID=$(jqb .backup_id)
  CTX=$(jqb .context_id)
  BACKUP_JSON=$API_BODY
  NBD_URI=()
  QCOW2=()
  while read -r idx uri path; do
    [ -n "$idx" ] || continue
    NBD_URI[$idx]=$uri
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

# write_ok URI PATTERN OFFSET LENGTH: one test that the write into the NBD
# target succeeds.
write_ok ()
{
  ok "write $2 at $3 (+$4) into ${1##*/}" nbd_write "$@"
}

# export_gone URI: true when nothing serves that NBD export.
export_gone ()
{
  ! nbdinfo --size "$1" > /dev/null 2>&1
}

# export_up URI: true when the NBD export answers.
export_up ()
{
  nbdinfo --size "$1" > /dev/null 2>&1
}

# read_only FILE: true when no write bit is set.
read_only ()
{
  [ -f "$1" ] && [ $(( 0$(stat -c %a "$1") & 0222 )) -eq 0 ]
}

# backing_of FILE: the backing-filename recorded in a QCOW2 file ("" if none).
backing_of ()
{
  img_info "$1" | jq -r '."backing-filename" // ""'
}

# ref_image FILE SIZE: a sparse raw reference image to mirror the writes in.
ref_image ()
{
  rm -f "$1"
  truncate -s "$2" "$1"
}

# ref_write FILE PATTERN OFFSET LENGTH
ref_write ()
{
  qemu-io -f raw -c "write -P $2 $3 $4" "$1" > /dev/null
}

# nbd_exports: the export names the hub's NBD server lists now, sorted, one a
# line (nothing when it serves none; "DOWN" when nothing answers).
nbd_exports ()
{
  local out
  out=$(nbdinfo --list --json "nbd://127.0.0.1:$NBD_PORT" 2>/dev/null) || { echo DOWN; return; }
  jq -r '.exports[]?."export-name"' <<< "$out" | sort
}

# exports_of URI...: the export names of NBD URIs, sorted, one a line.
exports_of ()
{
  local u
  for u in "$@"; do echo "${u##*/}"; done | sort
}

# immutable DIR / mutable DIR: chattr +i/-i, so that even root cannot create
# files there (the cleanup trap undoes it).  immutable fails where the file
# system does not support it.
immutable ()
{
  touch "$T/.immutable"
  chattr +i "$1" 2>/dev/null && ! touch "$1/.probe" 2>/dev/null
}

mutable ()
{
  chattr -i "$1"
}

# has_error_body: the last response body is {"error":{"code":"...","message":"..."}}.
has_error_body ()
{
  printf '%s' "$API_BODY" | jq -e '(.error.code | type == "string") and (.error.message | type == "string")' > /dev/null
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

# ------------------------------------------------------------ data path ----
# Helpers of the agent tests (strata backup / strata restore).

AGENT_RC=
AGENT_OUT=
AGENT_ERR=

# agent backup|restore ARGS...: run the strata client against the test's hub.
# Sets AGENT_RC, AGENT_OUT (stdout) and AGENT_ERR (stderr).
agent ()
{
  local cmd=$1
  shift
  "$STRATA" "$cmd" --hub "http://127.0.0.1:$HUB_PORT" "$@" > "$T/agent.out" 2> "$T/agent.err" < /dev/null
  AGENT_RC=$?
  AGENT_OUT=$(cat "$T/agent.out")
  AGENT_ERR=$(cat "$T/agent.err")
}

# agent_ok DESC backup|restore ARGS...: one test that it exits 0 (its
# output shown otherwise).
agent_ok ()
{
  local desc=$1
  shift
  agent "$@"
  if [ "$AGENT_RC" = 0 ]; then
    pass "$desc"
  else
    fail "$desc" "  exit status: $AGENT_RC" "  stderr: $AGENT_ERR" "  stdout: $(printf '%s' "$AGENT_OUT" | head -c 3000)"
  fi
}

# jqa FILTER: jq -r FILTER on the last agent's stdout.
jqa ()
{
  printf '%s' "$AGENT_OUT" | jq -r "$@" 2>/dev/null
}

# snapshot IMAGE RAW: save what IMAGE holds now, as a raw file.
snapshot ()
{
  qemu-img convert -U -O raw "$1" "$2"
}

# restore_is BID IDX REF DESC [FORMAT]: restore disk IDX of backup BID with
# `strata restore --output` and test that it equals the raw file REF.
restore_is ()
{
  local bid=$1 idx=$2 ref=$3 desc=$4 fmt=${5:-raw} out
  out=$T/restore-$RANDOM$RANDOM.$fmt
  agent restore --backup "$bid" --disk "$idx" --output "$out" --format "$fmt"
  if [ "$AGENT_RC" != 0 ]; then
    fail "$desc" "  strata restore exited $AGENT_RC: $AGENT_ERR"
  elif [ "$fmt" = raw ] && cmp "$ref" "$out" > /dev/null 2>&1; then
    pass "$desc"
  elif [ "$fmt" != raw ] && qemu-img compare -q -f raw -F "$fmt" "$ref" "$out" > /dev/null 2>&1; then
    pass "$desc"
  else
    fail "$desc" "  $out differs from $ref" "$(cmp "$ref" "$out" 2>&1 | head -3)"
  fi
  rm -f "$out"
}

# bitmaps_of IMAGE: the names of its persistent bitmaps, sorted, one a line.
bitmaps_of ()
{
  qemu-img info -U --output=json "$1" | jq -r '."format-specific".data.bitmaps[]?.name' | sort
}

# overlay_data QCOW2: bytes of data the file itself holds (not its backing).
overlay_data ()
{
  qemu-img map -U --output=json "$1" |
    jq '[.[] | select(.depth == 0 and .data == true) | .length] | add // 0'
}

# no_qemu_nbd DESC: one test that no qemu-nbd serving a file of this test runs.
no_qemu_nbd ()
{
  local left
  left=$(pgrep -a -f "qemu-nbd.*$T/" 2>/dev/null)
  if [ -z "$left" ]; then pass "$1"; else fail "$1" "  still running: $left"; fi
}

# throttled_source RAW SOCK BPS: serve RAW read-only over NBD on the unix
# socket SOCK through a qemu-storage-daemon limited to BPS bytes a second,
# so that a copy from it takes long enough to be cut half-way.  Sets
# SRC_QSD_PID; waits (bounded) until the socket answers.
throttled_source ()
{
  rm -f "$2"
  qemu-storage-daemon \
    --blockdev "driver=file,node-name=f0,filename=$1,read-only=on" \
    --object "throttle-group,id=tg0,x-bps-read=$3" \
    --blockdev "driver=throttle,node-name=t0,throttle-group=tg0,file=f0,read-only=on" \
    --nbd-server "addr.type=unix,addr.path=$2" \
    --export "type=nbd,id=e0,node-name=t0,name=src,writable=off" \
    > "$T/src-qsd.log" 2>&1 &
  SRC_QSD_PID=$!
  wait_for 20 nbdinfo --size "nbd+unix:///src?socket=$2"
}
