#!/usr/bin/env bash
# test-metrics.sh - GET /metrics: the API's token guards it; promtool accepts
# what it says; and what it says is what happened: jobs counted by status
# and driver, bytes written and zeroed, the last success of a context at
# its job's completed_at, running jobs and disks while a job runs, a
# storage-daemon restart, requests by route class, repository usage.  The
# README's example alert rules pass promtool's check and unit tests.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo jq curl sqlite3 promtool

SIZE=$((16 * MiB))
TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
echo "$TOKEN" > "$T/token"
chmod 600 "$T/token"
start_hub --api-token-file "$T/token" --workers 1
API_CURL_EXTRA=(-H "Authorization: Bearer $TOKEN")

# scrape [CURL-ARGS...]: GET /metrics into $T/metrics.txt; SCRAPE_STATUS
# and SCRAPE_TYPE are the answer's status and Content-Type.
scrape ()
{
  local out
  out=$(curl -s -o "$T/metrics.txt" -w '%{http_code} %{content_type}' "$@" \
        "http://127.0.0.1:$HUB_PORT/metrics")
  SCRAPE_STATUS=${out%% *}
  SCRAPE_TYPE=${out#* }
}

# metric SERIES: its value in a fresh scrape (with the token); empty when
# the series is not there.
metric ()
{
  scrape -H "Authorization: Bearer $TOKEN"
  awk -v k="$1" '$1 == k { print $2 }' "$T/metrics.txt"
}

# metric_is SERIES VALUE: polled (bounded) for what a background thread sets.
metric_is ()
{
  [ "$(metric "$1")" = "$2" ]
}

# promtool_ok DESC: promtool check metrics accepts the last scrape.
promtool_ok ()
{
  if promtool check metrics < "$T/metrics.txt" > "$T/promtool.out" 2>&1; then
    pass "$1"
  else
    fail "$1" "$(cat "$T/promtool.out")" "$(head -c 3000 "$T/metrics.txt")"
  fi
}

# --- The token -----------------------------------------------------------
scrape
is "$SCRAPE_STATUS/$(jq -r .error.code "$T/metrics.txt")" 401/unauthorized \
   "GET /metrics without the token: 401 with the JSON error"
scrape -H "Authorization: Bearer ${TOKEN}x"
is "$SCRAPE_STATUS" 401 "GET /metrics with a wrong token: 401"
scrape -X POST -H "Authorization: Bearer $TOKEN"
is "$SCRAPE_STATUS/$(jq -r .error.code "$T/metrics.txt")" 405/method_not_allowed \
   "POST /metrics: 405"
scrape -H "Authorization: Bearer $TOKEN"
is "$SCRAPE_STATUS" 200 "GET /metrics with the token: 200"
is "$SCRAPE_TYPE" "text/plain; version=0.0.4; charset=utf-8" "in Prometheus' text format 0.0.4"
promtool_ok "promtool check metrics accepts a fresh hub's metrics"
scrape -H "Authorization: Bearer $TOKEN" -G -d x=1
is "$SCRAPE_STATUS" 400 "GET /metrics?x=1: 400 (no parameters)"

for s in completed failed cancelled; do
  for d in agent hub; do
    is "$(metric "strata_jobs_total{status=\"$s\",driver=\"$d\"}")" 0 "strata_jobs_total $s/$d starts at 0"
  done
done
is "$(metric strata_storage_daemon_restarts_total)" 0 "no storage daemon restart yet"
like "$(grep '^strata_build_info' "$T/metrics.txt")" '^strata_build_info\{version="[0-9][^"]*"\} 1$' \
     "strata_build_info names the version"
start=$(metric strata_start_time_seconds)
now=$(date +%s)
ok "strata_start_time_seconds ($start) is when the hub started (now $now)" \
   awk -v s="$start" -v n="$now" 'BEGIN { exit !(s <= n + 1 && s > n - 300) }'

# --- An agent job: running gauges, bytes, the last success ---------------
put_vm m1 $SIZE $SIZE
start_backup m1 full
F=$BID
CTX1=$CTX
is "$(metric 'strata_running_jobs{driver="agent"}')/$(metric 'strata_running_jobs{driver="hub"}')" \
   1/0 "a running agent job: strata_running_jobs agent 1, hub 0"
is "$(metric strata_running_disks)" 2 "strata_running_disks is its two disks"
write_ok "${NBD_URI[0]}" 0x11 0 1M
write_ok "${NBD_URI[1]}" 0x22 0 2M
api POST "/api/v1/backups/$F/complete" '{"disk_id":0,"bytes_transferred":1048576,"bytes_zeroed":65536}'
is "$API_STATUS" 200 "complete disk 0 with bytes_zeroed"
is "$(metric strata_running_disks)" 1 "one disk left running"
is "$(metric 'strata_jobs_total{status="completed",driver="agent"}')" 0 "the job is not counted before it ends"
complete_disk "$F" 1 "" 2097152
is "$(metric 'strata_jobs_total{status="completed",driver="agent"}')" 1 \
   "strata_jobs_total completed/agent is 1 once the job completed"
is "$(metric 'strata_running_jobs{driver="agent"}')/$(metric strata_running_disks)" 0/0 \
   "nothing runs any more"
is "$(metric strata_written_bytes_total)" 3145728 "strata_written_bytes_total adds both disks' bytes_transferred"
is "$(metric strata_zeroed_bytes_total)" 65536 "strata_zeroed_bytes_total is the bytes_zeroed sent"
api GET "/api/v1/backups/$F"
done_at=$(jqb .completed_at)
want=$(date -u -d "$done_at" +%s)
is "$(metric "strata_last_success_timestamp_seconds{context=\"$CTX1\",vm=\"m1\",repository=\"default\"}")" \
   "$want" "strata_last_success_timestamp_seconds is the job's completed_at ($done_at)"

# A repeated completion is not counted again; a bad bytes_zeroed is refused.
complete_disk "$F" 1 "" 2097152
is "$(metric strata_written_bytes_total)" 3145728 "a repeated completion adds no bytes"
put_vm m2 $SIZE
start_backup m2 full
for v in -1 '"1"' 1.5 4611686018427387905; do
  api POST "/api/v1/backups/$BID/complete" "{\"disk_id\":0,\"bytes_zeroed\":$v}"
  is_error 400 invalid_request "bytes_zeroed $v: 400"
done
is "$(metric strata_zeroed_bytes_total)" 65536 "refused completions add nothing"

# --- A failed job ----------------------------------------------------------
api POST "/api/v1/backups/$BID/fail" '{"error":"the source went away"}'
is "$API_STATUS/$(jqb .status)" 200/failed "fail the job of m2"
is "$(metric 'strata_jobs_total{status="failed",driver="agent"}')" 1 "strata_jobs_total failed/agent is 1"
is "$(metric 'strata_jobs_total{status="completed",driver="agent"}')" 1 "completed/agent stays 1"
ok "a context without a completed backup has no last success" \
   test -z "$(grep "^strata_last_success_timestamp_seconds.*vm=\"m2\"" "$T/metrics.txt")"
