#!/usr/bin/env bash
# test-policies.sh - backup policies through the API: create, replace, list,
# get and delete them; schedules and retention stored as given; VMs take a
# policy through their inventory record, with the rules that tie the two (a
# policy in use cannot go, a repository a policy names cannot go, a VM
# without sources cannot take a scheduled policy, nor can its policy gain a
# schedule); protected backups; manual prunes that keep protected points; the
# automatic prune after every completed backup of a VM whose policy has
# retention, for agent-driven and hub-driven backups; and the tasks that
# report the prunes.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl sqlite3

SIZE=$((16 * MiB))
start_hub
P=/api/v1/policies
V=/api/v1/vms
H=http://127.0.0.1:$HUB_PORT/api/v1

# get PATH [JQ-OPTION...] FILTER: jq -r FILTER on GET PATH, leaving
# API_STATUS/API_BODY alone (so that wait_for can poll it).
get ()
{
  curl -s "$H$1" | jq -r "${@:2}"
}

# points VM: the VM's completed backups, newest first, on one line.
points ()
{
  get "/backups?vm_name=$(urlencode "$1")&status=completed" '[.backups[].backup_id] | join(" ")'
}

# task_removing CTX BID: the id of the prune task of context CTX that
# removes backup BID (nothing when there is none yet).
task_removing ()
{
  get /tasks "[.tasks[] | select(.context_id == \"$1\" and ((.result.remove // []) | index(\"$2\")))][0].task_id // empty"
}

# wait_prune CTX BID DESC: wait for the task that removes BID to appear and
# to end; two tests (it appears, it completes).  Sets TID.
wait_prune ()
{
  TID=
  if wait_for 60 eval "[ -n \"\$(task_removing '$1' '$2')\" ]"; then
    TID=$(task_removing "$1" "$2")
    pass "$3: a prune task removes $2 ($TID)"
  else
    fail "$3: a prune task removes $2" "  tasks: $(get /tasks -c .)"
    return
  fi
  if wait_for 120 task_ended "$TID"; then
    is "$(get "/tasks/$TID" .status)" completed "$3: the task completes"
  else
    fail "$3: the task ends" "  task: $(get "/tasks/$TID" -c .)"
  fi
}

# agent_point VM TYPE: an agent-driven backup of a one-disk VM, written and
# completed; sets BID (and CTX).
agent_point ()
{
  start_backup "$1" "$2"
  nbd_write "${NBD_URI[0]}" "0x$((RANDOM % 80 + 10))" "$(( (RANDOM % 8) * MiB ))" 64k > /dev/null ||
    fail "write into $BID"
  complete_disk "$BID" 0 "C-$BID" 65536
}

# norm: the policy object without its times, keys sorted, on one line.
norm ()
{
  jqb -cS 'del(.created_at, .updated_at)'
}

# --- CRUD -----------------------------------------------------------------
api PUT $P/nightly '{"schedule":"30 1 * * *","retention":{"keep_last":3,"keep_daily":7,"keep_weekly":4}}'
is "$API_STATUS" 201 "PUT a new policy: 201"
is "$(norm)" '{"name":"nightly","repository_id":null,"retention":{"keep_daily":7,"keep_last":3,"keep_weekly":4},"schedule":"30 1 * * *","verify":{"after_backup":false,"audit_percent":null,"every_days":null}}' \
   "the answer is the policy, absent rules left out"
like "$(jqb .created_at)" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$' "created_at is a UTC time"
CREATED=$(jqb .created_at)
api GET $P/nightly
is "$API_STATUS/$(norm)" '200/{"name":"nightly","repository_id":null,"retention":{"keep_daily":7,"keep_last":3,"keep_weekly":4},"schedule":"30 1 * * *","verify":{"after_backup":false,"audit_percent":null,"every_days":null}}' \
   "GET gives it back"
api PUT $P/nightly '{"schedule":"@daily","retention":{"keep_last":0,"keep_hourly":1,"keep_daily":2,"keep_weekly":3,"keep_monthly":4,"keep_yearly":100000}}'
is "$API_STATUS" 200 "PUT it again: 200 (replaced)"
is "$(norm)" '{"name":"nightly","repository_id":null,"retention":{"keep_daily":2,"keep_hourly":1,"keep_last":0,"keep_monthly":4,"keep_weekly":3,"keep_yearly":100000},"schedule":"@daily","verify":{"after_backup":false,"audit_percent":null,"every_days":null}}' \
   "every rule round-trips, 0 and 100000 included; @daily is stored as given"
