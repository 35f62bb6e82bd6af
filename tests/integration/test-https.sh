#!/usr/bin/env bash
# test-https.sh - the API over HTTPS: a hub with a certificate signed by a
# CA the test makes (certtool) answers curl --cacert and the client
# commands with --ca-file or the right --pin-sha256; a wrong pin, no trust
# at all, and plain HTTP against the HTTPS port are refused with exit 3 and
# a message saying why; bad TLS options are usage errors.  Off loopback the
# hub refuses to start without --api-token-file (before it binds anything)
# unless --insecure-no-auth, and with no certificate given makes a
# self-signed pair in DATA-DIR/tls at its first start, reuses it after, and
# logs the fingerprint and pin that certtool reads from it.

source "$(dirname "$0")/../functions.sh"
requires qemu-img certtool jq curl

# --- a CA and a certificate for 127.0.0.1 signed by it ---------------------
cd "$T" || bail_out "no $T"
certtool --generate-privkey --key-type ecdsa --outfile ca-key.pem 2> /dev/null
printf 'cn = "strata test CA"\nca\ncert_signing_key\nexpiration_days = 2\n' > ca.tmpl
certtool --generate-self-signed --load-privkey ca-key.pem --template ca.tmpl \
  --outfile ca.pem 2> /dev/null
certtool --generate-privkey --key-type ecdsa --outfile hub-key.pem 2> /dev/null
chmod 600 hub-key.pem
printf 'cn = "127.0.0.1"\nip_address = "127.0.0.1"\ntls_www_server\nsigning_key\nexpiration_days = 2\n' > hub.tmpl
certtool --generate-certificate --load-privkey hub-key.pem --load-ca-certificate ca.pem \
  --load-ca-privkey ca-key.pem --template hub.tmpl --outfile hub.pem 2> /dev/null
certtool --generate-privkey --key-type ecdsa --outfile other-key.pem 2> /dev/null
cd - > /dev/null || exit 1
[ -s "$T/hub.pem" ] || bail_out "certtool made no certificate"

# fingerprint_of PEM / pin_of PEM: as certtool reads them.
fingerprint_of ()
{
  certtool -i --infile "$1" | sed -n '/^Other Information:/,$p' |
    sed -n 's/^\s*sha256:\([0-9a-f]*\)$/\1/p' | head -n 1 |
    tr a-f A-F | sed 's/../&:/g; s/:$//'
}
pin_of ()
{
  certtool -i --infile "$1" | sed -n 's/^\s*pin-sha256:\(.*\)$/\1/p' | head -n 1
}

# --- options that go together, keys that do not fit ------------------------
out=$("$STRATA" serve --data-dir "$T/x" --tls-cert-file "$T/hub.pem" --check-config 2>&1)
is "$?" 2 "--tls-cert-file without --tls-key-file is a usage error"
like "$out" "go together" "saying both are needed"
out=$(timeout 20 "$STRATA" serve --data-dir "$T/x" --listen 127.0.0.1:1 \
        --tls-cert-file "$T/hub.pem" --tls-key-file "$T/other-key.pem" 2>&1)
is "$?" 1 "a key that is not the certificate's: the hub does not start"
like "$out" "is not the key of the certificate" "saying so"

# --- a hub with the CA's certificate ----------------------------------------
HUB_SCHEME=https
HUB_CURL_TLS=(--cacert "$T/ca.pem")
start_hub --tls-cert-file "$T/hub.pem" --tls-key-file "$T/hub-key.pem"
URL=https://127.0.0.1:$HUB_PORT
like "$(cat "$HUB_LOG")" "API listening on https://127.0.0.1:$HUB_PORT" "the hub says it speaks HTTPS"
like "$(cat "$HUB_LOG")" "SHA-256 fingerprint $(fingerprint_of "$T/hub.pem")" \
     "it logs the certificate's SHA-256 fingerprint, as certtool reads it"
PIN=$(pin_of "$T/hub.pem")
ok "and its public key's pin, as certtool reads it" grep -qF -- "--pin-sha256 $PIN" "$HUB_LOG"

api GET /healthz
is "$API_STATUS/$(jqb .status)" "200/ok" "curl --cacert CA: GET /healthz"
put_vm web1 $((4 * MiB))
is "$API_STATUS" 201 "curl --cacert CA: PUT a VM"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$URL/healthz")
rc=$?
is "$rc/$code" "60/000" "curl without the CA refuses the certificate (exit 60)"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$HUB_PORT/healthz")
isnt "$code" 200 "plain HTTP on the HTTPS port gets no answer"
api GET /healthz
is "$API_STATUS" 200 "and the hub still answers HTTPS after it"

# --- the client commands ----------------------------------------------------
qemu-img create -q -f qcow2 "$T/web1.qcow2" 4M
qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' "$T/web1.qcow2" > /dev/null
agent_ok "strata backup --ca-file CA over HTTPS" backup --ca-file "$T/ca.pem" --vm web1 "$T/web1.qcow2"
agent_ok "strata backups --ca-file CA" backups --ca-file "$T/ca.pem" --json --vm web1
is "$(jqa '.[0].status')" completed "lists the backup, completed"
agent_ok "strata vms --pin-sha256 (the right pin, no CA)" vms --pin-sha256 "$PIN" --json
is "$(jqa '.[0].vm_name')" web1 "lists the VM"
agent_ok "--pin-sha256 in curl's form (sha256//...) with --ca-file" \
  vms --ca-file "$T/ca.pem" --pin-sha256 "sha256//$PIN"

