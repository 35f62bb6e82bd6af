# tests/lib/setup.sh - what sourcing tests/functions.sh sets up for a test:
# its temp folder $T (the data dir, the hub log, scratch files), its catalog
# (SQLite in $DATA, or a database of its own on the private MariaDB server),
# the hub's state variables, and the EXIT trap that ends what the test
# started and removes it all.

STRATA=${STRATA:-$top/build/strata}
TEST_NAME=$(basename "$0" .sh)

MiB=1048576

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
  CATALOG_URL="mariadb://$STRATA_TEST_MARIADB_USER@localhost/$CATALOG_DB?socket=$STRATA_TEST_MARIADB_SOCKET"
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
  # A helper library's own clean-up (tests/lib/libvirt.sh: its domains and
  # daemons) comes first, before anything it uses is killed or removed.
  declare -F _cleanup_extra > /dev/null && _cleanup_extra
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
  _release_ports
  exit $rc
}
trap _cleanup EXIT
trap 'exit 130' INT TERM
trap 'exit 141' PIPE
