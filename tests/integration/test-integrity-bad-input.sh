#!/usr/bin/env bash
# test-integrity-bad-input.sh - bad input on the routes of the integrity
# issue: POST /backups/{id}/verify and /contexts/{id}/verify, the agent's
# manifest and audit uploads (PUT /backups/{id}/disks/{n}/manifest|audit),
# a policy's "verify", and `strata verify`'s options.  Each gets its 4xx
# (or exit status) with a JSON error that says what is wrong, and changes
# neither the catalog nor the repository.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-storage-daemon nbdinfo jq curl perl

SIZE=$((16 * MiB))
start_hub
B=/api/v1/backups
C=/api/v1/contexts
P=/api/v1/policies

# part FILE VSIZE [FIRST:COUNT:KIND ...] [-- EXTRA-BYTES]: a manifest block
# part (docs/MANIFEST.md, version 1): the 32-byte header for a disk of VSIZE
# bytes, the runs (a data run with COUNT made-up hashes), the end record.
# VERSION, BLOCK and ALGO in the environment bend the header.
part ()
{
  local file=$1 vsize=$2
  shift 2
  perl -e '
    my ($v, $bs, $alg, $vsize, @runs) = @ARGV;
    binmode STDOUT;
    print pack("a8 V V Q< C x7", "STRATAMF", $v, $bs, $vsize, $alg);
    for my $r (@runs) {
      my ($first, $count, $kind) = split /:/, $r;
      print pack("Q< V V", $first, $count, $kind);
      print pack("C16", map { ($_ * 7 + $first) & 0xff } 1 .. 16) x $count if $kind == 1;
    }
    print "\0" x 16;' "${VERSION:-1}" "${BLOCK:-65536}" "${ALGO:-1}" "$vsize" "$@" > "$file"
}

# The scene: ib1 (one 16 MiB disk) with a completed full DONE, a failed
# incremental FAILED and a running incremental RUN; ib2 (two disks) with a
# running full RUN2 whose disk 1 is completed; ib3 with only a failed job;
# policy pol1 with a verify; hd1 with a source, whose hub-driven job ran.
put_vm ib1 $SIZE
start_backup ib1 full
complete_disk "$BID" 0 "C-$BID" 1
DONE=$BID
start_backup ib1 incremental
FAILED=$BID
api POST "$B/$FAILED/fail" '{"error":"made to fail"}'
is "$API_STATUS" 200 "fail $FAILED"
start_backup ib1 incremental
RUN=$BID
CTX1=$CTX
put_vm ib2 $SIZE $SIZE
start_backup ib2 full
RUN2=$BID
complete_disk "$RUN2" 1 "C-$RUN2" 1
put_vm ib3 $SIZE
start_backup ib3 full
api POST "$B/$BID/fail" '{"error":"made to fail"}'
is "$API_STATUS" 200 "ib3's only backup failed"
CTX3=$CTX
api PUT $P/pol1 '{"retention":{"keep_last":2},"verify":{"after_backup":true,"every_days":7,"audit_percent":5}}'
is "$API_STATUS" 201 "policy pol1 with a verify"
is "$(jqb -c .verify)" '{"after_backup":true,"every_days":7,"audit_percent":5}' "it shows its verify"

# A hub-driven job, kept running by a slow source: the hub hashes its own
# jobs, an agent's upload to it is a 409.
truncate -s $SIZE "$T/slow.raw"
qemu-io -f raw -c "write -P 0x5a 0 $SIZE" "$T/slow.raw" > /dev/null
ok "a throttled NBD source" throttled_source "$T/slow.raw" "$T/slow.sock" $((256 * 1024))
api PUT /api/v1/vms/hd1 "$(jq -cn --arg s "nbd+unix:///src?socket=$T/slow.sock" --argjson z $SIZE \
  '{disks:[{disk_index:0, size_bytes:$z, source:$s}]}')"
