#!/usr/bin/env bash
# test-dashboard.sh - the web dashboard in Debian's chromium (headless,
# driven by playwright-core: tests/ops/dashboard.mjs), against a real hub
# with real backups: hub-driven chains from QCOW2 sources, a job failed by
# a source that went missing, an agent backup (strata backup) of a VM whose
# name holds markup, quotes and '&', and a slow (throttled) source for a
# backup started from the page.  Checks each page's content after its
# scripts ran, the restore, delete, verify and prune actions, the headers
# the static files carry, then the login form of a hub with a token.
# Screenshots land in $STRATA_BUILD/screenshots/ (make screenshots copies
# them to docs/screenshots/).

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-storage-daemon nbdinfo node jq curl
[ -x /usr/bin/chromium ] || skip_all "no /usr/bin/chromium (make ops-deps)"
STRATA_BUILD=${STRATA_BUILD:-$top/build}
STRATA_NPM=${STRATA_NPM:-$STRATA_BUILD/npm}
[ -f "$STRATA_NPM/node_modules/playwright-core/index.mjs" ] ||
  skip_all "no playwright-core in $STRATA_NPM (make npm-deps)"
export STRATA_BUILD STRATA_NPM
DASH=$(dirname "$0")/dashboard.mjs
SIZE=$((32 * MiB))

start_hub --workers 2
H=http://127.0.0.1:$HUB_PORT

# A VM the scheduler backs up from a source that is not there: its
# scheduled run fails, so it is overdue.  The schedule is every minute
# until that run, then yearly, so that no other run starts during the test.
LATE=late1
api PUT /api/v1/policies/sched '{"schedule":"* * * * *"}'
is "$API_STATUS" 201 "a policy that runs every minute"
api PUT /api/v1/vms/$LATE "$(jq -cn --arg s "$T/no-such.qcow2" --argjson n $SIZE \
  '{policy:"sched",disks:[{disk_index:0,size_bytes:$n,source:$s}]}')"
is "$API_STATUS" 201 "PUT VM $LATE with that policy"

# --- The files the hub serves ------------------------------------------------
hdr () { grep -i "^$1:" "$T/h" | cut -d: -f2- | tr -d '\r' | sed 's/^ //'; }
for f in / /index.html /app.js /style.css /favicon.svg; do
  code=$(curl -s -D "$T/h" -o "$T/b" -w '%{http_code}' "$H$f")
  is "$code" 200 "GET $f: 200 without a token"
  is "$(hdr Content-Security-Policy)" "default-src 'self'; frame-ancestors 'none'" "  with a strict CSP"
  is "$(hdr X-Content-Type-Options)/$(hdr Referrer-Policy)/$(hdr Cache-Control)" "nosniff/no-referrer/no-cache" \
     "  nosniff, no referrer, no-cache"
done
like "$(curl -s -I "$H/app.js" | grep -i '^content-type')" 'text/javascript' "app.js is served as JavaScript"
cmp -s "$T/b" "$top/src/web/static/favicon.svg"; is "$?" 0 "a file is served as it is in src/web/static"
is "$(curl -s -o /dev/null -w '%{http_code}' -I "$H/")" 200 "HEAD / answers 200"
is "$(curl -s -o "$T/b" -w '%{http_code}' "$H/nothing.js")/$(jq -r .error.code "$T/b")" 404/not_found \
   "an unknown file is the JSON 404"
is "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$H/index.html")" 405 "POST on a file: 405"
! grep -qE '<script>|<style|style=| on[a-z]+=' "$top/src/web/static/index.html"
is "$?" 0 "index.html has no inline script or style (the CSP holds)"
! grep -nE 'innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(' "$top/src/web/static/app.js"
is "$?" 0 "app.js never parses text as HTML or code"