start_backup m1 incremental
api POST "/api/v1/backups/$BID/cancel"
is "$(metric 'strata_jobs_total{status="cancelled",driver="agent"}')" 1 "strata_jobs_total cancelled/agent is 1"
is "$(metric "strata_last_success_timestamp_seconds{context=\"$CTX1\",vm=\"m1\",repository=\"default\"}")" \
   "$want" "the last success stays the completed job's"

# --- A hub-driven job: written bytes from the engine -----------------------
qemu-img create -q -f qcow2 "$T/src.qcow2" $SIZE
qemu-io -f qcow2 -c 'write -P 0x33 0 3M' -c 'write -z 4M 2M' "$T/src.qcow2" > /dev/null
api PUT /api/v1/vms/hd1 "$(jq -cn --arg s "$T/src.qcow2" --argjson n $SIZE \
  '{disks:[{disk_index:0,size_bytes:$n,source:$s}]}')"
is "$API_STATUS" 201 "PUT a VM with a source"
written0=$(metric strata_written_bytes_total)
api POST /api/v1/backups '{"vm_name":"hd1","backup_type":"full"}'
is "$API_STATUS/$(jqb .driver)" 201/hub "a hub-driven backup starts"
H=$(jqb .backup_id)
hub_done () { api GET "/api/v1/backups/$H"; [ "$(jqb .status)" = completed ]; }
ok "the hub-driven job completes" wait_for 60 hub_done
api GET "/api/v1/backups/$H"
is "$(metric 'strata_jobs_total{status="completed",driver="hub"}')" 1 "strata_jobs_total completed/hub is 1"
hub_bytes=$(jqb '[.disks[].bytes_transferred] | add')
cmp_ok "$hub_bytes" -ge 3145728 "the engine wrote the source's data ($hub_bytes bytes)"
is "$(metric strata_written_bytes_total)" $((written0 + hub_bytes)) \
   "strata_written_bytes_total rose by what the engine wrote"