is "$API_STATUS" 201 "a VM whose disk has that source"
api POST $B '{"vm_name":"hd1","backup_type":"full"}'
is "$API_STATUS/$(jqb .driver)" "201/hub" "its backup is hub-driven"
HRUN=$(jqb .backup_id)
part "$T/ok.part" $SIZE 0:2:1 10:1:2
API_CT=application/octet-stream
api_file PUT "$B/$HRUN/disks/0/manifest" "$T/ok.part"
is_error 409 conflict "a manifest upload to a hub-driven job: 409"
api_file PUT "$B/$HRUN/disks/0/audit" "$T/ok.part"
is_error 409 conflict "an audit upload to a running hub-driven job: 409"
API_CT=default
api POST "$B/$HRUN/cancel" '{}'
is "$API_STATUS" 200 "cancel the hub-driven job"
ok "it ends" wait_for 60 job_ended "$HRUN"
kill "$SRC_QSD_PID" 2>/dev/null
wait "$SRC_QSD_PID" 2>/dev/null

state_save

# says REGEX DESC: the last error's message matches.
says ()
{
  like "$(jqb .error.message)" "$1" "... and the message says so ($2)"
}

# --- Verify ----------------------------------------------------------------------
long256=$(printf 'a%.0s' $(seq 1 256))
for id in '..%2F..' '%2E%2E' 'a%20b' 'a%00b' "$long256"; do
  bad 400 invalid_request "verify backup id ${id:0:20}"  POST "$B/$id/verify"
  bad 400 invalid_request "verify context id ${id:0:20}" POST "$C/$id/verify"
done
bad 404 not_found "verify an unknown backup"              POST "$B/backup-nope-1/verify"
bad 404 not_found "verify an unknown context"             POST "$C/ctx-nope-1/verify"
bad 409 conflict  "verify a running backup"               POST "$B/$RUN/verify"
bad 409 conflict  "verify a failed backup"                POST "$B/$FAILED/verify"
bad 409 conflict  "verify a cancelled hub-driven backup"  POST "$B/$HRUN/verify"
bad 409 conflict  "verify a context with no completed backup" POST "$C/$CTX3/verify"
bad 400 invalid_request "verify: an unknown field"        POST "$B/$DONE/verify" '{"deep":true}'
says 'deep' "names the field"
bad 400 invalid_request "verify context: an unknown field" POST "$C/$CTX1/verify" '{"points":["x"]}'
bad 400 invalid_request "verify: malformed JSON"          POST "$B/$DONE/verify" '{"deep":'
bad 400 invalid_request "verify: an array body"           POST "$B/$DONE/verify" '[]'
bad 400 invalid_request "verify: a string body"           POST "$B/$DONE/verify" '"all"'
bad 405 method_not_allowed "GET .../verify"               GET "$B/$DONE/verify"

# --- Manifest uploads -----------------------------------------------------------------
API_CT=application/octet-stream
M=manifest
for n in x -1 1024 1.5 0x1 ' 0' 000000000000000000000000000000001; do
  bad_file 400 invalid_request "manifest upload to disk index '$n'" PUT "$B/$RUN/disks/$(urlencode "$n")/$M" "$T/ok.part"
done
bad_file 404 not_found "manifest upload to disk 5 of a 1-disk job"   PUT "$B/$RUN/disks/5/$M" "$T/ok.part"
bad_file 404 not_found "manifest upload to an unknown backup"        PUT "$B/backup-nope-1/disks/0/$M" "$T/ok.part"
bad_file 400 invalid_request "manifest upload to backup id ..%2F.."  PUT "$B/..%2F../disks/0/$M" "$T/ok.part"
bad_file 409 conflict "manifest upload to a completed disk"          PUT "$B/$DONE/disks/0/$M" "$T/ok.part"
bad_file 409 conflict "manifest upload to a completed disk of a running job" PUT "$B/$RUN2/disks/1/$M" "$T/ok.part"
bad_file 409 conflict "manifest upload to a failed job"              PUT "$B/$FAILED/disks/0/$M" "$T/ok.part"
bad_file 409 conflict "manifest upload to a cancelled hub-driven job" PUT "$B/$HRUN/disks/0/$M" "$T/ok.part"

