#!/usr/bin/env bash
# test-lifecycle-bad-input.sh - bad input on every route of the backup
# lifecycle: policies (names, bodies, schedules, retention, repositories),
# POST /contexts/{id}/prune, PATCH /backups/{id}, GET /tasks, and the
# "policy" of PUT /vms.  Each gets its 4xx with a JSON error body that says
# what is wrong, and changes neither the catalog nor the repository.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl sqlite3

SIZE=$((16 * MiB))
start_hub
P=/api/v1/policies
B=/api/v1/backups
V=/api/v1/vms

# The scene: bl1 (no policy) with a prune task behind it, two completed
# points and a running backup; policies pol1 (a schedule and retention, used
# by nobody) and pol2 (retention, used by bl3, which has no sources).
put_vm bl1 $SIZE
for t in full incremental incremental; do
  start_backup bl1 $t
  complete_disk "$BID" 0 "C-$BID" 1
done
CTX1=$CTX
DONE=$BID
api POST "/api/v1/contexts/$CTX1/prune" '{"keep_last":2}'
is "$API_STATUS" 202 "a prune of bl1's context"
TASK=$(jqb .task_id)
ok "its task ends" wait_for 120 task_ended "$TASK"
is "$(task_status "$TASK")" completed "it completed"
start_backup bl1 incremental
RUN=$BID
api PUT $P/pol1 '{"schedule":"@daily","retention":{"keep_last":2,"keep_daily":7}}'
is "$API_STATUS" 201 "policy pol1"
api PUT $P/pol2 '{"retention":{"keep_last":1}}'
is "$API_STATUS" 201 "policy pol2"
api PUT $V/bl3 "$(vm_json $SIZE | jq -c '. + {policy:"pol2"}')"
is "$API_STATUS/$(jqb .policy)" "201/pol2" "bl3 uses pol2"

state_save
ok "the catalog dump has the policies and the task" \
   eval "grep -q '^pol1|' '$T/state.before' && grep -q '^$TASK|' '$T/state.before'"

# says REGEX DESC: the last error's message matches.
says ()
{
  like "$(jqb .error.message)" "$1" "... and the message says so ($2)"
}

# --- Policy names ----------------------------------------------------------
long256=$(printf 'a%.0s' $(seq 1 256))
for name in "../etc" "a/b" ".." "." "a\\b" $'a\nb' $'a\tb' $'a\x01b' $'a\x7fb' $'a\xc2\x85b' \
            " lead" "trail " "$long256"; do
  shown=$(printf '%q' "$name" | head -c 40)
  enc=$(urlencode "$name")
  bad 400 invalid_request "PUT policy named $shown"    PUT "$P/$enc" '{"retention":{"keep_last":1}}'
  bad 400 invalid_request "GET policy named $shown"    GET "$P/$enc"
  bad 400 invalid_request "DELETE policy named $shown" DELETE "$P/$enc"
done
bad 400 invalid_request "PUT policy ..%2F..%2Fx"              PUT "$P/..%2F..%2Fx" '{}'
bad 400 invalid_request "PUT policy .."                       PUT "$P/.." '{}'
says 'policy name' "which name is wrong"
bad 400 invalid_request "PUT policy with an encoded NUL"      PUT "$P/a%00b" '{}'
bad 400 invalid_request "PUT policy with invalid UTF-8"       PUT "$P/a%FFb" '{}'
bad 404 not_found "GET an unknown policy"                     GET "$P/nope"
bad 404 not_found "DELETE an unknown policy"                  DELETE "$P/nope"