# --- Backups for the pages ---------------------------------------------------
src_write () # FILE PATTERN OFFSET LENGTH
{
  qemu-io -f qcow2 -c "write -P $2 $3 $4" "$1" > /dev/null 2> "$T/qio.err" ||
    fail "write $2 at $3 into $1" "$(cat "$T/qio.err")"
}

# hub_vm NAME SOURCE: a VM whose one disk the hub backs up from SOURCE.
hub_vm ()
{
  api PUT "/api/v1/vms/$(urlencode "$1")" \
    "$(jq -cn --arg s "$2" --argjson n $SIZE '{disks:[{disk_index:0,size_bytes:$n,source:$s}]}')"
  like "$API_STATUS" '^20[01]$' "PUT VM $1 with a source"
}

# hub_backup VM TYPE: start a hub-driven backup and wait for it to end;
# sets BID.
hub_backup ()
{
  api POST /api/v1/backups "$(jq -cn --arg v "$1" --arg t "$2" '{vm_name:$v,backup_type:$t}')"
  BID=$(jqb .backup_id)
  is "$API_STATUS/$(jqb .driver)" 201/hub "start a $2 backup of $1"
  ok "  it ends" wait_for 120 job_ended "$BID"
}

WEB=web1
qemu-img create -q -f qcow2 "$T/web1.qcow2" $SIZE
src_write "$T/web1.qcow2" 0x11 0 6M
hub_vm $WEB "$T/web1.qcow2"
WEB_POINTS=()
for i in 1 2 3; do
  if [ $i = 3 ]; then          # an attempt that fails between two points
    mv "$T/web1.qcow2" "$T/web1.away"
    hub_backup $WEB incremental
    WEB_FAILED=$BID
    is "$(job_status "$BID")" failed "  it fails: its source is away"
    mv "$T/web1.away" "$T/web1.qcow2"
  fi
  hub_backup $WEB $([ $i = 1 ] && echo full || echo incremental)
  is "$(job_status "$BID")" completed "  completed"
  WEB_POINTS+=("$BID")
  cp "$T/web1.qcow2" "$T/web1-last.qcow2"     # the source as the newest point holds it
  src_write "$T/web1.qcow2" 0x2$i $((i * 4))M 1M
done

FAIL=fail1
qemu-img create -q -f qcow2 "$T/fail1.qcow2" $SIZE
src_write "$T/fail1.qcow2" 0x31 0 1M
hub_vm $FAIL "$T/fail1.qcow2"
hub_backup $FAIL full
rm -f "$T/fail1.qcow2"
hub_backup $FAIL incremental
FAIL_BACKUP=$BID
is "$(job_status "$BID")" failed "  a backup whose source is gone fails"
api GET "/api/v1/backups/$BID"
FAIL_ERROR=$(jqb '.disks[0].error // .error' | head -c 40)

# A name that would be markup if the page ever parsed it as HTML.
EVIL=$'<img src=x onerror=alert(1)> "q" & \'x\' <script>alert(2)<script>'
qemu-img create -q -f qcow2 "$T/evil.qcow2" $SIZE
src_write "$T/evil.qcow2" 0x41 0 2M
agent_ok "strata backup of a VM named with markup" backup --vm "$EVIL" --json "$T/evil.qcow2"
EVIL_BACKUP=$(jqa .backup_id)

DEL=del1
qemu-img create -q -f qcow2 "$T/del1.qcow2" $SIZE
DEL_IDS=()
for i in 1 2 3; do
  src_write "$T/del1.qcow2" 0x5$i $((i * 2))M 1M
  agent_ok "strata backup of $DEL ($i)" backup --vm $DEL --json "$T/del1.qcow2"
  DEL_IDS+=("$(jqa .backup_id)")
done
# An agent's job on top, cancelled: a delete of the full takes it along.
api POST /api/v1/backups '{"vm_name":"del1","backup_type":"incremental"}'
is "$API_STATUS/$(jqb .driver)" 201/agent "an agent's job of $DEL starts"
DEL_CANCELLED=$(jqb .backup_id)
api POST "/api/v1/backups/$DEL_CANCELLED/cancel"
is "$API_STATUS/$(jqb .status)" 200/cancelled "  and is cancelled"

