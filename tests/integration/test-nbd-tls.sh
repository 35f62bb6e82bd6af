#!/usr/bin/env bash
# test-nbd-tls.sh - with --nbd-tls-psk-file the NBD targets talk only TLS
# with a pre-shared key: a client without the key can neither list the
# exports nor open one, a client with the key writes a backup that reads
# back intact, and the keys survive a storage-daemon restart.  A malformed
# key file stops start-up with a clear message.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo nbdcopy jq curl

SIZE=$((16 * MiB))
hexkey () { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
PSK=$T/keys.psk
printf 'agent1:%s\n' "$(hexkey)" > "$PSK"
chmod 600 "$PSK"
WRONG=$T/wrong.psk
printf 'agent1:%s\n' "$(hexkey)" > "$WRONG"

# --- Malformed key files stop start-up, saying why.
bad_start ()
{
  local file=$1 desc=$2 out rc
  out=$("$STRATA" serve --data-dir "$T/bad" --listen 127.0.0.1:$(free_port) \
          --nbd-listen 127.0.0.1:$(free_port) --nbd-tls-psk-file "$file" 2>&1 < /dev/null)
  rc=$?
  is "$rc" 1 "$desc: the hub does not start"
  like "$out" "NBD PSK file" "$desc: and says which file is wrong"
}
printf 'agent1:abcd\n' > "$T/short.psk"
bad_start "$T/short.psk" "a key of 16 bits"
printf 'agent 1:%s\n' "$(hexkey)" > "$T/space.psk"
bad_start "$T/space.psk" "an identity with a space"
printf '%s\n' "$(hexkey)" > "$T/nocolon.psk"
bad_start "$T/nocolon.psk" "a key without identity"
: > "$T/empty.psk"
bad_start "$T/empty.psk" "an empty file"
bad_start "$T/missing.psk" "a missing file"

# --- A hub with TLS.
start_hub --nbd-tls-psk-file "$PSK"
is "$(file_mode "$DATA/run/tls/keys.psk")" 600 "the keys are installed for the storage daemon, mode 600"
put_vm tls1 $SIZE
start_backup tls1 full
URI=${NBD_URI[0]}
like "$URI" "^nbds://agent1@127\\.0\\.0\\.1:$NBD_PORT/strata-[0-9a-f]{32}\$" \
     "the target's URI asks for TLS and names the key's identity"
PLAIN="nbd://127.0.0.1:$NBD_PORT/${URI##*/}"
ok "without TLS the target refuses the client" export_gone "$PLAIN"
nok "without TLS the export list is refused" nbdinfo --list "nbd://127.0.0.1:$NBD_PORT"
nok "with the wrong key the target refuses the client" nbdinfo --size "$URI?tls-psk-file=$WRONG"
is "$(nbdinfo --size "$URI?tls-psk-file=$PSK" 2>&1)" "$SIZE" "with the key the target answers"

ref_image "$T/src.raw" $SIZE
ref_write "$T/src.raw" 0x5a 0 1M
ref_write "$T/src.raw" 0xa5 8M 1M
ok "nbdcopy writes the disk over TLS" nbdcopy "$T/src.raw" "$URI?tls-psk-file=$PSK"
complete_disk "$BID" 0 TLS0 "$SIZE"
ok "the backup equals the source" qemu-img compare -q -f raw -F qcow2 "$T/src.raw" "${QCOW2[0]}"

# --- The storage daemon restarts with its keys.
F=$BID
start_backup tls1 incremental
URI=${NBD_URI[0]}
old=$(qsd_pids)
kill -KILL $old
ok "the storage daemon comes back" wait_for 20 eval '[ -n "$(qsd_pids)" ] && [ "$(qsd_pids)" != "'"$old"'" ]'
ok "the target comes back, over TLS" wait_for 20 nbdinfo --size "$URI?tls-psk-file=$PSK"
ok "and still refuses a client without TLS" export_gone "nbd://127.0.0.1:$NBD_PORT/${URI##*/}"
ok "the incremental reads the full's data through its backing file, over TLS" \
   nbdcopy "$URI?tls-psk-file=$PSK" "$T/back.raw"
ok "which equals the source" cmp "$T/src.raw" "$T/back.raw"
complete_disk "$BID" 0 TLS1 0

done_testing
