# tests/lib/hub.sh - the hub under test and its qemu-storage-daemon:
# start, stop and SIGKILL the hub on free ports, restart it set to crash at
# a point and wait for that, find the daemons it runs, check that none
# outlives it, and poll for a condition (wait_for).

# Startup can be slow under ASan/valgrind: bounds are generous but finite.
HUB_START_TIMEOUT=${HUB_START_TIMEOUT:-30}
HUB_STOP_TIMEOUT=${HUB_STOP_TIMEOUT:-15}
# Where the API listens and how to reach it: a test of HTTPS sets
# HUB_SCHEME=https and HUB_CURL_TLS (curl's arguments to trust it, e.g.
# --cacert F), and may listen on another address (HUB_HOST).
HUB_SCHEME=${HUB_SCHEME:-http}
HUB_HOST=${HUB_HOST:-127.0.0.1}
HUB_CURL_TLS=()

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

# ---------------------------------------------------------------- ports ----

_port_free ()
{
  local p=$1
  [ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] && return 1
  # Nothing answers there either (covers namespaces ss can't see).
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && return 1
  return 0
}

# A port a test picked stays its own until the test exits, even while
# nothing listens there (its hub stopped for a restart on the same ports):
# each pick is reserved as $_PORT_DIR/PORT/pid, naming the test's shell,
# under a lock, so a test running beside it (prove -j2) never picks it.  A
# reservation whose test is gone is free again.
_PORT_DIR=${TMPDIR:-/tmp}/strata-test-ports

# _reserve_port PORT: 0 when this test now holds PORT, 1 when another
# live test does.
_reserve_port ()
{
  local d=$_PORT_DIR/$1
  mkdir -p "$_PORT_DIR" 2>/dev/null
  (
    flock 9 || exit 1
    if [ -d "$d" ]; then
      kill -0 "$(cat "$d/pid" 2>/dev/null)" 2>/dev/null && exit 1
      rm -rf "$d"
    fi
    mkdir "$d" && echo $$ > "$d/pid"
  ) 9> "$_PORT_DIR/.lock"
}

# _release_ports: drop this test's reservations (the EXIT trap).
_release_ports ()
{
  local f
  for f in "$_PORT_DIR"/*/pid; do
    [ "$(cat "$f" 2>/dev/null)" = $$ ] && rm -rf "${f%/pid}"
  done
  return 0
}

# free_port: print a random port from 10000 up to the kernel's ephemeral range
# (ip_local_port_range) that nothing uses and no
# other running test holds, and reserve it for this test.
free_port ()
{
  local i p lo
  # Below the kernel's ephemeral range: a port in it can be taken, while the
  # hub is down for a restart, as the local end of any outgoing connection
  # on the machine, which no reservation here can prevent.
  read -r lo _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
  [ "$lo" -gt 12000 ] 2>/dev/null || lo=32768
  for i in $(seq 1 100); do
    p=$((10000 + RANDOM % (lo - 10000)))
    [ "$p" = "$HUB_PORT" ] || [ "$p" = "$NBD_PORT" ] && continue
    _port_free "$p" && _reserve_port "$p" && { echo "$p"; return 0; }
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
  bail_out "hub did not come up on $HUB_HOST:$HUB_PORT (see its log)"
}

_start_hub_once ()
{
  local deadline code
  echo "==== $(date -u +%H:%M:%S.%N) start: $STRATA serve --data-dir $DATA --listen $HUB_HOST:$HUB_PORT --nbd-listen 127.0.0.1:$NBD_PORT ${_hub_extra_args[*]}" >> "$HUB_LOG"
  "$STRATA" serve --data-dir "$DATA" \
    --listen "$HUB_HOST:$HUB_PORT" --nbd-listen "127.0.0.1:$NBD_PORT" \
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
    code=$(curl -s -o "$T/healthz" -w '%{http_code}' --max-time 2 "${HUB_CURL_TLS[@]}" \
             "$HUB_SCHEME://$HUB_HOST:$HUB_PORT/healthz" 2>/dev/null)
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

# restart_hub_crashing_at POINT: stop the hub and start it again with
# STRATA_CRASH_AT=POINT, so that it SIGKILLs itself when it gets there.
restart_hub_crashing_at ()
{
  stop_hub
  export STRATA_CRASH_AT=$1
  start_hub
  unset STRATA_CRASH_AT
}

# wait_hub_crashed POINT: one TAP test that the hub dies (bounded wait),
# then forget it and mark its log.  A hub that never got there is killed,
# so that the test goes on.
wait_hub_crashed ()
{
  ok "the hub dies (SIGKILL at $1)" wait_for 60 eval '! hub_alive' ||
    kill -KILL "$HUB_PID" 2>/dev/null
  wait "$HUB_PID" 2>/dev/null
  HUB_PID=
  echo "==== hub died at $1" >> "$HUB_LOG"
}
