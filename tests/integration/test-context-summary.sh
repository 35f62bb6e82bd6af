#!/usr/bin/env bash
# test-context-summary.sh - the summary every context carries in the API
# (hub/summary.c), which the dashboard and `strata contexts` show: points,
# the newest job's status and error, the newest completed backup, the bytes
# its files take, its verify state, and whether its VM's schedule is behind.
# Hub-driven backups of a QCOW2 source; a source taken away fails one; the
# scheduler's record of a VM's last run is set behind the hub's back to
# stand for a scheduled run that made no backup.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl

start_hub
SIZE=$((32 * MiB))
SRC=$T/cs-disk0.qcow2
qemu-img create -q -f qcow2 "$SRC" $SIZE
qemu-io -f qcow2 -c 'write -P 0x5a 0 3M' "$SRC" > /dev/null || fail "write the source"

# A yearly schedule: its next run is months away, so only a missed run
# (last_run_at with no backup after it) can make the VM overdue here.
api_is PUT /api/v1/policies/yearly '{"schedule":"0 0 1 1 *"}' 201 "a yearly policy"
api_is PUT /api/v1/vms/cs1 "$(jq -cn --arg a "$SRC" --argjson s $SIZE \
  '{policy:"yearly", disks:[{disk_index:0,size_bytes:$s,source:$a}]}')" 201 \
  "a VM with a source and the yearly policy"

# summary FILTER: FILTER on the VM's only context's summary.
summary ()
{
  curl -s "http://127.0.0.1:$HUB_PORT/api/v1/contexts?vm_name=cs1" | jq -r ".contexts[0].summary | $1"
}

# backup_ok DESC TYPE: a hub-driven backup of cs1 that completes; sets BID.
backup_ok ()
{
  api POST /api/v1/backups "{\"vm_name\":\"cs1\",\"backup_type\":\"$2\"}"
  is "$API_STATUS" 201 "$1: started"
  BID=$(jqb .backup_id)
  ok "$1: ends" wait_for 120 job_ended "$BID"
  is "$(job_status "$BID")" completed "$1: completed"
}

backup_ok "a full" full
P1=$BID
qemu-io -f qcow2 -c 'write -P 0x6b 8M 1M' "$SRC" > /dev/null || fail "write the source"
backup_ok "an incremental" incremental
P2=$BID
CTX=$(context_of cs1)

api GET "/api/v1/contexts/$CTX"
is "$API_STATUS" 200 "GET the context"
is "$(jqb '.summary | "\(.points) \(.last_status) \(.verify_state) \(.overdue)"')" \
   "2 completed none false" "two points, the newest completed, none verified, not overdue"
is "$(jqb .summary.last_completed_at)" "$(curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups/$P2" | jq -r .completed_at)" \
   "the last completed backup's time is the incremental's"

# bytes_used is what the context's files and manifests take on disk.
want=0
for f in $(find "$DATA/repository/$CTX" -type f); do
  want=$((want + $(stat -c '%b * %B' "$f")))
done
is "$(summary .bytes_used)" "$want" "bytes_used is the allocated bytes of the context's files ($want)"

# --- Verify state ------------------------------------------------------------------
verify_ok "/api/v1/contexts/$CTX/verify" "verify the context"
is "$(summary .verify_state)" ok "every point verified ok: the context is ok"

# --- A failed job ------------------------------------------------------------------
mv "$SRC" "$SRC.away"
api POST /api/v1/backups '{"vm_name":"cs1","backup_type":"incremental"}'
is "$API_STATUS" 201 "a backup whose source is gone starts"
BAD=$(jqb .backup_id)
ok "and ends" wait_for 120 job_ended "$BAD"
is "$(job_status "$BAD")" failed "and fails"
is "$(summary '"\(.points) \(.last_status)"')" "2 failed" \
   "the summary shows the failure, and still two points"
like "$(summary .last_error)" "." "with the job's error"
mv "$SRC.away" "$SRC"

# --- Overdue -----------------------------------------------------------------------
is "$(summary .overdue)" false "a failed manual backup does not make the VM overdue"
sql_write "UPDATE vms SET last_run_at = '$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)' WHERE vm_name = 'cs1'"
is "$(summary .overdue)" true "a scheduled run that made no backup makes it overdue"
like "$(summary .overdue_reason)" "did not complete a backup" "and says why"
backup_ok "a backup after it" incremental
is "$(summary '"\(.overdue) \(.points) \(.last_status)"')" "false 3 completed" \
   "a completed backup after the scheduled run ends it"
sql_write "UPDATE vms SET next_run_at = '$(ts_ago '2 hours')' WHERE vm_name = 'cs1'"
is "$(summary .overdue)" true "a scheduled run two hours late makes it overdue"
like "$(summary .overdue_reason)" "has not started" "and says why"

done_testing
