#!/usr/bin/env bash
# test-agent-lease.sh - a dead agent does not block its VM for ever.
# `strata backup` is SIGKILLed mid-copy (disk 0, a QCOW2 image, already
# completed with its new bitmap; disk 1 still copying from a throttled NBD
# server).  Until its lease lapses the job runs and another run is a
# conflict; then the hub fails the job, saying why, and the next run just
# works: it removes the killed run's bitmap (of a failed job: no backup the
# hub knows), so the disk carries exactly one strata bitmap, and it lasts
# longer than the lease (its progress reports renew it).  Bitmaps strata
# did not make are never touched.  A job started without a lease (the curl
# flow) stays running past another job's lapsed lease and completes late; a
# lease that lapsed while the hub was down gets one more term; bad leases
# are refused with 400, changing nothing.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-nbd qemu-storage-daemon nbdinfo jq curl cmp

export STRATA_LEASE_SECONDS=10
start_hub
D0=$T/vm-disk0.qcow2
qemu-img create -q -f qcow2 "$D0" 32M
qemu-io -f qcow2 -c 'write -P 0x11 0 2M' "$D0" > /dev/null
qemu-img bitmap --add "$D0" mine
truncate -s 48M "$T/d1.raw"
qemu-io -f raw -c 'write -P 0x21 0 40M' "$T/d1.raw" > /dev/null

agent_ok "the full succeeds" backup --vm lease1 --json "$D0" "$T/d1.raw"
B1=$(jqa .backup_id)
api GET "/api/v1/backups/$B1"
is "$(jqb .lease_seconds)" 10 "strata backup asked for a lease (STRATA_LEASE_SECONDS)"

# --- An incremental killed mid-copy: disk 1 is read at 4 MiB/s.
qemu-io -f qcow2 -c 'write -P 0x12 4M 64k' "$D0" > /dev/null
throttled_source "$T/d1.raw" "$T/src.sock" 4194304
is "$?" 0 "a throttled NBD server serves disk 1"
SRC1="nbd+unix:///src?socket=$T/src.sock"
"$STRATA" backup --hub "http://127.0.0.1:$HUB_PORT" --vm lease1 --json "$D0" "$SRC1" \
  > "$T/b2.out" 2> "$T/b2.err" &
AGENT=$!
copying () {
  running_jobs lease1
  [ "$(jqb '.backups[0].disks[0].status')" = completed ] &&
    [ "$(jqb '.backups[0].disks[1].progress.bytes_done // 0')" -gt 0 ]
}
ok "disk 0 completes while disk 1 copies, with progress" wait_for 60 copying
running_jobs lease1
B2=$(jqb '.backups[0].backup_id')
kill -KILL "$AGENT"
wait "$AGENT" 2>/dev/null
is "$(bitmaps_of "$D0" | grep -c '^backup-')" 2 \
   "the killed run left its new bitmap next to the previous one"
api GET "/api/v1/backups/$B2"
is "$(jqb .status)" running "right after the kill the job still runs"
agent backup --vm lease1 "$D0" "$SRC1"
is "$AGENT_RC" 4 "and a new run is a conflict while the lease lasts"

lapsed () { [ "$(job_status "$B2")" = failed ]; }
ok "the hub fails the job once its lease lapsed" wait_for 40 lapsed
api GET "/api/v1/backups/$B2"
like "$(jqb .error)" "the agent stopped renewing its lease at [0-9T:.-]+Z" \
     "saying that the agent stopped renewing its lease, and when"

# --- The next run just works, though it lasts longer than the lease.
agent_ok "the next run succeeds (longer than its 10 s lease: renewed)" \
  backup --vm lease1 --json "$D0" "$SRC1"
B3=$(jqa .backup_id)
like "$AGENT_ERR" "removed bitmap $B2" "it removed the killed run's bitmap"
is "$(bitmaps_of "$D0" | grep '^backup-')" "$B3" "the disk carries exactly one strata bitmap"
like "$(bitmaps_of "$D0")" "mine" "a bitmap strata did not make is left alone"
snapshot "$D0" "$T/p3-0.raw"
restore_is "$B3" 0 "$T/p3-0.raw" "the new point restores disk 0 bit-identical"
restore_is "$B3" 1 "$T/d1.raw" "and disk 1"
kill -KILL "$SRC_QSD_PID"
wait "$SRC_QSD_PID" 2>/dev/null

