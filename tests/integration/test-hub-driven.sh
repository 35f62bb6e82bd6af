#!/usr/bin/env bash
# test-hub-driven.sh - backups the hub runs itself: every inventory disk of
# the VM has a source (here QCOW2 images with persistent bitmaps), so POST
# /backups makes the hub's workers copy the disks with the engine and
# complete the job with no other client.  Incrementals build on the bitmaps;
# a source that goes missing fails the job and the next backup builds on the
# last good one; a hub killed half-way finishes the job after its restart.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo jq curl sqlite3

SIZE=$((64 * MiB))
for bad in 0 65 two; do
  out=$("$STRATA" serve --data-dir "$T/bad" --workers "$bad" 2>&1 < /dev/null)
  is "$?" 2 "--workers $bad is a usage error"
  like "$out" "workers" "and says so"
done
start_hub --workers 2

src_write () # DISK PATTERN OFFSET LENGTH
{
  qemu-io -f qcow2 -c "write -P $2 $3 $4" "$T/src$1.qcow2" > /dev/null 2> "$T/qio.err" ||
    fail "write $2 at $3 into source $1" "$(cat "$T/qio.err")"
}

for d in 0 1; do
  qemu-img create -q -f qcow2 "$T/src$d.qcow2" $SIZE
done
src_write 0 0x11 0 8M
src_write 0 0x12 40M 3M
src_write 1 0x21 1M 5M

api PUT /api/v1/vms/hd1 "$(jq -cn --arg a "$T/src0.qcow2" --arg b "$T/src1.qcow2" --argjson s $SIZE \
  '{disks:[{disk_index:0,size_bytes:$s,source:$a},{disk_index:1,size_bytes:$s,source:$b}]}')"
is "$API_STATUS" 201 "PUT a VM whose two disks have QCOW2 sources"


# progress_ok: every disk's progress is null or well-formed.
BAD_PROGRESS=
SEEN_PROGRESS=0
watch_job ()
{
  local deadline=$((SECONDS + 120)) p
  while [ $SECONDS -le $deadline ]; do
    JOB=$(curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups/$1")
    # finishing: every disk is recorded, the hub still settles the bitmaps.
    case $(jq -r .status <<< "$JOB") in running|finishing) ;; *) return 0 ;; esac
    p=$(jq -c '[.disks[].progress | select(. != null)]' <<< "$JOB")
    if [ "$p" != "[]" ]; then
      SEEN_PROGRESS=1
      jq -e 'all(.[]; (.bytes_done|type)=="number" and (.bytes_total|type)=="number"
                  and (.rate_bytes_per_sec|type)=="number" and .bytes_done >= 0
                  and (.bytes_total == 0 or .bytes_done <= .bytes_total))' <<< "$p" > /dev/null ||
        BAD_PROGRESS+=" $p"
    fi
    sleep 0.05
  done
  return 1
}

# wait_job ID DESC: one test that the job ends within the bound (not in a
# subshell, so that $JOB keeps its last state).
wait_job ()
{
  if watch_job "$1"; then pass "$2"; else fail "$2" "  last state: $JOB"; fi
}

# compare_restore BACKUP DISK FILE DESC: a restore export of that disk reads
# exactly as FILE (a QCOW2 source saved at that point).
compare_restore ()
{
  local rid uri
  api POST /api/v1/restores "{\"backup_id\":\"$1\",\"disk_index\":$2}"
  rid=$(jqb .restore_id); uri=$(answer_uri)
  if [ "$API_STATUS" != 201 ]; then
    fail "$4" "$(_api_context)"
    return
  fi
  ok "$4" qimg compare -q -U -f qcow2 -F raw "$3" "$uri"
  api DELETE "/api/v1/restores/$rid"
}

save_sources () # NAME
{
  for d in 0 1; do cp "$T/src$d.qcow2" "$T/$1-$d.qcow2"; done
}

# --- A full, with no other client -------------------------------------------
save_sources full
api POST /api/v1/backups '{"vm_name":"hd1","backup_type":"full"}'
is "$API_STATUS" 201 "POST /backups: 201"
B1=$(jqb .backup_id)
is "$(jqb .driver)/$(jqb .status)" "hub/running" "the job is hub-driven and running"
is "$(jqb '[.disks[].nbd_uri | type] | join(",")')" "string,string" "its disks have NBD targets"
wait_job "$B1" "it completes by itself"
is "$(jq -r .status <<< "$JOB")" completed "status completed"
is "$BAD_PROGRESS" "" "every progress seen was well-formed"
note "progress seen while running: $SEEN_PROGRESS"
is "$(jq -r '[.disks[] | .status + "/" + .backup_type + "/" + (.progress|tostring)] | join(" ")' <<< "$JOB")" \
   "completed/full/null completed/full/null" "both disks completed in full; progress null now"