# --- Policy bodies -----------------------------------------------------------
bad 400 invalid_request "malformed JSON"                      PUT $P/p3 '{"schedule":'
bad 400 invalid_request "trailing garbage"                    PUT $P/p3 '{"schedule":"@daily"} x'
bad 400 invalid_request "array body"                          PUT $P/p3 '[{"schedule":"@daily"}]'
bad 400 invalid_request "string body"                         PUT $P/p3 '"@daily"'
bad 400 invalid_request "number body"                         PUT $P/p3 '42'
bad 400 invalid_request "null body"                           PUT $P/p3 'null'
bad 400 invalid_request "duplicate keys"                      PUT $P/p3 '{"schedule":"@daily","schedule":"@hourly"}'
bad 400 invalid_request "unknown field"                       PUT $P/p3 '{"schedule":"@daily","timezone":"UTC"}'
says 'timezone' "names the field"
bad 400 invalid_request "a rule outside retention"            PUT $P/p3 '{"keep_last":3}'
bad 400 invalid_request "unknown rule in retention"           PUT $P/p3 '{"retention":{"keep_lats":3}}'
says 'keep_lats' "names the rule"
bad 400 invalid_request "schedule: 5"                         PUT $P/p3 '{"schedule":5}'
bad 400 invalid_request "schedule: true"                      PUT $P/p3 '{"schedule":true}'
bad 400 invalid_request "schedule: [\"@daily\"]"              PUT $P/p3 '{"schedule":["@daily"]}'
bad 400 invalid_request "repository_id: 5"                    PUT $P/p3 '{"repository_id":5}'
bad 400 invalid_request "retention: \"keep 3\""               PUT $P/p3 '{"retention":"keep 3"}'
bad 400 invalid_request "retention: [3]"                      PUT $P/p3 '{"retention":[3]}'
bad 400 invalid_request "retention: 3"                        PUT $P/p3 '{"retention":3}'
for v in '"3"' 1.5 1e3 true '[3]' '{}' -1 100001 2147483648 18446744073709551616 -9223372036854775809; do
  for rule in keep_last keep_daily keep_yearly; do
    bad 400 invalid_request "retention $rule: $v" PUT $P/p3 "{\"retention\":{\"$rule\":$v}}"
  done
done
bad 400 invalid_request "retention keep_yearly: 100001"       PUT $P/p3 '{"retention":{"keep_yearly":100001}}'
says 'keep_yearly' "names the rule"
bad 400 invalid_request "unknown repository_id"               PUT $P/p3 '{"repository_id":"nope","retention":{"keep_last":1}}'
says 'nope' "names the repository"
for id in '../x' 'a b' '' "$long256" 'a/b'; do
  bad 400 invalid_request "repository_id '$(printf '%q' "$id" | head -c 30)'" \
    PUT $P/p3 "$(jq -cn --arg r "$id" '{repository_id:$r}')"
done

# Schedules that are not 5-field cron expressions (or one of the @ words).
over=0$(printf ',0%.0s' $(seq 1 140))' * * * *'
for sched in '' ' ' '* * * *' '* * * * * *' '*' '60 * * * *' '* 24 * * *' '* * 0 * *' '* * 32 * *' \
             '* * * 0 *' '* * * 13 *' '* * * * 8' '-1 * * * *' '5-70 * * * *' '*/0 * * * *' \
             '1-5/0 * * * *' '*/ * * * *' '*/-1 * * * *' '1,,2 * * * *' '1, * * * *' ',1 * * * *' \
             '1- * * * *' 'a * * * *' '0x1 * * * *' '1.5 * * * *' '99999999999999999999 * * * *' \
             '*/99999999999999999999 * * * *' '* * * foo *' '* * * * funday' '* * * jan-foo *' \
             'junk' '@reboot' '@often' '@' '@daily *' "$over" $'0\x01 1 * * *'; do
  shown=$(printf '%q' "$sched" | head -c 40)
  bad 400 invalid_request "schedule $shown" PUT $P/p3 "$(jq -cn --arg s "$sched" '{schedule:$s}')"
  says 'schedule' "$shown: names the field"
done
bad 400 invalid_request "a bad schedule on an existing policy"  PUT $P/pol1 '{"schedule":"61 * * * *","retention":{"keep_last":2}}'

# A policy used by a VM without sources cannot gain a schedule; a used policy
# cannot go.
bad 400 invalid_request "pol2 (used by bl3, no sources) gains a schedule" PUT $P/pol2 '{"schedule":"@daily","retention":{"keep_last":1}}'
says 'bl3' "names the VM"
bad 409 conflict "DELETE pol2 while bl3 uses it"              DELETE $P/pol2
says 'bl3' "names the VM"