is "$(jqb .created_at)" "$CREATED" "created_at stays"
api PUT $P/nightly '{"schedule":"@daily","retention":null}'
is "$API_STATUS/$(jqb -c .retention)" "200/null" '"retention":null: no retention'
api PUT $P/weekly '{"retention":{}}'
is "$API_STATUS/$(jqb -c .retention)/$(jqb .schedule)" "201/{}/null" 'retention {} (no rule: keeps everything) is kept apart from null'
api PUT $P/a-empty '{}'
is "$API_STATUS/$(norm)" '201/{"name":"a-empty","repository_id":null,"retention":null,"schedule":null,"verify":{"after_backup":false,"audit_percent":null,"every_days":null}}' \
   "a policy with nothing in it"
# The verify settings: each off when null or absent; bad ones are a 400
# that changes nothing.
api PUT $P/checked '{"verify":{"after_backup":true,"every_days":30,"audit_percent":5}}'
is "$API_STATUS/$(jqb -cS .verify)" '201/{"after_backup":true,"audit_percent":5,"every_days":30}' \
   "a policy with verify settings"
api GET $P/checked
is "$(jqb -cS .verify)" '{"after_backup":true,"audit_percent":5,"every_days":30}' "GET gives them back"
api PUT $P/checked '{"verify":{"every_days":3650,"audit_percent":null}}'
is "$API_STATUS/$(jqb -cS .verify)" '200/{"after_backup":false,"audit_percent":null,"every_days":3650}' \
   "absent and null settings are off; 3650 days is accepted"
for bad in '{"every_days":0}' '{"every_days":3651}' '{"audit_percent":0}' '{"audit_percent":101}' \
           '{"after_backup":1}' '{"every_days":"7"}' '{"every_day":7}' '[]' 'true'; do
  api PUT $P/checked "{\"verify\":$bad}"
  is_error 400 invalid_request "verify $bad: 400"
  like "$(jqb .error.message)" "verify" "the message names verify: $(jqb .error.message)"
done
api GET $P/checked
is "$(jqb -cS .verify)" '{"after_backup":false,"audit_percent":null,"every_days":3650}' \
   "and the policy is as it was"
api PUT $P/checked '{"verify":null}'
is "$API_STATUS/$(jqb -cS .verify)" '200/{"after_backup":false,"audit_percent":null,"every_days":null}' \
   '"verify":null: all off'
api DELETE $P/checked
is "$API_STATUS" 204 "delete it"

api GET $P
is "$API_STATUS/$(jqb '[.policies[].name] | join(",")')" "200/a-empty,nightly,weekly" "GET /policies lists them by name"
is "$(jqb -c '[.policies[] | select(.name == "weekly") | .retention]')" "[{}]" "the list carries each policy's fields"

for sched in '* * * * *' '*/15 * * * *' '0 22 * * 1-5' '5,35 1-5/2 1,15 * *' '0 0 1 jan *' \
             '0 12 * * sun' '30 3 * * 7' '0 0 29 2 *' '@hourly' '@weekly' '@monthly' '@yearly'; do
  api PUT $P/weekly "$(jq -cn --arg s "$sched" '{schedule:$s, retention:{}}')"
  is "$API_STATUS/$(jqb .schedule)" "200/$sched" "schedule '$sched' is accepted and stored as given"
done
api GET $P/weekly
is "$(jqb .schedule)" "@yearly" "GET shows the last one"

api DELETE $P/a-empty
is "$API_STATUS" 204 "DELETE a policy: 204"
api GET $P/a-empty
is_error 404 not_found "GET it afterwards: 404"
api DELETE $P/a-empty
is_error 404 not_found "DELETE it again: 404"
api GET $P
is "$(jqb '[.policies[].name] | join(",")')" "nightly,weekly" "the list no longer has it"