C0=$(jq -r '.disks[0].change_id' <<< "$JOB"); C1=$(jq -r '.disks[1].change_id' <<< "$JOB")
like "$C0" '.+' "disk 0 has a change id"
like "$C1" '.+' "disk 1 has a change id"
isnt "$(jq -r '.disks[0].bytes_transferred' <<< "$JOB")" 0 "bytes were transferred"
compare_restore "$B1" 0 "$T/full-0.qcow2" "disk 0 restores as the source was"
compare_restore "$B1" 1 "$T/full-1.qcow2" "disk 1 restores as the source was"

# --- An incremental after more writes ---------------------------------------
src_write 0 0x13 4M 1M
src_write 1 0x22 30M 2M
ok "discard a range of source 1" qemu-io -f qcow2 -c 'discard 1M 1M' "$T/src1.qcow2"
save_sources inc
api POST /api/v1/backups '{"vm_name":"hd1","backup_type":"incremental"}'
is "$API_STATUS/$(jqb .driver)" "201/hub" "start an incremental"
B2=$(jqb .backup_id)
wait_job "$B2" "it completes by itself"
is "$(jq -r '[.status, (.disks[] | .backup_type + "/" + (.full_reason|tostring))] | join(" ")' <<< "$JOB")" \
   "completed incremental/null incremental/null" "both disks are incrementals, no fallback"
is "$(jq -r '[.disks[].previous_change_id] | join(" ")' <<< "$JOB")" "$C0 $C1" \
   "each continues from the full's change id"
D0=$(jq -r '.disks[0].change_id' <<< "$JOB"); D1=$(jq -r '.disks[1].change_id' <<< "$JOB")
compare_restore "$B2" 0 "$T/inc-0.qcow2" "disk 0 restores as the source was at the incremental"
compare_restore "$B2" 1 "$T/inc-1.qcow2" "disk 1 restores as the source was at the incremental"
compare_restore "$B1" 0 "$T/full-0.qcow2" "the full still restores as before"

# --- A source goes missing ---------------------------------------------------
src_write 0 0x14 10M 1M
mv "$T/src1.qcow2" "$T/away.qcow2"
api POST /api/v1/backups '{"vm_name":"hd1","backup_type":"incremental"}'
B3=$(jqb .backup_id)
wait_job "$B3" "the job ends by itself"
is "$(jq -r .status <<< "$JOB")" failed "the job failed"
like "$(jq -r '.disks[1].error' <<< "$JOB")" "src1\.qcow2" "disk 1's error names the missing source"
mv "$T/away.qcow2" "$T/src1.qcow2"
save_sources after
api POST /api/v1/backups '{"vm_name":"hd1","backup_type":"incremental"}'
B4=$(jqb .backup_id)
wait_job "$B4" "the next backup completes"
is "$(jq -r '[.status, (.disks[] | .backup_type + "/" + .parent_backup_id + "/" + (.full_reason|tostring))] | join(" ")' <<< "$JOB")" \
   "completed incremental/$B2/null incremental/$B2/null" "it builds on the last good backup"
is "$(jq -r '[.disks[].previous_change_id] | join(" ")' <<< "$JOB")" "$D0 $D1" \
   "from its change ids"
compare_restore "$B4" 0 "$T/after-0.qcow2" "disk 0 restores right after the failure"
compare_restore "$B4" 1 "$T/after-1.qcow2" "disk 1 restores right after the failure"

# --- Partial sources and bad sources ----------------------------------------
api PUT /api/v1/vms/hd2 "$(jq -cn --arg a "$T/src0.qcow2" \
  '{disks:[{disk_index:0,size_bytes:1048576,source:$a},{disk_index:1,size_bytes:1048576}]}')"
before=$(catalog_counts)
api POST /api/v1/backups '{"vm_name":"hd2","backup_type":"full"}'
is_error 400 invalid_request "some disks with a source, some without: 400"
like "$(jqb .error.message)" "source" "the message says why"
is "$(catalog_counts)" "$before" "and nothing was recorded"

