#!/usr/bin/env bash
# test-nbd-tls.sh - the NBD targets talk only TLS with a pre-shared key, by
# default.  The hub makes its master key (DATA-DIR/nbd.psk) at its first
# start; each running job and open restore gets its own credential in the
# API's answer, which opens the NBD server from the job's start to its end
# and not after.  A client without a key can neither list the exports nor
# open one, nor write into another job's target.  The operator's key file
# (--nbd-tls-psk-file) still works, --nbd-insecure gives plain NBD, and the
# two together are refused.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo nbdcopy jq curl cmp

SIZE=$((16 * MiB))
hexkey () { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# key_line_file NAME IDENTITY KEY: a libnbd key file holding that line.
key_line_file () { ( umask 077; printf '%s:%s\n' "$2" "$3" > "$T/$1" ); echo "$T/$1"; }
# opens URI-WITH-KEY: true when the NBD server lets the key open the export.
opens () { nbdinfo --size "$1" > /dev/null 2>&1; }
# lists KEYFILE IDENTITY: true when that key may list the exports.
lists () { nbdinfo --list "nbds://$2@127.0.0.1:$NBD_PORT?tls-psk-file=$1" > /dev/null 2>&1; }
bare () { local u=${1%%\?*}; echo "${u##*/}"; }   # the export name of a URI
# as ID KEYFILE URI: the URI's export, asked for with another identity and key.
as () { local u=${3%%\?*}; echo "nbds://$1@${u#*@}?tls-psk-file=$2"; }

# --- A default hub: the master key is made, private.
mkdir -m 700 "$DATA"
start_hub
is "$(file_mode "$DATA/nbd.psk")" 600 "the hub made its master key DATA-DIR/nbd.psk, mode 600"
like "$(cat "$DATA/nbd.psk")" '^strata-hub:[0-9a-f]{64}$' "one line: the hub's identity and 256 bits"
is "$(file_mode "$DATA")" 700 "the data folder stays 700"
is "$(file_mode "$DATA/run/tls/keys.psk")" 600 "the storage daemon's keys file is mode 600"
MASTER=$(cat "$DATA/nbd.psk")
QSD=$(qsd_pids)

put_vm tls1 $SIZE
put_vm tls2 $SIZE
start_backup tls1 full
J1=$BID J1_KEY=$NBD_KEY_FILE J1_URI=${NBD_URI[0]} J1_FILE=${QCOW2[0]}
like "$(jqb '.disks[0].nbd_uri')" "^nbds://job-$J1@127\\.0\\.0\\.1:$NBD_PORT/strata-[0-9a-f]{32}\$" \
     "the target's URI asks for TLS and names the job's identity"
is "$(jqb '.nbd_tls.identity')" "job-$J1" "the answer carries the job's credential"
like "$(jqb '.nbd_tls.psk')" '^[0-9a-f]{64}$' "with a 256-bit key"
ok "the job's credential opens its target right after the start" opens "$J1_URI"
api GET "/api/v1/backups/$J1"
is "$(jqb '.nbd_tls.psk')" "$(cut -d: -f2 "$J1_KEY")" "GET of the running job gives the same credential"
api GET "/api/v1/backups?vm_name=tls1"
is "$(jqb '.backups[0] | has("nbd_tls")')" false "a list never carries credentials"

PLAIN="nbd://127.0.0.1:$NBD_PORT/$(bare "$J1_URI")"
ok "without TLS the target refuses the client" export_gone "$PLAIN"
nok "without TLS the export list is refused" nbdinfo --list "nbd://127.0.0.1:$NBD_PORT"
WRONG=$(key_line_file wrong.psk "job-$J1" "$(hexkey)")
nok "the job's identity with a wrong key is refused" opens "$(as "job-$J1" "$WRONG" "$J1_URI")"
FORGED=$(key_line_file forged.psk "job-$J1-x" "$(cut -d: -f2 "$J1_KEY")")
nok "the job's key under another identity is refused" opens "$(as "job-$J1-x" "$FORGED" "$J1_URI")"

# The attack of the issue: another local user writes into a running
# backup's target.  Without a key nothing gets in; the disk stays the agent's.
ref_image "$T/src.raw" $SIZE
ref_write "$T/src.raw" 0x5a 0 1M
ref_write "$T/src.raw" 0xa5 8M 1M
ok "the agent writes the disk over TLS with the job's key" nbdcopy "$T/src.raw" "$J1_URI"
nok "a client without a key cannot write a block into the target" \
    qemu-io -f raw -c 'write -P 0x66 0 64k' "$PLAIN"
nok "nor with a made-up key" qio -f raw -c 'write -P 0x66 0 64k' "$(as "job-$J1" "$WRONG" "$J1_URI")"

# A second job: its credential is its own, and ends with it.
start_backup tls2 full
J2=$BID J2_KEY=$NBD_KEY_FILE J2_URI=${NBD_URI[0]}
isnt "$(cut -d: -f2 "$J2_KEY")" "$(cut -d: -f2 "$J1_KEY")" "the second job has another key"
ok "the second job's credential opens its target" opens "$J2_URI"
api POST "/api/v1/backups/$J2/cancel" '{}'
is "$API_STATUS" 200 "cancel the second job"
nok "right after the cancel its credential is refused" lists "$J2_KEY" "job-$J2"
ok "the first job's credential still works" opens "$J1_URI"
api GET "/api/v1/backups/$J2"
is "$(jqb '.nbd_tls')" null "a job that ended has no credential"

complete_disk "$J1" 0 TLS0 "$SIZE"
ok "the backup equals the source" qemu-img compare -q -f raw -F qcow2 "$T/src.raw" "$J1_FILE"
restore_is "$J1" 0 "$T/src.raw" "strata restore reads it back over TLS with the restore's key"

# Credentials end with their job: J1's is refused on J3's target, which J3's opens.
start_backup tls1 incremental
J3=$BID J3_URI=${NBD_URI[0]}
nok "after the job completed its credential is refused" lists "$J1_KEY" "job-$J1"
nok "even on a target that is served" opens "$(as "job-$J1" "$J1_KEY" "$J3_URI")"
ok "which the running job's credential opens" opens "$J3_URI"

# A failed job's credential ends too.
api POST "/api/v1/backups/$J3/fail" '{"error":"test"}'
nok "right after a failure the job's credential is refused" lists "$NBD_KEY_FILE" "job-$J3"
is "$(qsd_pids)" "$QSD" "the same storage daemon took every change of keys (GnuTLS reads the file at each handshake)"

# --- Restores: the credential lives while the restore is open.
api POST /api/v1/restores "{\"backup_id\":\"$J1\",\"disk_index\":0}"
is "$API_STATUS" 201 "open a restore"
RID=$(jqb .restore_id)
is "$(jqb .nbd_tls.identity)" "restore-$RID" "it carries the restore's credential"
R_KEY=$(nbd_credential_save "$API_BODY")
R_URI=$(nbd_keyed "$(jqb .nbd_uri)")
like "$R_URI" "^nbds://restore-$RID@" "its URI names the restore's identity"
ok "the restore's credential reads the export" nbdcopy "$R_URI" "$T/r.raw"
ok "which is the source" cmp "$T/src.raw" "$T/r.raw"
api GET /api/v1/restores
is "$(jqb '.restores[0] | has("nbd_tls")')" false "the list of restores carries no credential"
api DELETE "/api/v1/restores/$RID"
nok "after the restore is closed its credential is refused" lists "$R_KEY" "restore-$RID"

# --- The key survives a restart, and a running job's credential still works.
start_backup tls2 full
J4=$BID J4_URI=${NBD_URI[0]}
stop_hub
start_hub
is "$(cat "$DATA/nbd.psk")" "$MASTER" "the master key is read again after a restart, unchanged"
ok "the running job's target is exported again and its credential opens it" \
   wait_for 20 opens "$J4_URI"
api POST "/api/v1/backups/$J4/cancel" '{}'
nok "and is refused once the job is cancelled" opens "$J4_URI"

# A broken master key stops start-up, saying why.
stop_hub
cp "$DATA/nbd.psk" "$T/nbd.psk.good"
echo 'strata-hub:abcd' > "$DATA/nbd.psk"
out=$("$STRATA" serve --data-dir "$DATA" --listen 127.0.0.1:$(free_port) \
        --nbd-listen 127.0.0.1:$(free_port) 2>&1 < /dev/null)
is "$?" 1 "a malformed nbd.psk stops the hub"
like "$out" "NBD PSK file .*nbd\\.psk:1" "and the log says which file and line"
cp "$T/nbd.psk.good" "$DATA/nbd.psk"

# --- --nbd-insecure: plain NBD, no credentials.
out=$("$STRATA" serve --data-dir "$T/x" --nbd-insecure --nbd-tls-psk-file "$DATA/nbd.psk" \
        --check-config 2>&1)
is "$?" 2 "--nbd-insecure with --nbd-tls-psk-file is a usage error"
like "$out" "nbd-insecure" "which says so"
like "$("$STRATA" serve --data-dir "$T/x" --nbd-insecure --check-config 2>&1)" \
     "nbd-insecure = true" "--check-config shows nbd-insecure"
_hub_extra_args=()
start_hub --nbd-insecure
like "$(cat "$HUB_LOG")" "nbd-insecure.*speak no TLS" "the hub warns at start"
start_backup tls1 full
like "$(jqb '.disks[0].nbd_uri')" "^nbd://127\\.0\\.0\\.1:$NBD_PORT/strata-" "the URIs are plain nbd://"
is "$(jqb .nbd_tls)" null "and nbd_tls is null"
ok "a client without a key opens the target" opens "${NBD_URI[0]}"
api POST "/api/v1/backups/$BID/cancel" '{}'
stop_hub

# --- The operator's key file (--nbd-tls-psk-file).
PSK=$T/keys.psk
printf 'agent1:%s\nagent2:%s\n' "$(hexkey)" "$(hexkey)" > "$PSK"
chmod 600 "$PSK"
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

DATA=$T/data-operator
NBD_MASTER_PSK=$PSK
start_hub --nbd-tls-psk-file "$PSK"
put_vm tls1 $SIZE
ok "no nbd.psk is made when the operator gives the keys" test ! -e "$DATA/nbd.psk"
start_backup tls1 full
like "$(jqb '.disks[0].nbd_uri')" "^nbds://job-$BID@" "the URIs name the job's identity"
ok "the job's credential opens the target" opens "${NBD_URI[0]}"
A2=$(key_line_file agent2.psk agent2 "$(sed -n 2p "$PSK" | cut -d: -f2)")
ok "so does any key of the operator's file" opens "$(as agent2 "$A2" "${NBD_URI[0]}")"
ok "nbdcopy writes the disk with the operator's key" nbdcopy "$T/src.raw" "$(master_keyed "${NBD_URI[0]}")"
complete_disk "$BID" 0 OP0 "$SIZE"
ok "the backup equals the source" qemu-img compare -q -f raw -F qcow2 "$T/src.raw" "${QCOW2[0]}"
ref_write "$T/src.raw" 0x77 4M 1M
agent_ok "strata backup --tls-psk-file writes with the operator's key" \
  backup --vm tls1 --type full --tls-psk-file "$PSK" --json "$T/src.raw"
restore_is "$(jqa .backup_id)" 0 "$T/src.raw" "which restores with the restore's credential"

# The storage daemon restarts with its keys.
start_backup tls1 incremental
URI=${NBD_URI[0]}
old=$(qsd_pids)
kill -KILL $old
ok "the storage daemon comes back" wait_for 20 eval '[ -n "$(qsd_pids)" ] && [ "$(qsd_pids)" != "'"$old"'" ]'
ok "the target comes back, over TLS" wait_for 20 opens "$URI"
ok "and still refuses a client without TLS" export_gone "nbd://127.0.0.1:$NBD_PORT/$(bare "$URI")"
ok "the incremental reads the earlier data through its backing file, over TLS" \
   nbdcopy "$URI" "$T/back.raw"
ok "which equals the source" cmp "$T/src.raw" "$T/back.raw"
complete_disk "$BID" 0 OP1 0

done_testing
