#!/usr/bin/env bash
# test-bad-input.sh - every malformed, oversized, ill-typed, out-of-range or
# path-like input gets its 4xx with a JSON error body, and changes neither the
# catalog nor the repository; the hub stays healthy through all of it.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl sqlite3 perl

SIZE=$((64 * MiB))
start_hub
REPO=$DATA/repository

# The scene: bi1 with a completed full (no job running), bi2 with a running job.
put_vm bi1 $SIZE
start_backup bi1 full
complete_disk "$BID" 0 B1 0
DONE=$BID
put_vm bi2 $SIZE $SIZE
start_backup bi2 full
RUN=$BID
RUN_URI=${NBD_URI[0]}
RUN_FILE=${QCOW2[0]}

state_save
ok "the catalog dump is readable" grep -q "^== schema_migrations" "$T/state.before"

B=/api/v1/backups
V=/api/v1/vms
D0="{\"disk_index\":0,\"size_bytes\":$SIZE}"

# --- Bodies that are not a JSON object.
bad 400 invalid_request "malformed JSON"                 POST $B '{"vm_name":"bi1",'
bad 400 invalid_request "trailing garbage after JSON"    POST $B '{"vm_name":"bi1","backup_type":"full"} x'
bad 400 invalid_request "two JSON objects"               POST $B '{"vm_name":"bi1","backup_type":"full"}{}'
bad 400 invalid_request "empty body"                     POST $B ''
bad 400 invalid_request "array body"                     POST $B '[{"vm_name":"bi1","backup_type":"full"}]'
bad 400 invalid_request "string body"                    POST $B '"bi1"'
bad 400 invalid_request "null body"                      POST $B 'null'
bad 400 invalid_request "number body"                    POST $B '42'
bad 400 invalid_request "invalid UTF-8 in a string"      POST $B $'{"vm_name":"bi\xff1","backup_type":"full"}'
bad 400 invalid_request "malformed JSON in PUT vm"       PUT $V/bi3 '{"disks":[{"disk_index":0,'
bad 400 invalid_request "malformed JSON in complete"     POST $B/$RUN/complete '{"disk_id":'
bad 400 invalid_request "array body in complete"         POST $B/$RUN/complete '[0]'
bad 400 invalid_request "malformed JSON in fail"         POST $B/$RUN/fail '{"error":'
bad 400 invalid_request "non-object body in cancel"      POST $B/$RUN/cancel '[]'
bad 400 invalid_request "malformed JSON in repositories" POST /api/v1/repositories '{"name":'

# --- Too big: 2 MiB.
big=$T/big.json
{ printf '{"vm_name":"bi1","backup_type":"full","pad":"'; head -c $((2 * MiB)) /dev/zero | tr '\0' a; printf '"}'; } > "$big"
bad_file 413 payload_too_large "a 2 MiB body to POST /api/v1/backups" POST $B "$big"
bad_file 413 payload_too_large "a 2 MiB body to PUT /api/v1/vms/bi3" PUT $V/bi3 "$big"
bad_file 413 payload_too_large "a 2 MiB body to complete" POST $B/$RUN/complete "$big"
API_CURL_EXTRA=(-H 'Transfer-Encoding: chunked')
bad_file 413 payload_too_large "a 2 MiB chunked body (no Content-Length)" POST $B "$big"
API_CURL_EXTRA=()
head -c 200000 /dev/zero | tr '\0' '[' > "$T/deep.json"
bad_file 400 invalid_request "200000 nested arrays" POST $B "$T/deep.json"
{ printf '{"vm_name":"bi1","backup_type":"full","disks":['; for i in $(seq 1 25000); do printf '{"disk_index":0,"size_bytes":512},'; done; printf '{}]}'; } > "$T/many.json"
bad_file 400 invalid_request "25000 disks in under 1 MiB" POST $B "$T/many.json"
api GET "$B?vm_name=$(head -c 100000 /dev/zero | tr '\0' a)"
like "$API_STATUS" '^4[0-9][0-9]$' "a 100 kB URL gets a 4xx ($API_STATUS)"
ok "... with a JSON error body" has_error_body

