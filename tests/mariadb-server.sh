#!/bin/bash
# tests/mariadb-server.sh - a private MariaDB server for the tests.
#
#   tests/mariadb-server.sh run CMD [ARGS...]
#
# makes a fresh server in a temporary folder (mariadb-install-db, no system
# service, no networking: a unix socket in that folder), creates the user
# "strata" with a random password that may use the databases "strata\_%",
# runs CMD with the environment below, then stops the server and removes the
# folder, whatever CMD did (an EXIT trap; SIGINT/SIGTERM too).  The exit
# status is CMD's.
#
#   STRATA_TEST_DB=mariadb
#   STRATA_TEST_MARIADB_SOCKET   the server's socket
#   STRATA_TEST_MARIADB_USER     strata
#   STRATA_TEST_MARIADB_PWFILE   a file holding the user's password
#   STRATA_TEST_MARIADB_ROOT     "mariadb --no-defaults -uroot --socket=...": the
#                                admin client (root has no password; only the
#                                socket, in a 0700 folder, reaches it)
#
# Each test then makes its own database (see tests/lib/setup.sh).
set -u

die () { echo "mariadb-server.sh: $*" >&2; exit 1; }

[ "${1:-}" = run ] && [ $# -ge 2 ] || die "usage: $0 run CMD [ARGS...]"
shift

for c in mariadbd mariadb-install-db mariadb mariadb-admin; do
  command -v "$c" > /dev/null 2>&1 || PATH=$PATH:/usr/sbin
  command -v "$c" > /dev/null 2>&1 ||
    die "missing $c (Debian: apt-get install mariadb-server mariadb-client)"
done

D=$(mktemp -d "${TMPDIR:-/tmp}/strata-mariadb.XXXXXX") || die "mktemp failed"
chmod 700 "$D"
SOCK=$D/mysqld.sock
PID=

stop_server ()
{
  local rc=$? i
  if [ -n "$PID" ] && kill -0 "$PID" 2> /dev/null; then
    mariadb-admin --no-defaults -uroot --socket="$SOCK" shutdown > /dev/null 2>&1 ||
      kill -TERM "$PID" 2> /dev/null
    for i in $(seq 1 300); do
      kill -0 "$PID" 2> /dev/null || break
      sleep 0.1
    done
    if kill -0 "$PID" 2> /dev/null; then
      echo "# mariadbd $PID did not stop; killing it" >&2
      kill -KILL "$PID" 2> /dev/null
    fi
    wait "$PID" 2> /dev/null
  fi
  rm -rf "$D"
  exit $rc
}
trap stop_server EXIT
trap 'exit 130' INT TERM

user=()
[ "$(id -u)" = 0 ] && user=(--user=root)

mariadb-install-db --no-defaults "${user[@]}" --datadir="$D/data" \
  --auth-root-authentication-method=normal --skip-test-db \
  > "$D/install.log" 2>&1 || { cat "$D/install.log" >&2; die "mariadb-install-db failed"; }

# Durable as in production (innodb_flush_log_at_trx_commit=1 is the
# default); small buffers, no networking.
mariadbd --no-defaults "${user[@]}" --datadir="$D/data" --socket="$SOCK" \
  --pid-file="$D/mysqld.pid" --log-error="$D/error.log" --skip-networking \
  --innodb-buffer-pool-size=64M --innodb-log-file-size=32M \
  --max-connections=500 --character-set-server=utf8mb4 \
  --collation-server=utf8mb4_nopad_bin < /dev/null > /dev/null 2>&1 &
PID=$!

for i in $(seq 1 600); do
  mariadb-admin --no-defaults -uroot --socket="$SOCK" ping > /dev/null 2>&1 && break
  kill -0 "$PID" 2> /dev/null || { cat "$D/error.log" >&2; die "mariadbd exited"; }
  sleep 0.1
done
mariadb-admin --no-defaults -uroot --socket="$SOCK" ping > /dev/null 2>&1 ||
  { cat "$D/error.log" >&2; die "mariadbd did not come up"; }

PW=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$PW" > "$D/password"
chmod 600 "$D/password"
mariadb --no-defaults -uroot --socket="$SOCK" -e "
  CREATE USER 'strata'@'localhost' IDENTIFIED BY '$PW';
  GRANT ALL PRIVILEGES ON \`strata\\_%\`.* TO 'strata'@'localhost';" ||
  die "could not create the test user"

export STRATA_TEST_DB=mariadb
export STRATA_TEST_MARIADB_SOCKET=$SOCK
export STRATA_TEST_MARIADB_USER=strata
export STRATA_TEST_MARIADB_PWFILE=$D/password
export STRATA_TEST_MARIADB_ROOT="mariadb --no-defaults -uroot --socket=$SOCK"
echo "# private mariadbd $PID on $SOCK" >&2

"$@"