head -c 4096 /dev/urandom > "$T/random.part"
bad_file 400 invalid_request "a part of random bytes"                PUT "$B/$RUN/disks/0/$M" "$T/random.part"
says 'header|magic|manifest' "what is wrong"
head -c $(( $(stat -c %s "$T/ok.part") - 10 )) "$T/ok.part" > "$T/short.part"
bad_file 400 invalid_request "a valid part cut short"                PUT "$B/$RUN/disks/0/$M" "$T/short.part"
says 'end|truncat|short' "it ends early"
head -c 20 "$T/ok.part" > "$T/header.part"
bad_file 400 invalid_request "a part cut inside its header"          PUT "$B/$RUN/disks/0/$M" "$T/header.part"
part "$T/size.part" $((2 * SIZE)) 0:2:1
bad_file 400 invalid_request "a part for another virtual size"       PUT "$B/$RUN/disks/0/$M" "$T/size.part"
says 'size' "the size differs"
part "$T/order.part" $SIZE 10:1:1 0:2:1
bad_file 400 invalid_request "runs out of order"                     PUT "$B/$RUN/disks/0/$M" "$T/order.part"
part "$T/overlap.part" $SIZE 0:4:1 2:1:2
bad_file 400 invalid_request "overlapping runs"                      PUT "$B/$RUN/disks/0/$M" "$T/overlap.part"
part "$T/past.part" $SIZE 255:2:2
bad_file 400 invalid_request "a run past the disk's end"             PUT "$B/$RUN/disks/0/$M" "$T/past.part"
part "$T/kind.part" $SIZE 0:1:3
bad_file 400 invalid_request "a run of an unknown kind"              PUT "$B/$RUN/disks/0/$M" "$T/kind.part"
part "$T/count.part" $SIZE 0:0:2
bad_file 400 invalid_request "a run of no blocks"                    PUT "$B/$RUN/disks/0/$M" "$T/count.part"
{ cat "$T/ok.part"; printf 'more'; } > "$T/trailing.part"
bad_file 400 invalid_request "bytes after the end record"            PUT "$B/$RUN/disks/0/$M" "$T/trailing.part"
VERSION=2 part "$T/v2.part" $SIZE
bad_file 400 invalid_request "format version 2"                      PUT "$B/$RUN/disks/0/$M" "$T/v2.part"
says 'version' "the version"
BLOCK=4096 part "$T/bs.part" $SIZE
bad_file 400 invalid_request "a block size of 4096"                  PUT "$B/$RUN/disks/0/$M" "$T/bs.part"
ALGO=2 part "$T/alg.part" $SIZE
bad_file 400 invalid_request "an unknown algorithm"                  PUT "$B/$RUN/disks/0/$M" "$T/alg.part"
: > "$T/empty.part"
bad_file 400 invalid_request "an empty part"                         PUT "$B/$RUN/disks/0/$M" "$T/empty.part"
head -c $((1 * MiB)) /dev/urandom > "$T/big.part"
bad_file 413 payload_too_large "a part larger than a 16 MiB disk's can be" PUT "$B/$RUN/disks/0/$M" "$T/big.part"
API_CURL_EXTRA=(-H 'Transfer-Encoding: chunked')
bad_file 413 payload_too_large "the same, chunked (no Content-Length)" PUT "$B/$RUN/disks/0/$M" "$T/big.part"
API_CURL_EXTRA=()

# --- Audit uploads ---------------------------------------------------------------------
A=audit
bad_file 409 conflict "audit upload to a running disk"               PUT "$B/$RUN/disks/0/$A" "$T/ok.part"
bad_file 409 conflict "audit upload to a running disk of a job with a completed one" PUT "$B/$RUN2/disks/0/$A" "$T/ok.part"
bad_file 409 conflict "audit upload to a failed job"                 PUT "$B/$FAILED/disks/0/$A" "$T/ok.part"
bad_file 404 not_found "audit upload to an unknown backup"           PUT "$B/backup-nope-1/disks/0/$A" "$T/ok.part"
bad_file 404 not_found "audit upload to disk 5"                      PUT "$B/$DONE/disks/5/$A" "$T/ok.part"
bad_file 400 invalid_request "audit upload to disk index x"          PUT "$B/$DONE/disks/x/$A" "$T/ok.part"
bad_file 400 invalid_request "audit upload of random bytes"          PUT "$B/$DONE/disks/0/$A" "$T/random.part"
bad_file 400 invalid_request "audit upload for another virtual size" PUT "$B/$DONE/disks/0/$A" "$T/size.part"
bad_file 400 invalid_request "audit upload cut short"                PUT "$B/$DONE/disks/0/$A" "$T/short.part"
bad_file 413 payload_too_large "audit upload too large"              PUT "$B/$DONE/disks/0/$A" "$T/big.part"
API_CT=default