# --- A policy names a repository ---------------------------------------------
api POST /api/v1/repositories "{\"id\":\"r2\",\"name\":\"second\",\"type\":\"local\",\"path\":\"$T/r2\"}"
is "$API_STATUS" 201 "a second repository"
api PUT $P/to-r2 '{"repository_id":"r2","retention":{"keep_last":1}}'
is "$API_STATUS/$(jqb .repository_id)" "201/r2" "a policy naming it"
api DELETE /api/v1/repositories/r2
is_error 409 conflict "the repository a policy names cannot be deleted: 409"
like "$(jqb .error.message)" "to-r2|polic" "the message says it is a policy's"
api GET /api/v1/repositories/r2
is "$API_STATUS" 200 "the repository is still there"
api DELETE $P/to-r2
is "$API_STATUS" 204 "delete the policy"
api DELETE /api/v1/repositories/r2
is "$API_STATUS" 204 "then the repository can go"

# --- VMs take policies ------------------------------------------------------
put_vm pv1 $SIZE
api PUT $P/keep2 '{"retention":{"keep_last":2}}'
is "$API_STATUS" 201 "a policy with retention and no schedule"
api PUT $V/pv1 "$(vm_json $SIZE | jq -c '. + {policy:"keep2"}')"
is "$API_STATUS/$(jqb .policy)/$(jqb .next_run_at)" "200/keep2/null" \
   "a VM without sources takes a policy without schedule; no next run"
api GET $V/pv1
is "$(jqb '[.policy, .next_run_at, .last_run_at, .last_skipped_at] | map(tostring) | join(" ")')" \
   "keep2 null null null" "GET /vms/pv1 shows the policy and the scheduler's fields"
api GET $V
is "$(jqb '.vms[] | select(.vm_name == "pv1") | .policy')" keep2 "and so does the list"

vms_before=$(get /vms -cS .)
pols_before=$(get /policies -cS .)
api DELETE $P/keep2
is_error 409 conflict "DELETE a policy a VM uses: 409"
like "$(jqb .error.message)" "pv1" "the message names the VM"
is "$(get /policies -cS .)|$(get /vms -cS .)" "$pols_before|$vms_before" "policies and VMs are as they were"

api PUT $V/pv1 "$(vm_json $SIZE | jq -c '. + {policy:"nope"}')"
is_error 400 invalid_request "PUT a VM with an unknown policy: 400"
like "$(jqb .error.message)" "nope" "the message names the policy"
api PUT $V/pv1 "$(vm_json $SIZE | jq -c '. + {policy:"nightly"}')"
is_error 400 invalid_request "a VM without sources cannot take a policy with a schedule: 400"
like "$(jqb .error.message)" "source" "the message says the disks need a source"
api PUT $V/pvnew "$(vm_json $SIZE | jq -c '. + {policy:"nightly"}')"
is_error 400 invalid_request "nor can a new VM without sources"
api PUT $P/keep2 '{"schedule":"0 2 * * *","retention":{"keep_last":2}}'
is_error 400 invalid_request "a policy used by a VM without sources cannot gain a schedule: 400"
like "$(jqb .error.message)" "pv1" "the message names the VM"
is "$(get /policies -cS .)|$(get /vms -cS .)" "$pols_before|$vms_before" "nothing changed: no VM pvnew, pv1 and keep2 as they were"

# A VM with sources may take a scheduled policy: the scheduler gives it its
# next run.  (@daily: it does not come during this test, unless the test runs
# across midnight; the scheduler tests are test-schedule.sh.)
qemu-img create -q -f qcow2 "$T/hp1.qcow2" $SIZE
HP1_VM=$(jq -cn --arg a "$T/hp1.qcow2" --argjson s $SIZE '{disks:[{disk_index:0,size_bytes:$s,source:$a}]}')
api PUT $V/hp1 "$(jq -c '. + {policy:"nightly"}' <<< "$HP1_VM")"
is "$API_STATUS/$(jqb .policy)" "201/nightly" "a VM whose disks have sources takes a policy with a schedule"
ok "the scheduler gives it a next run" wait_for 30 eval '[ "$(get /vms/hp1 .next_run_at)" != null ]'
like "$(get /vms/hp1 .next_run_at)" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:00\.000Z$' \
     "next_run_at is a UTC time on a whole minute"
api PUT $V/hp1 "$HP1_VM"
is "$API_STATUS/$(jqb .policy)/$(jqb .next_run_at)" "200/null/null" "a PUT without policy drops it, and the next run"