# --- Wrong types.
bad 400 invalid_request "vm_name: 5"                POST $B '{"vm_name":5,"backup_type":"full"}'
bad 400 invalid_request "vm_name: null"             POST $B '{"vm_name":null,"backup_type":"full"}'
bad 400 invalid_request "backup_type: \"weekly\""   POST $B '{"vm_name":"bi1","backup_type":"weekly"}'
bad 400 invalid_request "backup_type missing"       POST $B '{"vm_name":"bi1"}'
bad 400 invalid_request "vm_name missing"           POST $B '{"backup_type":"full"}'
bad 400 invalid_request "repository_id: 1"          POST $B '{"vm_name":"bi1","backup_type":"full","repository_id":1}'
bad 400 invalid_request "disks: {} (not an array)"  POST $B '{"vm_name":"bi1","backup_type":"full","disks":{}}'
bad 400 invalid_request "disk_index: \"0\""         PUT $V/bi3 "{\"disks\":[{\"disk_index\":\"0\",\"size_bytes\":$SIZE}]}"
bad 400 invalid_request "size_bytes: \"64M\""       PUT $V/bi3 '{"disks":[{"disk_index":0,"size_bytes":"64M"}]}'
bad 400 invalid_request "size_bytes: 1.5e6 (float)" PUT $V/bi3 '{"disks":[{"disk_index":0,"size_bytes":1.5e6}]}'
bad 400 invalid_request "disk_index: 0.5"           PUT $V/bi3 "{\"disks\":[{\"disk_index\":0.5,\"size_bytes\":$SIZE}]}"
bad 400 invalid_request "disk_index: true"          PUT $V/bi3 "{\"disks\":[{\"disk_index\":true,\"size_bytes\":$SIZE}]}"
bad 400 invalid_request "vmware_disk_key: \"2000\"" PUT $V/bi3 "{\"disks\":[{\"disk_index\":0,\"size_bytes\":$SIZE,\"vmware_disk_key\":\"2000\"}]}"
bad 400 invalid_request "vm_path: 1"                PUT $V/bi3 "{\"vm_path\":1,\"disks\":[$D0]}"
bad 400 invalid_request "disks: [5]"                PUT $V/bi3 '{"disks":[5]}'
bad 400 invalid_request "complete: disk_id \"0\""   POST $B/$RUN/complete '{"disk_id":"0"}'
bad 400 invalid_request "complete: disk_id missing" POST $B/$RUN/complete '{"change_id":"X"}'
bad 400 invalid_request "complete: change_id 5"     POST $B/$RUN/complete '{"disk_id":0,"change_id":5}'
bad 400 invalid_request "complete: bytes_transferred \"1\"" POST $B/$RUN/complete '{"disk_id":0,"bytes_transferred":"1"}'
bad 400 invalid_request "fail: error 5"             POST $B/$RUN/fail '{"error":5}'
bad 400 invalid_request "fail: error missing"       POST $B/$RUN/fail '{"disk_id":0}'
bad 400 invalid_request "fail: disk_id \"0\""       POST $B/$RUN/fail '{"disk_id":"0","error":"x"}'