# --- A policy's verify ---------------------------------------------------------------
for v in '{"every_days":0}' '{"every_days":-1}' '{"every_days":"7"}' '{"every_days":1.5}' \
         '{"audit_percent":101}' '{"audit_percent":0}' '{"audit_percent":-1}' '{"audit_percent":"5"}' \
         '{"after_backup":"yes"}' '{"after_backup":1}' '{"often":true}' '{"after_backup":true,"deep":1}' \
         '5' '[]' '"daily"' 'true'; do
  bad 400 invalid_request "new policy with verify $v"      PUT $P/pv "{\"verify\":$v}"
  bad 400 invalid_request "pol1 replaced with verify $v"   PUT $P/pol1 "{\"retention\":{\"keep_last\":2},\"verify\":$v}"
done
bad 400 invalid_request "verify outside the policy's verify" PUT $P/pv '{"every_days":7}'
api PUT $P/pv '{"verify":{"often":true}}'
says 'often' "names the key"
api PUT $P/pv '{"verify":{"audit_percent":101}}'
says 'audit_percent' "names the field"

# --- strata verify's options ----------------------------------------------------------
# cli_bad RC DESC ARGS...: `strata verify ARGS` exits RC, says something on
# stderr, and changes nothing.
cli_bad ()
{
  local rc=$1 desc=$2
  shift 2
  agent verify "$@"
  is "$AGENT_RC" "$rc" "strata verify $desc: exit $rc"
  isnt "$AGENT_ERR" "" "... and says why on stderr"
  _state_same "strata verify $desc"
}
cli_bad 2 "with no option"
cli_bad 2 "with --backup and --vm" --backup "$DONE" --vm ib1
cli_bad 2 "with an unknown option" --backup "$DONE" --deep
cli_bad 2 "with --backup missing its value" --backup
cli_bad 2 "with an empty --vm" --vm ''
cli_bad 2 "with an extra argument" --backup "$DONE" extra
cli_bad 3 "of an unknown backup" --backup backup-nope-1
cli_bad 3 "of an unknown VM" --vm nope
"$STRATA" verify --hub http://127.0.0.1:1 --backup "$DONE" > /dev/null 2> "$T/err"
is "$?" 3 "strata verify with an unreachable hub: exit 3"

# --- Still healthy, and the good requests work --------------------------------------------
api GET /healthz
is "$API_STATUS" 200 "the hub is healthy after all that"
verify_ok "$B/$DONE/verify" "verify $DONE"
is "$(verified "$DONE" '.disks[0] | "\(.verify_state) \(.hashed)"')" "ok false" \
   "a disk completed without an upload is checked for structure only"
API_CT=application/octet-stream
api_file PUT "$B/$RUN/disks/0/manifest" "$T/ok.part"
is "$API_STATUS" 204 "a valid manifest upload to a running disk: 204"
api_file PUT "$B/$RUN/disks/0/manifest" "$T/ok.part"
is "$API_STATUS" 204 "a second one replaces it: 204"
API_CT=default
complete_disk "$RUN" 0 "C-$RUN" 1
api GET "$B/$RUN"
MF=$(jqb .disks[0].qcow2_path).manifest
ok "its manifest is next to its file" test -s "$MF"
# The manifest's facts (JSON, before its 32-byte footer) say it has hashes;
# a verify would not use them: its parent, completed without any, has none.
ok "and its facts say it has hashes" grep -aq '"hashed":true' "$MF"
done_testing