# --- Protected backups -------------------------------------------------------
put_vm pr1 $SIZE
agent_point pr1 full; P1=$BID; PCTX=$CTX
agent_point pr1 incremental; P2=$BID
agent_point pr1 incremental; P3=$BID
agent_point pr1 incremental; P4=$BID
is "$(points pr1)" "$P4 $P3 $P2 $P1" "pr1 has four points"
# keep_last counts points, not seconds: make the four points one second's
# (created_at keeps milliseconds, and the listing's order stays).  A second
# already past, so that a backup started after them is always newer.
sec=$(date -u -d '2 seconds ago' +%Y-%m-%dT%H:%M:%S)
i=1
for b in "$P1" "$P2" "$P3" "$P4"; do
  sql_write "UPDATE backup_jobs SET created_at = '$sec.${i}00Z' WHERE id = '$b'"
  i=$((i + 1))
done
is "$(points pr1)" "$P4 $P3 $P2 $P1" "four points within one second, in the same order"
api POST "/api/v1/contexts/$PCTX/prune" '{"keep_last":2,"dry_run":true}'
is "$API_STATUS/$(jqb -c .keep)/$(jqb -c .remove)" "200/[\"$P4\",\"$P3\"]/[\"$P2\",\"$P1\"]" \
   "dry run keep_last 2 keeps the two newest points, though they share a second"
api GET "/api/v1/backups/$P3"
is "$(jqb .protected)" false "a backup is not protected at first"
api PATCH "/api/v1/backups/$P3" '{"protected":true}'
is "$API_STATUS/$(jqb .backup_id)/$(jqb .protected)/$(jqb .status)" "200/$P3/true/completed" \
   "PATCH {\"protected\":true}: 200, the backup, protected"
api GET "/api/v1/backups/$P3"
is "$(jqb .protected)" true "GET shows it protected"
api GET "/api/v1/backups?vm_name=pr1"
is "$(jqb '[.backups[] | "\(.backup_id)=\(.protected)"] | join(" ")')" \
   "$P4=false $P3=true $P2=false $P1=false" "the listing shows which one is protected"
api PATCH "/api/v1/backups/$P3" '{"protected":true}'
is "$API_STATUS/$(jqb .protected)" "200/true" "protecting it again is harmless"

start_backup pr1 incremental
RUN=$BID
api PATCH "/api/v1/backups/$RUN" '{"protected":true}'
is_error 409 conflict "PATCH a running backup: 409"
api GET "/api/v1/backups/$RUN"
is "$(jqb .status)/$(jqb .protected)" "running/false" "it is still running, not protected"
# Dry runs: the protected point is kept and counts toward no rule.
listing_before=$(get "/backups?vm_name=pr1" -cS .)
api POST "/api/v1/contexts/$PCTX/prune" '{"keep_last":2,"dry_run":true}'
is "$API_STATUS/$(jqb -c .keep)/$(jqb -c .remove)" "200/[\"$P4\",\"$P3\",\"$P2\"]/[\"$P1\"]" \
   "dry run keep_last 2: the protected point stays and does not count"
is "$(jqb -c .task_id)" null "a dry run has no task (task_id absent or null)"
api POST "/api/v1/contexts/$PCTX/prune" '{"keep_last":1,"dry_run":true}'
is "$API_STATUS/$(jqb -c .keep)/$(jqb -c .remove)" "200/[\"$P4\",\"$P3\"]/[\"$P2\",\"$P1\"]" \
   "dry run keep_last 1: the newest and the protected point stay"
is "$(get "/backups?vm_name=pr1" -cS .)" "$listing_before" "the dry runs changed nothing"

# The prune's task waits while the context's backup RUN runs, and says so.
api POST "/api/v1/contexts/$PCTX/prune" '{"keep_last":1}'
is "$API_STATUS/$(jqb -c .keep)/$(jqb -c .remove)" "202/[\"$P4\",\"$P3\"]/[\"$P2\",\"$P1\"]" \
   "prune keep_last 1: 202, keep and remove"
T1=$(jqb .task_id)
like "$T1" '^[A-Za-z0-9._-]{1,128}$' "with a task id"
is "$(points pr1)" "$P4 $P3" "the points it removes are no longer listed completed"
api GET "/api/v1/backups/$P1"
is "$API_STATUS/$(jqb .status)" "200/removing" "they are removing"
ok "the task says it waits for the running backup" \
   wait_for 30 eval "get /tasks/$T1 .message | grep -q '$RUN'"