# --- Negative and out-of-range numbers.
bad 400 invalid_request "negative size_bytes"       PUT $V/bi3 "{\"disks\":[{\"disk_index\":0,\"size_bytes\":-$SIZE}]}"
bad 400 invalid_request "zero size_bytes"           PUT $V/bi3 '{"disks":[{"disk_index":0,"size_bytes":0}]}'
bad 400 invalid_request "size_bytes not a multiple of 512" PUT $V/bi3 '{"disks":[{"disk_index":0,"size_bytes":1000}]}'
bad 400 invalid_request "size_bytes past 2^51"      PUT $V/bi3 '{"disks":[{"disk_index":0,"size_bytes":2251799813686272}]}'
bad 400 invalid_request "size_bytes past 2^64"      PUT $V/bi3 '{"disks":[{"disk_index":0,"size_bytes":184467440737095516160}]}'
bad 400 invalid_request "negative disk_index"       PUT $V/bi3 "{\"disks\":[{\"disk_index\":-1,\"size_bytes\":$SIZE}]}"
bad 400 invalid_request "disk_index 1024"           PUT $V/bi3 "{\"disks\":[{\"disk_index\":1024,\"size_bytes\":$SIZE}]}"
bad 400 invalid_request "inline negative size_bytes" POST $B "{\"vm_name\":\"bi3\",\"backup_type\":\"full\",\"disks\":[{\"disk_index\":0,\"size_bytes\":-512}]}"
bad 400 invalid_request "complete: disk_id -1"      POST $B/$RUN/complete '{"disk_id":-1}'
bad 400 invalid_request "complete: disk_id 1024"    POST $B/$RUN/complete '{"disk_id":1024}'
bad 400 invalid_request "complete: negative bytes_transferred" POST $B/$RUN/complete '{"disk_id":0,"bytes_transferred":-1}'
bad 400 invalid_request "complete: bytes_transferred past 2^62" POST $B/$RUN/complete '{"disk_id":0,"bytes_transferred":4611686018427387905}'
bad 400 invalid_request "complete: 1025-byte change_id" POST $B/$RUN/complete "{\"disk_id\":0,\"change_id\":\"$(printf 'c%.0s' $(seq 1 1025))\"}"
bad 400 invalid_request "fail: 4097-byte error"     POST $B/$RUN/fail "{\"error\":\"$(printf 'e%.0s' $(seq 1 4097))\"}"
p4097=/$(printf 'p%.0s' $(seq 1 4096))
bad 400 invalid_request "a 4097-byte vm_path"       PUT $V/bi3 "{\"vm_path\":\"$p4097\",\"disks\":[$D0]}"
bad 400 invalid_request "a 4097-byte source"        PUT $V/bi3 "{\"disks\":[{\"disk_index\":0,\"size_bytes\":$SIZE,\"source\":\"$p4097\"}]}"
bad 400 invalid_request "a 4097-byte repository path" POST /api/v1/repositories "{\"name\":\"r\",\"type\":\"local\",\"path\":\"$p4097\"}"
bad 400 invalid_request "a 256-byte vcenter_host"   PUT $V/bi3 "{\"vcenter_host\":\"$(printf 'h%.0s' $(seq 1 256))\",\"disks\":[$D0]}"
many=$(for i in $(seq 0 256); do printf '{"disk_index":%d,"size_bytes":%d},' $i $SIZE; done)
bad 400 invalid_request "257 disks"                 PUT $V/bi3 "{\"disks\":[${many%,}]}"

# --- Duplicates.
bad 400 invalid_request "duplicate disk indexes"    PUT $V/bi3 "{\"disks\":[$D0,$D0]}"
bad 400 invalid_request "duplicate inline disk indexes" POST $B "{\"vm_name\":\"bi3\",\"backup_type\":\"full\",\"disks\":[$D0,{\"disk_index\":0,\"size_bytes\":512}]}"
bad 400 invalid_request "duplicate keys"            POST $B '{"vm_name":"bi1","vm_name":"bi2","backup_type":"full"}'
bad 400 invalid_request "duplicate keys in complete" POST $B/$RUN/complete '{"disk_id":0,"disk_id":1}'

# --- Unknown fields and query parameters.
bad 400 invalid_request "unknown field"             POST $B '{"vm_name":"bi1","backup_type":"full","priority":1}'
bad 400 invalid_request "unknown field in a disk"   PUT $V/bi3 "{\"disks\":[{\"disk_index\":0,\"size_bytes\":$SIZE,\"bus\":\"scsi\"}]}"
bad 400 invalid_request "unknown field in complete" POST $B/$RUN/complete '{"disk_id":0,"checksum":"x"}'
bad 400 invalid_request "unknown field in cancel"   POST $B/$RUN/cancel '{"why":"x"}'
bad 400 invalid_request "unknown field in repositories" POST /api/v1/repositories "{\"name\":\"r\",\"type\":\"local\",\"path\":\"$T/r\",\"x\":1}"
bad 400 invalid_request "unknown query parameter"   GET "$B?foo=1"
bad 400 invalid_request "limit=0"                   GET "$B?limit=0"
bad 400 invalid_request "limit=1001"                GET "$B?limit=1001"
bad 400 invalid_request "limit=abc"                 GET "$B?limit=abc"
bad 400 invalid_request "offset=-1"                 GET "$B?offset=-1"
bad 400 invalid_request "status=weird"              GET "$B?status=weird"
bad 400 invalid_request "changeid without disk_id"  GET "$B/changeid?vm_name=bi1"
bad 400 invalid_request "changeid with disk_id=x"   GET "$B/changeid?vm_name=bi1&disk_id=x"
bad 400 invalid_request "changeid without vm_name"  GET "$B/changeid?disk_id=0"
bad 400 invalid_request "unknown query parameter on DELETE" DELETE "$B/$DONE?recursive=true"