# --- The policy of a VM --------------------------------------------------------
D0="{\"disk_index\":0,\"size_bytes\":$SIZE}"
for v in 5 true '["pol1"]' '{"name":"pol2"}' '""' "\"$long256\"" '"nope"' '"../pol2"' '"pol1"'; do
  bad 400 invalid_request "PUT a VM with policy $(printf '%s' "$v" | head -c 30)" PUT $V/bl3 "{\"disks\":[$D0],\"policy\":$v}"
  bad 400 invalid_request "... and a new VM"                                    PUT $V/bl4 "{\"disks\":[$D0],\"policy\":$v}"
done
says 'source' "pol1 has a schedule and the disk no source"

# --- POST /contexts/{id}/prune -------------------------------------------------
C=/api/v1/contexts
for id in '..%2F..' '%2E%2E' 'a%2Fb' 'a%20b' 'a%00b' "$long256" 'x%5C..'; do
  bad 400 invalid_request "prune context $id"                 POST "$C/$id/prune" '{"keep_last":1}'
done
bad 404 not_found "prune an unknown context"                  POST "$C/ctx-nope/prune" '{"keep_last":1}'
bad 404 not_found "dry run on an unknown context"             POST "$C/ctx-nope/prune" '{"keep_last":1,"dry_run":true}'
for v in -1 100001 '"1"' 1.5 true null '[1]' 18446744073709551616; do
  [ "$v" = null ] && continue      # null is "no rule"
  bad 400 invalid_request "prune keep_last: $v"               POST "$C/$CTX1/prune" "{\"keep_last\":$v}"
  bad 400 invalid_request "prune keep_monthly: $v"            POST "$C/$CTX1/prune" "{\"keep_monthly\":$v,\"dry_run\":true}"
done
for v in '"yes"' 1 0 '"true"' '[]' '{}'; do
  bad 400 invalid_request "prune dry_run: $v"                 POST "$C/$CTX1/prune" "{\"keep_last\":1,\"dry_run\":$v}"
done
says 'dry_run' "names the field"
bad 400 invalid_request "prune with an unknown field"         POST "$C/$CTX1/prune" '{"keep_last":1,"force":true}'
bad 400 invalid_request "prune with rules inside retention"   POST "$C/$CTX1/prune" '{"retention":{"keep_last":1}}'
bad 400 invalid_request "prune with a misspelt rule"          POST "$C/$CTX1/prune" '{"keep_lats":1}'
bad 400 invalid_request "prune with malformed JSON"           POST "$C/$CTX1/prune" '{"keep_last":'
bad 400 invalid_request "prune with an array body"            POST "$C/$CTX1/prune" '[1]'
bad 400 invalid_request "prune with a number body"            POST "$C/$CTX1/prune" '1'
bad 400 invalid_request "prune with a query parameter"        POST "$C/$CTX1/prune?dry_run=true" '{"keep_last":1}'
bad 400 invalid_request "prune without rules (no body), VM without policy" POST "$C/$CTX1/prune"
says 'polic' "no rules and no policy"
bad 400 invalid_request "prune {} of a VM without policy"     POST "$C/$CTX1/prune" '{}'
bad 400 invalid_request "dry run without rules, VM without policy" POST "$C/$CTX1/prune" '{"dry_run":true}'
bad 400 invalid_request "dry_run false without rules"         POST "$C/$CTX1/prune" '{"dry_run":false}'

# --- PATCH /backups/{id} ----------------------------------------------------------
bad 400 invalid_request "PATCH without a body"                PATCH "$B/$DONE"
bad 400 invalid_request "PATCH {}"                            PATCH "$B/$DONE" '{}'
says 'protected' "names the field"
for v in null '"yes"' '"true"' 1 0 '[]' '{}'; do
  bad 400 invalid_request "PATCH protected: $v"               PATCH "$B/$DONE" "{\"protected\":$v}"
done
bad 400 invalid_request "PATCH with an unknown field"         PATCH "$B/$DONE" '{"protected":true,"pinned":true}'
bad 400 invalid_request "PATCH of another field only"         PATCH "$B/$DONE" '{"status":"failed"}'
bad 400 invalid_request "PATCH with malformed JSON"           PATCH "$B/$DONE" '{"protected":'
bad 400 invalid_request "PATCH with an array body"            PATCH "$B/$DONE" '[true]'
bad 400 invalid_request "PATCH with a query parameter"        PATCH "$B/$DONE?protected=true" '{"protected":true}'
for id in '..%2F..' '%2E%2E' 'a%2Fb' 'a%20b' 'a%00b' "$long256"; do
  bad 400 invalid_request "PATCH backup id $id"               PATCH "$B/$id" '{"protected":true}'