WRONG=$(pin_of "$T/ca.pem")
agent vms --pin-sha256 "$WRONG"
is "$AGENT_RC" 3 "a wrong --pin-sha256: exit 3"
like "$AGENT_ERR" "not the one --pin-sha256 names" "saying the key is not the pinned one"
agent backup --pin-sha256 "$WRONG" --vm web1 "$T/web1.qcow2"
is "$AGENT_RC" 3 "strata backup with a wrong pin: exit 3"
agent vms --ca-file "$T/ca.pem" --pin-sha256 "$WRONG"
is "$AGENT_RC" 3 "a wrong pin with the right CA: still refused"
agent vms
is "$AGENT_RC" 3 "no --ca-file and no pin: exit 3 (the test CA is no system CA)"
like "$AGENT_ERR" "give --ca-file or --pin-sha256" "saying what to give"
agent vms --ca-file "$T/hub-key.pem"
is "$AGENT_RC" 3 "a --ca-file that is no certificate: exit 3"
out=$("$STRATA" vms --hub "http://127.0.0.1:$HUB_PORT" 2>&1)
is "$?" 3 "an http:// URL for the HTTPS hub: exit 3"
like "$out" "https:// hub\\?" "asking whether it is an https:// hub"
out=$("$STRATA" vms --hub "http://127.0.0.1:$HUB_PORT" --ca-file "$T/ca.pem" 2>&1)
is "$?" 2 "--ca-file with an http:// hub is a usage error"
out=$("$STRATA" vms --hub "$URL" --pin-sha256 abc 2>&1)
is "$?" 2 "a malformed --pin-sha256 is a usage error"
like "$out" "base64 of a SHA-256" "saying what a pin looks like"
out=$("$STRATA" vms --hub "$URL" --ca-file "$T/nope.pem" 2>&1)
is "$?" 2 "a missing --ca-file is a usage error"
out=$(STRATA_HUB=$URL "$STRATA" vms --ca-file "$T/ca.pem" --json 2>&1)
is "$?/$(jq -r '.[0].vm_name' <<< "$out" 2>/dev/null)" "0/web1" "STRATA_HUB may be an https:// URL"
stop_hub

# --- off loopback -------------------------------------------------------------
# The rule is checked with the options, before the hub binds anything, so
# an address of no interface of this machine (TEST-NET-1) shows it.
out=$(timeout 20 "$STRATA" serve --data-dir "$T/off" --listen 192.0.2.123:8082 \
        --nbd-listen 127.0.0.1:1 2>&1)
is "$?" 2 "off loopback without --api-token-file: the hub does not start (usage error)"
like "$out" "without --api-token-file: give a token file, or --insecure-no-auth" \
     "saying how to go on"
ok "nothing was made in its data folder" test ! -e "$T/off"
out=$("$STRATA" serve --listen '[2001:db8::1]:8082' --check-config 2>&1)
is "$?" 2 "--check-config refuses it too (IPv6)"
ok "--check-config accepts it with --insecure-no-auth" \
  "$STRATA" serve --listen 192.0.2.123:8082 --insecure-no-auth --check-config
ok "or with --api-token-file" \
  "$STRATA" serve --listen 192.0.2.123:8082 --api-token-file /nonexistent --check-config

ADDR=$(ip -4 -o addr show scope global 2>/dev/null | awk '{ sub (/\/.*/, "", $4); print $4; exit }')
if [ -z "$ADDR" ]; then
  diag "no non-loopback IPv4 address: the self-signed path is not tested"
  done_testing
fi
DATA=$T/data2
HUB_HOST=$ADDR
HUB_CURL_TLS=(-k)
echo tok-$$ > "$T/token"
chmod 600 "$T/token"
API_TOKEN=tok-$$
start_hub --api-token-file "$T/token"
ok "a self-signed certificate in DATA-DIR/tls" test -s "$DATA/tls/api-cert.pem"
is "$(stat -c %a "$DATA/tls/api-key.pem")" 600 "its key is mode 0600"
like "$(cat "$HUB_LOG")" "made a self-signed TLS certificate" "the log says it was made"
FP=$(fingerprint_of "$DATA/tls/api-cert.pem")
SPIN=$(pin_of "$DATA/tls/api-cert.pem")
like "$(cat "$HUB_LOG")" "SHA-256 fingerprint $FP" "the logged fingerprint is certtool's"
ok "the logged pin is certtool's" grep -qF -- "--pin-sha256 $SPIN" "$HUB_LOG"
like "$(certtool -i --infile "$DATA/tls/api-cert.pem")" "IPAddress: $ADDR" \
     "the certificate names the API's address"
agent_ok "strata vms --pin-sha256 of the self-signed key" vms --token-file "$T/token" --pin-sha256 "$SPIN"
agent_ok "strata vms --ca-file of the self-signed certificate" vms --token-file "$T/token" \
  --ca-file "$DATA/tls/api-cert.pem"
stop_hub
: > "$HUB_LOG"
start_hub --api-token-file "$T/token"
is "$(fingerprint_of "$DATA/tls/api-cert.pem")" "$FP" "a second start keeps the certificate"
unlike "$(cat "$HUB_LOG")" "made a self-signed" "and does not make another"
like "$(cat "$HUB_LOG")" "SHA-256 fingerprint $FP" "and logs the same fingerprint"
stop_hub
: > "$HUB_LOG"
API_TOKEN=
start_hub --insecure-no-auth
api GET /api/v1/vms
is "$API_STATUS" 200 "with --insecure-no-auth the hub starts off loopback, no token needed"
like "$(cat "$HUB_LOG")" "with --insecure-no-auth" "and warns about it"

done_testing
