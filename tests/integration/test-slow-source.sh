#!/usr/bin/env bash
# test-slow-source.sh - a hub-driven start whose nbd:// source never answers
# (a TCP listener that accepts and then says nothing) must not hold up the
# hub: the sources are sized outside the hub's lock, each within a bound
# (10 s), so four such starts of different VMs run side by side and answer
# after about one bound, and a start of a VM with a good source answers
# while they still wait.

source "$(dirname "$0")/../functions.sh"
requires qemu-img jq curl perl

BOUND=10
start_hub --workers 2

# The silent server: accepts every connection, keeps it, never writes; one
# line per accepted connection in $T/accepted.
SILENT_PORT=$(free_port)
: > "$T/accepted"
perl -MIO::Socket::INET -e '
  my ($port, $log, $ready) = @ARGV;
  my $l = IO::Socket::INET->new (LocalAddr => "127.0.0.1", LocalPort => $port,
                                 Listen => 64, ReuseAddr => 1) or die "listen: $!";
  open my $r, ">", $ready; close $r;
  my @keep;
  while (my $c = $l->accept) {
    push @keep, $c;
    open my $f, ">>", $log; print $f "accepted\n"; close $f;
  }' "$SILENT_PORT" "$T/accepted" "$T/silent.ready" &
SILENT_PID=$!
_cleanup_extra ()
{
  [ -n "$SILENT_PID" ] && kill "$SILENT_PID" 2>/dev/null
  for p in "${CURL_PIDS[@]}"; do kill "$p" 2>/dev/null; done
}
wait_for 10 test -e "$T/silent.ready" || bail "the silent NBD server did not start"

for i in 1 2 3 4; do
  api PUT "/api/v1/vms/slow$i" "$(jq -cn --arg s "nbd://127.0.0.1:$SILENT_PORT/x$i" \
    '{disks:[{disk_index:0,size_bytes:1048576,source:$s}]}')"
  is "$API_STATUS" 201 "PUT VM slow$i whose source never answers"
done
qemu-img create -q -f qcow2 "$T/good.qcow2" 4M
api PUT /api/v1/vms/good "$(jq -cn --arg s "$T/good.qcow2" \
  '{disks:[{disk_index:0,size_bytes:4194304,source:$s}]}')"
is "$API_STATUS" 201 "PUT VM good with a QCOW2 source"

# Four starts at once, each in its own curl.
t0=$SECONDS
CURL_PIDS=()
for i in 1 2 3 4; do
  start_backup_bg slow$i "$T/slow$i" 120
  CURL_PIDS+=("$BG_PID")
done

# Each start sizes its source at once, side by side: the silent server sees
# four connections well before one bound is over (with the lock held across
# the sizing, it saw one, and the next only after the first gave up).
accepted () { [ "$(wc -l < "$T/accepted")" -ge 4 ]; }
ok "the four starts size their sources at the same time" wait_for $((BOUND - 2)) accepted

# A start of a VM with a good source is not held up by them.
api POST /api/v1/backups '{"vm_name":"good","backup_type":"full"}'
is "$API_STATUS" 201 "a start of a VM with a good source answers 201"
GOOD=$(jqb .backup_id)
still=0
for p in "${CURL_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && still=$((still + 1)); done
is "$still" 4 "... while the four slow starts still wait for their sources"
is "$(jq -r '.disks[0].size_bytes' <<< "$API_BODY")" 4194304 "... sized from its source"

for i in 1 2 3 4; do
  wait "${CURL_PIDS[$((i - 1))]}"
done
CURL_PIDS=()
elapsed=$((SECONDS - t0))
for i in 1 2 3 4; do
  is "$(cat "$T/slow$i.code")" 201 "the start of slow$i answers once its bound is over"
done
cmp_ok "$elapsed" -le $((BOUND * 2)) "the four starts took about one bound (${elapsed} s), not four"
cmp_ok "$elapsed" -ge $((BOUND - 1)) "... and the bound was waited for (${elapsed} s)"
like "$(cat "$HUB_LOG")" "source nbd://127.0.0.1:$SILENT_PORT/x1: .*within $BOUND s" \
  "the hub's log says the source did not answer within the bound"

# The good backup completes.
good_done () { api GET "/api/v1/backups/$GOOD"; [ "$(jqb .status)" = completed ]; }
ok "the good backup completes" wait_for 60 good_done

# The slow jobs fail in the workers once the silent server goes away.
kill "$SILENT_PID"; wait "$SILENT_PID" 2>/dev/null; SILENT_PID=
for i in 1 2 3 4; do
  id=$(jq -r .backup_id "$T/slow$i.body")
  ended () { api GET "/api/v1/backups/$id"; [ "$(jqb .status)" = failed ]; }
  ok "the job of slow$i fails, the source being gone" wait_for 90 ended
  api GET "/api/v1/backups/$id"
  like "$(jqb .disks[0].error)" "127.0.0.1:$SILENT_PORT" "... saying which source, on its disk"
done

done_testing