# --- The hub dies half-way, and finishes the job after its restart ----------
src_write 0 0x15 20M 2M
src_write 1 0x23 50M 2M
save_sources crash1
restart_hub_crashing_at complete:recorded
api POST /api/v1/backups '{"vm_name":"hd1","backup_type":"incremental"}'
is "$API_STATUS" 201 "start a backup on a hub that dies after recording its first disk"
B5=$(jqb .backup_id)
wait_hub_crashed complete:recorded
is "$(sql "SELECT status FROM backup_jobs WHERE id='$B5'")" running "the job was left running"
start_hub
wait_job "$B5" "after the restart the job finishes by itself"
is "$(jq -r .status <<< "$JOB")" completed "completed"
compare_restore "$B5" 0 "$T/crash1-0.qcow2" "disk 0 restores right"
compare_restore "$B5" 1 "$T/crash1-1.qcow2" "disk 1 restores right"

# A SIGKILL from outside right after the start, wherever the copy is.
src_write 0 0x16 30M 4M
src_write 1 0x24 5M 4M
save_sources crash2
api POST /api/v1/backups '{"vm_name":"hd1","backup_type":"incremental"}'
B6=$(jqb .backup_id)
kill_hub
start_hub
wait_job "$B6" "after the restart that job finishes too"
is "$(jq -r .status <<< "$JOB")" completed "completed"
compare_restore "$B6" 0 "$T/crash2-0.qcow2" "disk 0 restores right"
compare_restore "$B6" 1 "$T/crash2-1.qcow2" "disk 1 restores right"

# SIGTERM during a backup: the hub stops its copies, exits cleanly and leaves
# the job for its next start.
src_write 1 0x25 12M 2M
save_sources term
api POST /api/v1/backups '{"vm_name":"hd1","backup_type":"incremental"}'
B9=$(jqb .backup_id)
stop_hub
like "$(sql "SELECT status FROM backup_jobs WHERE id='$B9'")" '^(running|completed)$' \
     "SIGTERM leaves the job running (unless it had completed)"
start_hub
wait_job "$B9" "after the restart it finishes"
is "$(jq -r .status <<< "$JOB")" completed "completed"
compare_restore "$B9" 1 "$T/term-1.qcow2" "disk 1 restores right"

# --- Cancel of a running hub-driven job -------------------------------------
api POST /api/v1/backups '{"vm_name":"hd1","backup_type":"full"}'
B7=$(jqb .backup_id)
api POST "/api/v1/backups/$B7/cancel"
like "$API_STATUS" '^(200|409)$' "cancel a hub-driven job (409 if it already ended)"
wait_job "$B7" "it ends"
like "$(jq -r .status <<< "$JOB")" '^(cancelled|completed)$' "cancelled (or completed before the cancel)"
ok "the hub is alive" hub_alive
src_write 0 0x17 0 1M
save_sources last
api POST /api/v1/backups '{"vm_name":"hd1","backup_type":"incremental"}'
B8=$(jqb .backup_id)
wait_job "$B8" "a backup after the cancel completes"
is "$(jq -r .status <<< "$JOB")" completed "completed"
compare_restore "$B8" 0 "$T/last-0.qcow2" "and restores right"

# --- A new full replaces the chain: its bitmaps alone stay in the sources ---
api POST /api/v1/backups '{"vm_name":"hd1","backup_type":"full"}'
B11=$(jqb .backup_id)
wait_job "$B11" "a full after the chain ends"
is "$(jq -r .status <<< "$JOB")" completed "completed"
for d in 0 1; do
  is "$(bitmaps_of "$T/src$d.qcow2")" "$B11" "source $d holds only the new full's bitmap"
done

# --- With NBD over TLS the workers use the hub's key ------------------------
hexkey () { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
PSK=$T/keys.psk
printf 'agent1:%s\n' "$(hexkey)" > "$PSK"
chmod 600 "$PSK"
stop_hub
start_hub --nbd-tls-psk-file "$PSK"
src_write 0 0x18 6M 1M
save_sources tls
api POST /api/v1/backups '{"vm_name":"hd1","backup_type":"incremental"}'
B10=$(jqb .backup_id)
like "$(jqb '.disks[0].nbd_uri')" "^nbds://job-$B10@" "the targets need TLS, with the job's identity"
wait_job "$B10" "a hub-driven backup over TLS ends"
is "$(jq -r .status <<< "$JOB")" completed "completed"
api POST /api/v1/restores "{\"backup_id\":\"$B10\",\"disk_index\":0}"
U=$(jqb .nbd_uri)
like "$U" "^nbds://restore-$(jqb .restore_id)@" "the restore export needs TLS too"
NBD_MASTER_PSK=$PSK
ok "nbdcopy reads it with the operator's key" nbdcopy "$(master_keyed "$U")" "$T/tls-out.raw"
ok "as the source was" qemu-img compare -q -U -f qcow2 -F raw "$T/tls-0.qcow2" "$T/tls-out.raw"
nok "not without it" nbdinfo --size "$U"

done_testing