SLOW=slow1
truncate -s $SIZE "$T/slow.raw"
dd if=/dev/urandom of="$T/slow.raw" bs=1M count=20 seek=4 conv=notrunc status=none
throttled_source "$T/slow.raw" "$T/slow.sock" $((3 * MiB))
hub_vm $SLOW "nbd+unix:///src?socket=$T/slow.sock"

late_failed () # the scheduler's backup of $LATE has failed
{
  curl -s "$H/api/v1/backups?vm_name=$LATE" | jq -e '.backups | any(.status == "failed")'
}
ok "the scheduler's run of $LATE fails (within a minute and a bit)" wait_for 90 late_failed
api PUT /api/v1/policies/sched '{"schedule":"@yearly"}'
is "$API_STATUS" 200 "then the policy runs yearly"

jq -n --arg hub "$H" --arg tmp "$T" --arg webLast "$T/web1-last.qcow2" --arg web $WEB --arg webFailed "$WEB_FAILED" --argjson webSize $SIZE --arg fail $FAIL --arg failBackup "$FAIL_BACKUP" \
   --arg failError "$FAIL_ERROR" --arg evil "$EVIL" --arg evilBackup "$EVIL_BACKUP" --arg slow $SLOW \
   --arg del $DEL --arg delFull "${DEL_IDS[0]}" --arg late $LATE \
   '{hub:$hub, tmp:$tmp, webLast:$webLast, web:$web, webFailed:$webFailed, webSize:$webSize, webPoints:$ARGS.positional[0:3], fail:$fail,
     failBackup:$failBackup, failError:$failError, evil:$evil, evilBackup:$evilBackup, slow:$slow,
     del:$del, delFull:$delFull, delDeps:$ARGS.positional[3:6], late:$late,
     vms:[$web,$fail,$evil,$slow,$del,$late]}' \
   --args "${WEB_POINTS[@]}" "${DEL_IDS[1]}" "${DEL_IDS[2]}" "$DEL_CANCELLED" > "$T/fixture.json"

# browser PHASE: run dashboard.mjs and turn its lines into TAP.
browser ()
{
  local kind desc why seen=0
  node "$DASH" "$1" "$T/fixture.json" > "$T/browser.out" 2> "$T/browser.err"
  is "$?" 0 "the browser script ($1) exits 0" || diag "$(tail -n 30 "$T/browser.err")"
  while IFS=$'\t' read -r kind desc why; do
    case $kind in
      PASS) pass "$desc"; seen=$((seen + 1)) ;;
      FAIL) fail "$desc" "  $why"; seen=$((seen + 1)) ;;
    esac
  done < "$T/browser.out"
  cmp_ok "$seen" '>' 10 "the browser ($1) checked the pages"
}

browser open
kill "$SRC_QSD_PID" 2>/dev/null
wait "$SRC_QSD_PID" 2>/dev/null

# --- The same hub with an API token ------------------------------------------
stop_hub
printf 'dash-%s\n' "$RANDOM$RANDOM" > "$T/token"
start_hub --api-token-file "$T/token"
is "$(curl -s -o /dev/null -w '%{http_code}' "$H/")" 200 "with a token, the page itself needs none"
is "$(curl -s -o /dev/null -w '%{http_code}' "$H/api/v1/contexts")" 401 "the API does"
jq --arg t "$(head -n 1 "$T/token")" '. + {token:$t}' "$T/fixture.json" > "$T/fx2" && mv "$T/fx2" "$T/fixture.json"
browser token
ls "$STRATA_BUILD"/screenshots/*.png > /dev/null 2>&1
is "$?" 0 "screenshots saved in $STRATA_BUILD/screenshots"

done_testing