done
bad 404 not_found "PATCH an unknown backup"                   PATCH "$B/backup-nope-1" '{"protected":true}'
bad 409 conflict "PATCH a running backup"                     PATCH "$B/$RUN" '{"protected":true}'

# --- GET /tasks -------------------------------------------------------------------
for s in weird removing RUNNING '' 'running,completed'; do
  bad 400 invalid_request "GET /tasks?status=$s"              GET "/api/v1/tasks?status=$s"
done
says 'running' "lists the statuses"
bad 400 invalid_request "GET /tasks with an unknown parameter" GET "/api/v1/tasks?kind=prune"
bad 400 invalid_request "GET /tasks/{id} with a parameter"    GET "/api/v1/tasks/$TASK?verbose=1"
for id in '..%2F..' '%2E%2E' 'a%2Fb' 'a%20b' 'a%00b' "$long256" 'x%5C..'; do
  bad 400 invalid_request "GET task id $id"                   GET "/api/v1/tasks/$id"
done
bad 404 not_found "GET an unknown task"                       GET "/api/v1/tasks/task-prune-nope-1"

# --- Query parameters and methods on the new routes ------------------------------
bad 400 invalid_request "GET /policies with a parameter"      GET "$P?name=pol1"
bad 400 invalid_request "GET /policies/pol1 with a parameter" GET "$P/pol1?x=1"
bad 400 invalid_request "PUT /policies/p3 with a parameter"   PUT "$P/p3?x=1" '{}'
bad 400 invalid_request "DELETE /policies/pol1?force=true"    DELETE "$P/pol1?force=true"
bad 405 method_not_allowed "POST /policies"                   POST $P '{"name":"p3"}'
bad 405 method_not_allowed "PATCH /policies/pol1"             PATCH "$P/pol1" '{}'
bad 405 method_not_allowed "POST /tasks"                      POST /api/v1/tasks '{}'
bad 405 method_not_allowed "DELETE /tasks/{id}"               DELETE "/api/v1/tasks/$TASK"
bad 405 method_not_allowed "GET /contexts/{id}/prune"         GET "$C/$CTX1/prune"
bad 405 method_not_allowed "PUT /backups/{id}"                PUT "$B/$DONE" '{"protected":true}'

# --- After all that ------------------------------------------------------------------
ok "the hub process is alive" hub_alive
api GET /healthz
is "$API_STATUS/$(jqb .status)" "200/ok" "GET /healthz answers ok"
# Positive controls at the edges.
long255=$(printf 'p%.0s' $(seq 1 255))
max_sched='0'$(printf ',0%.0s' $(seq 1 121))' * * * *'
api PUT "$P/$long255" "$(jq -cn --arg s "$max_sched" '{schedule:$s, retention:{keep_last:0, keep_yearly:100000}}')"
is "$API_STATUS/$(jqb .schedule)" "201/$max_sched" "a 255-byte policy name with a ${#max_sched}-byte schedule and rules 0 and 100000 is accepted"
api DELETE "$P/$long255"
is "$API_STATUS" 204 "and deleted"
api PATCH "$B/$DONE" '{"protected":true}'
is "$API_STATUS/$(jqb .protected)" "200/true" "PATCH {\"protected\":true} of a completed backup works"
others=$(curl -s "http://127.0.0.1:$HUB_PORT$B?vm_name=bl1&status=completed" |
         jq -c "[.backups[].backup_id | select(. != \"$DONE\")]")
api POST "$C/$CTX1/prune" '{"keep_last":0,"dry_run":true}'
is "$API_STATUS/$(jqb -c .keep)/$(jqb -c .remove)" "200/[\"$DONE\"]/$others" "a dry run with keep_last 0 keeps the newest (and protected) point"
api POST "$B/$RUN/cancel"
is "$API_STATUS" 200 "the running backup is untouched and can be cancelled"

done_testing