# --- A query parameter given twice is refused, naming it, not read as its
# first value.
bad 400 invalid_request "limit given twice (5, abc)" GET "$B?limit=5&limit=abc"
like "$(jqb .error.message)" "'limit'" "... and the message names the parameter"
bad 400 invalid_request "limit given twice (5, 5)"   GET "$B?limit=5&limit=5"
bad 400 invalid_request "vm_name given twice"        GET "$B?vm_name=bi1&vm_name=bi2"
bad 400 invalid_request "cascade given twice on DELETE" DELETE "$B/$DONE?cascade=false&cascade=true"
bad 400 invalid_request "force given twice on DELETE" DELETE "/api/v1/contexts/ctx-nope?force=true&force=true"

# --- Bytes a URL may not hold, sent raw in the request line (curl would
# escape them in a URL): 400, and no VM named after them.
for raw in ' ' $'\t' $'\x7f' $'\xc3\xa9' '"' '<' '>' '\' '^' '`' '{' '|' '}'; do
  shown=$(printf '%q' "$raw")
  API_CURL_EXTRA=(--request-target "$V/a${raw}b")
  bad 400 invalid_request "PUT a VM with a raw $shown in the path" PUT "$V/ignored" "{\"disks\":[$D0]}"
  API_CURL_EXTRA=(--request-target "$B?vm_name=a${raw}b")
  bad 400 invalid_request "GET backups with a raw $shown in the query" GET "$B"
done
API_CURL_EXTRA=()
api GET "$V/$(urlencode 'a b')"
is "$API_STATUS" 404 "no VM 'a b' was made"
api_raw 'GET /api/v1/vms/a b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
is_error 400 invalid_request "GET /api/v1/vms/a b (a raw space, from a raw socket)"

# --- VM names that look like paths, or are not names.
long256=$(printf 'a%.0s' $(seq 1 256))
for name in "../etc" "a/b" ".." "." "a\\b" $'a\nb' $'a\tb' $'a\x01b' $'a\x7fb' " lead" "trail " "$long256"; do
  shown=$(printf '%q' "$name" | head -c 40)
  enc=$(urlencode "$name")
  bad 400 invalid_request "PUT VM named $shown" PUT "$V/$enc" "{\"disks\":[$D0]}"
  bad 400 invalid_request "POST backup of VM named $shown (inline disks)" POST $B \
    "$(jq -cn --arg v "$name" --argjson s $SIZE '{vm_name:$v, backup_type:"full", disks:[{disk_index:0, size_bytes:$s}]}')"
done
bad 400 invalid_request "empty VM name in a body" POST $B "{\"vm_name\":\"\",\"backup_type\":\"full\",\"disks\":[$D0]}"
bad 400 invalid_request "VM name with an encoded NUL" PUT "$V/a%00b" "{\"disks\":[$D0]}"
bad 400 invalid_request "VM name with \\u0000 in JSON" POST $B "{\"vm_name\":\"a\\u0000b\",\"backup_type\":\"full\",\"disks\":[$D0]}"
bad 400 invalid_request "VM name with invalid UTF-8 in the URL" PUT "$V/a%FFb" "{\"disks\":[$D0]}"
bad 400 invalid_request "GET VM ..%2F.."              GET "$V/..%2F.."

# --- Malformed ids in URLs (400), unknown ones (404).
for id in '..%2F..' '%2E%2E' 'a%2Fb' 'a%20b' 'a%00b' "$long256" 'x%5C..'; do
  bad 400 invalid_request "GET backup id $id"      GET "$B/$id"
  bad 400 invalid_request "complete backup id $id" POST "$B/$id/complete" '{"disk_id":0}'
done
bad 400 invalid_request "DELETE backup ..%2F.."     DELETE "$B/..%2F.."
bad 400 invalid_request "fail backup ..%2F.."       POST "$B/..%2F../fail" '{"error":"x"}'
bad 400 invalid_request "cancel backup ..%2F.."     POST "$B/..%2F../cancel" '{}'
bad 400 invalid_request "GET context ..%2F.."       GET "/api/v1/contexts/..%2F.."
bad 400 invalid_request "DELETE context ..%2F..%2Frepository" DELETE "/api/v1/contexts/..%2F..%2Frepository"
bad 400 invalid_request "GET repository ..%2F.."    GET "/api/v1/repositories/..%2F.."
bad 400 invalid_request "DELETE repository %2E%2E"  DELETE "/api/v1/repositories/%2E%2E"
bad 400 invalid_request "repository_id ../x in a body" POST $B '{"vm_name":"bi1","backup_type":"full","repository_id":"../x"}'
bad 404 not_found "GET unknown backup"              GET "$B/backup-nope-1"
bad 404 not_found "complete unknown backup"         POST "$B/backup-nope-1/complete" '{"disk_id":0}'
bad 404 not_found "fail unknown backup"             POST "$B/backup-nope-1/fail" '{"error":"x"}'
bad 404 not_found "cancel unknown backup"           POST "$B/backup-nope-1/cancel" '{}'
bad 404 not_found "DELETE unknown backup"           DELETE "$B/backup-nope-1"
bad 404 not_found "GET unknown context"             GET "/api/v1/contexts/ctx-nope"
bad 404 not_found "DELETE unknown context"          DELETE "/api/v1/contexts/ctx-nope"
bad 404 not_found "GET unknown repository"          GET "/api/v1/repositories/nope"
bad 404 not_found "DELETE unknown repository"       DELETE "/api/v1/repositories/nope"
bad 404 not_found "GET unknown VM"                  GET "$V/nope"
bad 404 not_found "DELETE unknown VM"               DELETE "$V/nope"

# --- Things the catalog does not know.
bad 404 not_found "backup into an unknown repository" POST $B '{"vm_name":"bi1","repository_id":"nope","backup_type":"full"}'
bad 400 invalid_request "backup of a VM without disks (not in the inventory)" POST $B '{"vm_name":"ghost","backup_type":"full"}'
bad 400 invalid_request "backup with an empty inline disk list" POST $B '{"vm_name":"ghost","backup_type":"full","disks":[]}'
bad 400 invalid_request "PUT VM with no disks"      PUT $V/bi3 '{"disks":[]}'
bad 400 invalid_request "PUT VM without a disks member" PUT $V/bi3 '{"vm_path":"x"}'
bad 404 not_found "complete disk_id 5 of a 2-disk job" POST $B/$RUN/complete '{"disk_id":5}'
bad 409 conflict "complete a disk of a completed job with another change id" POST $B/$DONE/complete '{"disk_id":0,"change_id":"other"}'
bad 409 conflict "cancel a completed job"           POST $B/$DONE/cancel '{}'
bad 409 conflict "fail a completed job"             POST $B/$DONE/fail '{"error":"x"}'

# --- Routes and methods.
bad 404 not_found "unknown route under /api/v1"     GET /api/v1/nope
bad 404 not_found "unknown route /nope"             GET /nope
bad 404 not_found "unknown API version"             GET /api/v2/backups
bad 404 not_found "unknown action on a backup"      POST "$B/$RUN/explode" '{}'
bad 405 method_not_allowed "PATCH /api/v1/backups"  PATCH $B '{}'
bad 405 method_not_allowed "PUT /api/v1/backups"    PUT $B '{}'
bad 405 method_not_allowed "DELETE /api/v1/backups" DELETE $B
bad 405 method_not_allowed "GET .../complete"       GET "$B/$RUN/complete"
bad 405 method_not_allowed "POST /api/v1/vms/x"     POST "$V/bi1" "{\"disks\":[$D0]}"
bad 405 method_not_allowed "DELETE /healthz"        DELETE /healthz
bad 405 method_not_allowed "PUT /api/v1/contexts/x" PUT "/api/v1/contexts/ctx-nope" '{}'

# --- Repositories.
bad 400 invalid_request "relative repository path"  POST /api/v1/repositories '{"name":"r2","type":"local","path":"relative/dir"}'
bad 400 invalid_request "repository path with .."   POST /api/v1/repositories "{\"name\":\"r2\",\"type\":\"local\",\"path\":\"$T/x/../r2\"}"
bad 400 invalid_request "repository path with ."    POST /api/v1/repositories "{\"name\":\"r2\",\"type\":\"local\",\"path\":\"$T/./r2\"}"
bad 400 invalid_request "repository type s3"        POST /api/v1/repositories "{\"name\":\"r2\",\"type\":\"s3\",\"path\":\"$T/r2\"}"
is "$(jqb .error.message)" 'type must be "local", "nfs" or "cifs"' "... and the message lists the repository types"
bad 400 invalid_request "nfs repository whose mount point does not exist" POST /api/v1/repositories "{\"name\":\"r2\",\"type\":\"nfs\",\"path\":\"$T/r2\"}"
like "$(jqb .error.message)" 'mount it first' "... and says the share's folder must be mounted first"
bad 400 invalid_request "repository without path"   POST /api/v1/repositories '{"name":"r2","type":"local"}'
bad 400 invalid_request "repository whose parent does not exist" POST /api/v1/repositories "{\"name\":\"r2\",\"type\":\"local\",\"path\":\"$T/no/such/parent\"}"
touch "$T/afile"
bad 400 invalid_request "repository path that is a file" POST /api/v1/repositories "{\"name\":\"r2\",\"type\":\"local\",\"path\":\"$T/afile\"}"
bad 400 invalid_request "repository id ../x"        POST /api/v1/repositories "{\"id\":\"../x\",\"name\":\"r2\",\"type\":\"local\",\"path\":\"$T/r2\"}"
bad 409 conflict "repository id default taken"      POST /api/v1/repositories "{\"id\":\"default\",\"name\":\"r2\",\"type\":\"local\",\"path\":\"$T/r2\"}"
bad 409 conflict "repository path taken"            POST /api/v1/repositories "{\"id\":\"r2\",\"name\":\"r2\",\"type\":\"local\",\"path\":\"$REPO\"}"
ok "no repository folder was created by refused requests" eval "[ ! -e '$T/r2' ] && [ ! -e '$T/r' ] && [ ! -e '$T/no' ]"

# --- After all that: the hub is healthy and the running job completes.
ok "the hub process is alive" hub_alive
api GET /healthz
is "$API_STATUS/$(jqb .status)" "200/ok" "GET /healthz answers ok"
api GET "$B/$RUN"
is "$API_STATUS/$(jqb .status)/$(jqb '[.disks[].status] | join(",")')" "200/running/running,running" "the running job is untouched"
write_ok "$RUN_URI" 0x11 0 1M
complete_disk "$RUN" 0 OK0 1
complete_disk "$RUN" 1 OK1 1
is "$(jqb .job_status)" completed "and completes"
ok "with its data" qio -r -f qcow2 -c 'read -P 0x11 0 1M' "$RUN_FILE"

# --- Listen addresses: every spelling of "every interface" is refused for
# the NBD server, before anything listens (exit 1); so are addresses that
# are not numeric addresses at all (a usage error, exit 2).
wild_start ()
{
  local addr=$1 rc_want=$2 why=$3 out rc
  out=$(timeout 20 "$STRATA" serve --data-dir "$T/wild" --listen 127.0.0.1:$(free_port) \
          --nbd-listen "$addr" 2>&1 < /dev/null)
  rc=$?
  is "$rc" "$rc_want" "--nbd-listen $addr: the hub does not start"
  like "$out" "$why" "... and says why"
}
p=$(free_port)
for addr in "0.0.0.0:$p" "[::]:$p" "[::0]:$p" "[0:0::0]:$p" "[::ffff:0.0.0.0]:$p" \
            "[::FFFF:0:0]:$p" "[0:0:0:0:0:ffff:0.0.0.0]:$p" "[::0.0.0.0]:$p"; do
  wild_start "$addr" 1 'every interface'
done
for addr in "0:$p" "0x0:$p" "0.0:$p" "000.0.0.0:$p" "[::%lo]:$p"; do
  wild_start "$addr" 2 'bad IPv[46] address'
done
ok "no data folder was made for them" test ! -e "$T/wild"

# Positive controls at the edges of the limits.
long255=$(printf 'a%.0s' $(seq 1 255))
api PUT "$V/$long255" "{\"disks\":[{\"disk_index\":1023,\"size_bytes\":512}]}"
is "$API_STATUS" 201 "a 255-byte VM name with disk_index 1023 and 512 bytes is accepted"
api DELETE "$V/$long255"
is "$API_STATUS" 204 "and deleted"
api PUT "$V/bi4" "{\"vm_path\":\"${p4097:1}\",\"vcenter_host\":\"$long255\",\"disks\":[$D0]}"
is "$API_STATUS/$(jqb '.vm_path | length')" 201/4096 "a 4096-byte vm_path and a 255-byte vcenter_host are accepted"
api DELETE "$V/bi4"
is "$API_STATUS" 204 "and deleted"
api PUT "$V/bi3" "{\"disks\":[{\"disk_index\":0,\"size_bytes\":2251799813685248}]}"
is "$API_STATUS" 201 "size_bytes 2^51 (2 PiB) is accepted"
# ... and the largest disk really backs up: qemu-img can make that image.
api POST "$B" '{"vm_name":"bi3","backup_type":"full"}'
is "$API_STATUS" 201 "a backup of a 2 PiB disk starts"
is "$(jqb '.disks[0].size_bytes')" 2251799813685248 "with the disk's full size"
api POST "$B/$(jqb .backup_id)/cancel"
is "$API_STATUS" 200 "and is cancelled"

done_testing