api GET "/api/v1/tasks/$T1"
is "$(jqb '[.status, .progress, .completed_at] | map(tostring) | join(" ")')" "running 0 null" \
   "it is running, at progress 0, not completed"
api GET "/api/v1/tasks?status=running"
is "$API_STATUS/$(jqb '[.tasks[].task_id] | join(" ")')" "200/$T1" "GET /tasks?status=running lists it alone"
api GET "/api/v1/tasks?status=completed"
is "$API_STATUS/$(jqb "[.tasks[] | select(.task_id == \"$T1\")] | length")" "200/0" "GET /tasks?status=completed does not"
complete_disk "$RUN" 0 "C-$RUN" 1
ok "once the backup is completed, the task ends" wait_for 120 task_ended "$T1"
is "$(points pr1)" "$RUN $P4 $P3" "the new backup, and the newest and the protected point of the prune, are left"
api GET "/api/v1/backups/$P3"
is "$(jqb .status)/$(jqb .protected)" "completed/true" "the protected point is still protected"
for b in "$P1" "$P2"; do
  api GET "/api/v1/backups/$b"
  is_error 404 not_found "the removed point $b is gone"
done
api PATCH "/api/v1/backups/$P3" '{"protected":false}'
is "$API_STATUS/$(jqb .protected)" "200/false" "PATCH {\"protected\":false} unprotects it"
start_backup pr1 incremental
api POST "/api/v1/backups/$BID/cancel"
is "$API_STATUS" 200 "cancel a backup"
api PATCH "/api/v1/backups/$BID" '{"protected":true}'
is_error 409 conflict "PATCH a cancelled backup: 409"

# A prune without rules follows the policy: retention {} keeps everything.
api PUT $P/keepall '{"retention":{}}'
api PUT $V/pr1 "$(vm_json $SIZE | jq -c '. + {policy:"keepall"}')"
is "$API_STATUS/$(jqb .policy)" "200/keepall" "pr1 takes a policy whose retention is {}"
api POST "/api/v1/contexts/$PCTX/prune" '{}'
is "$API_STATUS/$(jqb -c .remove)/$(jqb -c .task_id)" "200/[]/null" "a prune without rules keeps every point"
api PUT $V/pr1 "$(vm_json $SIZE)"

# --- Tasks --------------------------------------------------------------------
api GET "/api/v1/tasks/$T1"
is "$API_STATUS" 200 "GET /tasks/{id}"
is "$(jqb '[.task_id, .kind, .context_id, .status, .progress, (.steps_done == .steps_total and .steps_total > 0), .error] | map(tostring) | join(" ")')" \
   "$T1 prune $PCTX completed 1 true null" "its id, kind, context, status, progress, steps and no error"
is "$(jqb -c '[.result.context_id, .result.keep, .result.remove]')" "[\"$PCTX\",[\"$P4\",\"$P3\"],[\"$P2\",\"$P1\"]]" \
   "its result: what it kept and removed"
is "$(jqb '.result.bytes_freed | type == "number" and . >= 0')" true "result.bytes_freed is a non-negative number"
for f in created_at updated_at completed_at; do
  like "$(jqb .$f)" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$' "its $f is a UTC time"
done
is "$(jqb '.created_at <= .updated_at and .created_at <= .completed_at')" true "... in order"
for s in completed running failed; do
  api GET "/api/v1/tasks?status=$s"
  has=$(jqb "[.tasks[] | select(.task_id == \"$T1\")] | length")
  other=$(jqb "[.tasks[] | select(.status != \"$s\")] | length")
  is "$API_STATUS/$has/$other" "200/$([ $s = completed ] && echo 1 || echo 0)/0" \
     "GET /tasks?status=$s lists only $s tasks ($([ $s = completed ] && echo with || echo without) it)"
done
api GET /api/v1/tasks
is "$API_STATUS/$(jqb "[.tasks[] | select(.task_id == \"$T1\")] | length")" "200/1" "GET /tasks lists it"

# --- Automatic prune after agent-driven backups -----------------------------
put_vm ap1 $SIZE
api PUT $V/ap1 "$(vm_json $SIZE | jq -c '. + {policy:"keep2"}')"
is "$API_STATUS/$(jqb .policy)" "200/keep2" "ap1 uses keep2 (keep_last 2)"
agent_point ap1 full; A1=$BID; ACTX=$CTX
api PATCH "/api/v1/backups/$A1" '{"protected":true}'
is "$API_STATUS" 200 "protect ap1's first point"
agent_point ap1 incremental; A2=$BID
agent_point ap1 incremental; A3=$BID
is "$(points ap1)" "$A3 $A2 $A1" "three points: keep_last 2 and a protected one, nothing to remove"
agent_point ap1 incremental; A4=$BID
wait_prune "$ACTX" "$A2" "after ap1's fourth backup"
is "$(points ap1)" "$A4 $A3 $A1" "two points are left, and the protected one"
is "$(get "/tasks/$TID" -c .result.remove)" "[\"$A2\"]" "the task removed only the point that keep_last let go"
api GET "/api/v1/backups/$A2"
is_error 404 not_found "that point is gone"

# --- Automatic prune after hub-driven backups -------------------------------
api PUT $V/hp1 "$(jq -c '. + {policy:"keep2"}' <<< "$HP1_VM")"
is "$API_STATUS/$(jqb .policy)" "200/keep2" "hp1 (sources) uses keep2"

# hub_point TYPE: a hub-driven backup of hp1 after a write into its source,
# which is saved as the point's reference; waits for the job's end.
hub_point ()
{
  qemu-io -f qcow2 -c "write -P 0x$((RANDOM % 80 + 10)) $(( (RANDOM % 8) * MiB )) 1M" "$T/hp1.qcow2" > /dev/null ||
    fail "write into hp1's source"
  cp "$T/hp1.qcow2" "$T/ref-next.qcow2"
  api POST /api/v1/backups "{\"vm_name\":\"hp1\",\"backup_type\":\"$1\"}"
  is "$API_STATUS/$(jqb .driver)" "201/hub" "a hub-driven $1 of hp1 starts"
  BID=$(jqb .backup_id)
  CTX=$(jqb .context_id)
  mv "$T/ref-next.qcow2" "$T/ref-$BID.qcow2"
  ok "it ends" wait_for 120 job_ended "$BID"
  is "$(job_status "$BID")" completed "it completed"
}

# restores_as BID DESC: a restore export of disk 0 reads as the source did
# when BID was taken.
restores_as ()
{
  local rid
  api POST /api/v1/restores "{\"backup_id\":\"$1\",\"disk_index\":0}"
  is "$API_STATUS" 201 "$2: a restore export of $1"
  rid=$(jqb .restore_id)
  ok "$2: $1 reads as its source did" qimg compare -q -U -f qcow2 -F raw "$T/ref-$1.qcow2" "$(answer_uri)"
  api DELETE "/api/v1/restores/$rid"
}

hub_point full; H1=$BID; HCTX=$CTX
hub_point incremental; H2=$BID
is "$(points hp1)" "$H2 $H1" "two points, nothing to prune"
hub_point incremental; H3=$BID
wait_prune "$HCTX" "$H1" "after hp1's third backup"
is "$(points hp1)" "$H3 $H2" "the oldest point went"
hub_point incremental; H4=$BID
wait_prune "$HCTX" "$H2" "after hp1's fourth backup"
is "$(points hp1)" "$H4 $H3" "two points are left"
is "$(cd "$DATA/repository/$HCTX" && find . -name '*.qcow2' -printf '%f\n' | sort | paste -sd ' ')" \
   "$(printf '%s\n' "$H3.qcow2" "$H4.qcow2" | sort | paste -sd ' ')" "the context's folder holds just their files"
restores_as "$H3" "after the automatic prunes"
restores_as "$H4" "after the automatic prunes"

# The policy in use by hp1 (sources) may gain a schedule; then the VM has a
# next run.  Detach before the end, so that nothing runs while the hub stops.
api PUT $P/keep2 '{"schedule":"@yearly","retention":{"keep_last":2}}'
is_error 400 invalid_request "keep2 still cannot gain a schedule: ap1 and pv1 have no sources"
api PUT $V/ap1 "$(vm_json $SIZE)"
api PUT $V/pv1 "$(vm_json $SIZE)"
api PUT $P/keep2 '{"schedule":"@yearly","retention":{"keep_last":2}}'
is "$API_STATUS/$(jqb .schedule)" "200/@yearly" "once only hp1 uses it, it can"
ok "hp1 gets a next run" wait_for 30 eval '[ "$(get /vms/hp1 .next_run_at)" != null ]'

done_testing
