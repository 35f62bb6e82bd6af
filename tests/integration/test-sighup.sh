#!/usr/bin/env bash
# test-sighup.sh - SIGHUP makes the hub read its API token file and its NBD
# PSK file again, as daemons do: the new token works and the old one is
# refused; a token file that became bad keeps the token in force, and the
# log says why; new NBD connections take the new key (and the jobs' keys
# derived from it).  The hub keeps running through it all.

source "$(dirname "$0")/../functions.sh"
requires qemu-img nbdinfo jq curl

SIZE=$((16 * MiB))
hexkey () { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
newtoken () { echo "tok-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"; }

TOK1=$(newtoken)
TOK2=$(newtoken)
echo "$TOK1" > "$T/token"
chmod 600 "$T/token"
PSK=$T/keys.psk
printf 'agent1:%s\n' "$(hexkey)" > "$PSK"
chmod 600 "$PSK"
cp "$PSK" "$T/old.psk"

start_hub --api-token-file "$T/token" --nbd-tls-psk-file "$PSK"

API_TOKEN=$TOK1
api GET /api/v1/vms
is "$API_STATUS" 200 "the first token works"

# hup PATTERN: send SIGHUP and wait (bounded) for the log line it brings.
_log_has_more () { [ "$(grep -c -- "$1" "$HUB_LOG")" -gt "$2" ]; }
hup ()
{
  local before
  before=$(grep -c -- "$1" "$HUB_LOG")
  kill -HUP "$HUB_PID"
  wait_for 20 _log_has_more "$1" "$before"
}

echo "$TOK2" > "$T/token"
ok "SIGHUP: the log says the token was read again" hup "SIGHUP: API token read again"
ok "the hub still runs" hub_alive
API_TOKEN=$TOK2
api GET /api/v1/vms
is "$API_STATUS" 200 "the new token works"
API_TOKEN=$TOK1
api GET /api/v1/vms
is_error 401 unauthorized "the old token is refused"

# A bad token file: the token in force stays.
printf '\n' > "$T/token"
ok "SIGHUP with an empty token file: the log says why it was kept" \
   hup "SIGHUP: API token file .* the API token in force stays"
ok "the hub still runs" hub_alive
API_TOKEN=$TOK2
api GET /api/v1/vms
is "$API_STATUS" 200 "the token in force still works"
rm -f "$T/token"
ok "SIGHUP with the token file gone: kept too" hup "the API token in force stays"
api GET /api/v1/vms
is "$API_STATUS" 200 "the token in force still works"
like "$(grep 'SIGHUP: the log' "$HUB_LOG" | tail -n 1)" "nothing to reopen" \
     "the log says what reopening the log means here"

# The NBD keys: a new identity and key.
printf 'agent2:%s\n' "$(hexkey)" > "$PSK"
ok "SIGHUP: the log says the NBD keys were read again" hup "SIGHUP: NBD keys read again"
put_vm hup1 $SIZE
start_backup hup1 full
URI=${NBD_URI[0]}
NBD_MASTER_PSK=$PSK
is "$(nbdinfo --size "$URI" 2>&1)" "$SIZE" "the job's credential opens the target"
is "$(nbdinfo --size "$(master_keyed "$URI")" 2>&1)" "$SIZE" "the new key opens the target"
like "$(master_keyed "$URI")" "^nbds://agent2@" "(as the new identity)"
BARE=${URI%%\?*}
OLDURI="nbds://agent1@127.0.0.1:$NBD_PORT/${BARE##*/}"
nok "the old key does not" nbdinfo --size "$OLDURI?tls-psk-file=$T/old.psk"

# A malformed PSK file: the keys in force stay.
printf 'agent3:abcd\n' > "$PSK.new"
cp "$PSK" "$T/good.psk"
mv "$PSK.new" "$PSK"
ok "SIGHUP with a malformed PSK file: the log says why it was kept" \
   hup "NBD PSK file .* the NBD keys in force stay"
NBD_MASTER_PSK=$T/good.psk
is "$(nbdinfo --size "$(master_keyed "$URI")" 2>&1)" "$SIZE" "the key in force still opens the target"
is "$(nbdinfo --size "$URI" 2>&1)" "$SIZE" "and so does the job's credential"
api POST "/api/v1/backups/$BID/cancel"
is "$API_STATUS" 200 "the backup is cancelled"

done_testing