# --- The curl flow: no lease, no end but the client's.
api POST /api/v1/backups '{"vm_name":"seed1","backup_type":"full","disks":[{"disk_index":0,"size_bytes":1048576}]}'
is "$API_STATUS" 201 "a job without a lease starts"
S1=$(jqb .backup_id)
is "$(jqb .lease_expires_at)" null "it has no lease"
api POST /api/v1/backups '{"vm_name":"seed2","backup_type":"full","lease_seconds":10,"disks":[{"disk_index":0,"size_bytes":1048576}]}'
is "$API_STATUS" 201 "a job with a lease of 10 s starts"
S2=$(jqb .backup_id)
like "$(jqb .lease_expires_at)" "Z$" "it shows when its lease lapses"
gone2 () { [ "$(job_status "$S2")" = failed ]; }
ok "never renewed, the leased job is failed" wait_for 40 gone2
is "$(job_status "$S1")" running "the job without a lease still runs after that"
api POST "/api/v1/backups/$S1/complete" '{"disk_id":0,"change_id":"late"}'
is "$API_STATUS" 200 "and completes late"
is "$(jqb .job_status)" completed "its job is completed"

# --- A hub that was down longer than a lease gives it one full term again.
api POST /api/v1/backups '{"vm_name":"seed4","backup_type":"full","lease_seconds":10,"disks":[{"disk_index":0,"size_bytes":1048576}]}'
S4=$(jqb .backup_id)
stop_hub
sql_write "UPDATE backup_jobs SET lease_expires_at = '2020-01-01T00:00:00.000Z' WHERE id = '$S4'"
start_hub
renewed () { api GET "/api/v1/backups/$S4"; [ "$(jqb .lease_expires_at)" \> 2021 ]; }
ok "after a restart, a lease that lapsed while the hub was down is renewed" wait_for 20 renewed
is "$(job_status "$S4")" running "and its job still runs"
gone4 () { [ "$(job_status "$S4")" = failed ]; }
ok "then, never renewed by an agent, it is failed" wait_for 40 gone4

# --- Bad leases change nothing.
state_save
B=/api/v1/backups
DISK='"disks":[{"disk_index":0,"size_bytes":1048576}]'
bad 400 invalid_request "a lease below 10 s" POST $B "{\"vm_name\":\"seed3\",\"backup_type\":\"full\",\"lease_seconds\":9,$DISK}"
bad 400 invalid_request "a lease above 3600 s" POST $B "{\"vm_name\":\"seed3\",\"backup_type\":\"full\",\"lease_seconds\":3601,$DISK}"
bad 400 invalid_request "a lease that is no number" POST $B "{\"vm_name\":\"seed3\",\"backup_type\":\"full\",\"lease_seconds\":\"10\",$DISK}"
bad 400 invalid_request "a negative lease" POST $B "{\"vm_name\":\"seed3\",\"backup_type\":\"full\",\"lease_seconds\":-1,$DISK}"
api PUT /api/v1/vms/hubvm "{\"disks\":[{\"disk_index\":0,\"size_bytes\":$((48 * 1024 * 1024)),\"source\":\"$T/d1.raw\"}]}"
is "$API_STATUS" 201 "a VM whose disk the hub reads itself"
state_save
bad 400 invalid_request "a lease on a backup the hub copies" POST $B '{"vm_name":"hubvm","backup_type":"full","lease_seconds":60}'
bad 400 invalid_request "change_ids that are not strings" POST $B/changeids '{"change_ids":[1]}'
bad 400 invalid_request "change_ids missing" POST $B/changeids '{}'
api POST $B/changeids "{\"change_ids\":[\"$B3\",\"$B2\",\"late\",\"backup-never\"]}"
is "$(jqb -c .live)" "[\"$B3\",\"late\"]" "changeids: the completed job and a recorded change id are live"
is "$(jqb -c .unknown)" "[\"$B2\",\"backup-never\"]" "a failed job's and an unknown id are not"

no_qemu_nbd "no qemu-nbd is left behind"
done_testing