# --- Storage-daemon restarts ------------------------------------------------
old=$(qsd_pids)
like "$old" '^[0-9]+$' "the hub runs one qemu-storage-daemon"
ok "kill -9 the qemu-storage-daemon" kill -KILL "$old"
new_daemon () { local p; p=$(qsd_pids); [[ $p =~ ^[0-9]+$ ]] && [ "$p" != "$old" ]; }
ok "the hub starts a new one" wait_for 20 new_daemon
ok "strata_storage_daemon_restarts_total becomes 1" \
   wait_for 20 metric_is strata_storage_daemon_restarts_total 1

# --- Requests by route class ------------------------------------------------
is "$(metric 'strata_http_requests_total{class="vms/*",method="PUT",code="201"}')" 3 \
   "the three VM PUTs are counted under vms/*"
is "$(metric 'strata_http_requests_total{class="metrics",method="GET",code="401"}')" 2 \
   "the two refused scrapes are counted"
before=$(metric 'strata_http_requests_total{class="vms",method="GET",code="200"}')
before_h=$(metric 'strata_http_request_duration_seconds_count{class="vms"}')
api GET /api/v1/vms
api GET /api/v1/vms
is "$(metric 'strata_http_requests_total{class="vms",method="GET",code="200"}')" $((${before:-0} + 2)) \
   "two GET /api/v1/vms add two"
is "$(metric 'strata_http_request_duration_seconds_count{class="vms"}')" $((${before_h:-0} + 2)) \
   "and two observations to the latency histogram"
api GET /api/v1/nothing/here
is "$API_STATUS" 404 "GET of an unknown route: 404"
is "$(metric 'strata_http_requests_total{class="unmatched",method="GET",code="404"}')" 1 \
   "it counts as unmatched"

# --- Repository usage (cached; the API uses the same numbers) -------------
api GET /api/v1/repositories/default
used=$(jqb .used_bytes)
cmp_ok "$used" -gt 0 "the repository uses bytes ($used)"
ok "strata_repository_used_bytes comes to the API's used_bytes" \
   wait_for 20 metric_is 'strata_repository_used_bytes{repository="default"}' "$used"
cmp_ok "$(metric 'strata_repository_free_bytes{repository="default"}')" -gt 0 \
   "strata_repository_free_bytes is positive"

scrape -H "Authorization: Bearer $TOKEN"
promtool_ok "promtool check metrics accepts them after jobs, restarts and requests"

# --- The README's alert rules -----------------------------------------------
rules=$top/docs/prometheus-alerts.yml
ok "promtool check rules accepts docs/prometheus-alerts.yml" promtool check rules "$rules"
if promtool test rules "$top/tests/integration/metrics-alerts.test.yml" > "$T/rules.out" 2>&1; then
  pass "the alert rules fire as their unit tests say"
else
  fail "the alert rules fire as their unit tests say" "$(cat "$T/rules.out")"
fi
ok "the README shows the rules it ships" \
   grep -q 'alert: StrataNoRecentBackup' "$top/README.md"

done_testing
