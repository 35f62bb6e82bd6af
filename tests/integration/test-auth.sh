#!/usr/bin/env bash
# test-auth.sh - with --api-token-file, every /api/v1 route needs
# "Authorization: Bearer <token>": no token or a wrong one is a 401 with a JSON
# error and changes nothing; the right one works; GET /healthz stays open.

source "$(dirname "$0")/../functions.sh"
requires qemu-img jq curl sqlite3 perl

SIZE=$((64 * MiB))
TOKEN=tok-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
echo "$TOKEN" > "$T/token"      # as "echo ... > file" writes it: with a newline
chmod 600 "$T/token"
start_hub --api-token-file "$T/token"

snapshot ()
{
  catalog_counts
  repo_listing "$DATA/repository"
}

api GET /healthz
is "$API_STATUS/$(jqb .status)" "200/ok" "GET /healthz needs no token"

# unauthorized DESC METHOD PATH [BODY]: 401 with a JSON error, for each of
# no token, a wrong one, a prefix of the right one, the right one with a
# suffix, and the right one in another scheme.
unauthorized ()
{
  local desc=$1 t
  shift
  for t in "" "wrong" "${TOKEN:0:10}" "${TOKEN}x" "Basic:$TOKEN" "bearer-lower:$TOKEN"; do
    case $t in
      "") API_TOKEN=; api "$@" ;;
      Basic:*) API_TOKEN=; _auth_raw "Authorization: Basic ${t#Basic:}" "$@" ;;
      bearer-lower:*) API_TOKEN=; _auth_raw "Authorization: Token ${t#bearer-lower:}" "$@" ;;
      *) API_TOKEN=$t; api "$@" ;;
    esac
    is_error 401 unauthorized "$desc, token '${t:0:16}': 401"
  done
  API_TOKEN=
}

# _auth_raw HEADER METHOD PATH [BODY]: a request with a given Authorization header.
_auth_raw ()
{
  local h=$1 m=$2 p=$3 args=()
  [ $# -ge 4 ] && args=(--data-binary "$4")
  API_STATUS=$(curl -s -o "$T/resp.body" -w '%{http_code}' -X "$m" -H "$h" "${args[@]}" "http://127.0.0.1:$HUB_PORT$p")
  API_BODY=$(cat "$T/resp.body")
  API_REQ="$m $p ($h)"
}

before=$(snapshot)
unauthorized "GET /api/v1/repositories"          GET /api/v1/repositories
unauthorized "PUT /api/v1/vms/au1"               PUT /api/v1/vms/au1 "$(vm_json $SIZE)"
unauthorized "POST /api/v1/backups"              POST /api/v1/backups "{\"vm_name\":\"au1\",\"backup_type\":\"full\",\"disks\":[{\"disk_index\":0,\"size_bytes\":$SIZE}]}"
unauthorized "POST /api/v1/repositories"         POST /api/v1/repositories "{\"name\":\"r2\",\"type\":\"local\",\"path\":\"$T/r2\"}"
unauthorized "an unknown /api/v1 route"          GET /api/v1/nope
is "$(snapshot)" "$before" "the refused requests changed nothing"
ok "no repository folder was made" test ! -e "$T/r2"

# The right token.
API_TOKEN=$TOKEN
api GET /api/v1/repositories
is "$API_STATUS" 200 "GET /api/v1/repositories with the right Bearer token: 200"
is "$(jqb '[.repositories[].id] | join(",")')" default "it lists the default repository"
api PUT /api/v1/vms/au1 "$(vm_json $SIZE)"
is "$API_STATUS" 201 "PUT a VM with the token: 201"
start_backup au1 full
write_ok "${NBD_URI[0]}" 0x11 0 1M
complete_disk "$BID" 0 AU0 1
is "$(jqb .job_status)" completed "a whole backup works with the token"

# The scheme is case-insensitive (RFC 9110), and blanks after the token are
# not part of the header's value.
for h in "bearer $TOKEN" "BEARER $TOKEN" "bEaReR $TOKEN" "Bearer $TOKEN " "Bearer   $TOKEN"; do
  API_TOKEN=
  _auth_raw "Authorization: $h" GET /api/v1/repositories
  is "$API_STATUS" 200 "'Authorization: $h': 200"
done
api_raw "GET /api/v1/repositories HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\t\r\nConnection: close\r\n\r\n"
is "$API_STATUS" 200 "the token followed by a tab: 200"
# ... but the token is the whole rest of the header: no second word, no
# tab or comma inside.  (A NUL cannot be tested here: libmicrohttpd 0.9.75
# ends a header's value at it, so the hub never sees what follows.)
before=$(snapshot)
for h in "Bearer $TOKEN junk" "Bearer $TOKEN,x" "Bearer $TOKEN x" "Bearer x $TOKEN" "Bearer$TOKEN" \
         "Bearer  " "Bearer" "Bearer: $TOKEN" "Bearer $TOKEN Bearer $TOKEN"; do
  _auth_raw "Authorization: $h" PUT /api/v1/vms/au2 "$(vm_json $SIZE)"
  is_error 401 unauthorized "'Authorization: $h': 401"
done
for h in "Bearer\\t$TOKEN" "Bearer $TOKEN\\tjunk" "Bearer $TOKEN\\x01" "Bearer $TOKEN\\t\\x7f"; do
  api_raw "GET /api/v1/repositories HTTP/1.1\r\nHost: x\r\nAuthorization: $h\r\nConnection: close\r\n\r\n"
  is_error 401 unauthorized "'Authorization: $h' (sent raw): 401"
done
api_raw "GET /api/v1/repositories HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\r\nAuthorization: Bearer $TOKEN\r\nConnection: close\r\n\r\n"
is_error 401 unauthorized "two Authorization headers, even both right: 401"
is "$(snapshot)" "$before" "the refused requests changed nothing"
API_TOKEN=$TOKEN

# A running job cannot be completed, failed or cancelled without the token.
start_backup au1 incremental
API_TOKEN=
before=$(snapshot)
unauthorized "complete"  POST "/api/v1/backups/$BID/complete" '{"disk_id":0}'
unauthorized "cancel"    POST "/api/v1/backups/$BID/cancel" '{}'
unauthorized "DELETE a backup" DELETE "/api/v1/backups/$BID"
unauthorized "DELETE the context" DELETE "/api/v1/contexts/$CTX?force=true"
is "$(snapshot)" "$before" "the refused requests changed nothing"
API_TOKEN=$TOKEN
api GET "/api/v1/backups/$BID"
is "$API_STATUS/$(jqb .status)" "200/running" "the job still runs"
api GET /healthz
is "$API_STATUS" 200 "GET /healthz with a token works too"

# --- A hub must not run open when its token file is unusable: it refuses to
# start, or (if it starts) still refuses an empty Bearer token.
stop_hub

# try_hub TOKENFILE DESC: start a hub with that token file on our ports.
try_hub ()
{
  local file=$1 desc=$2 pid code deadline
  "$STRATA" serve --data-dir "$DATA" --listen "127.0.0.1:$HUB_PORT" --nbd-listen "127.0.0.1:$NBD_PORT" \
    --api-token-file "$file" < /dev/null >> "$HUB_LOG" 2>&1 &
  pid=$!
  deadline=$((SECONDS + HUB_START_TIMEOUT))
  while kill -0 $pid 2>/dev/null && [ $SECONDS -le $deadline ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HUB_PORT/healthz")
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  if ! kill -0 $pid 2>/dev/null; then
    wait $pid
    cmp_ok $? -ne 0 "$desc: the hub refuses to start (non-zero exit)"
    return
  fi
  API_TOKEN=
  _auth_raw "Authorization: Bearer " GET /api/v1/repositories
  is_error 401 unauthorized "$desc: the hub started, but an empty Bearer token is refused"
  api GET /api/v1/repositories
  is_error 401 unauthorized "$desc: and no token is refused"
  kill -TERM $pid
  wait $pid
}
: > "$T/empty"
try_hub "$T/empty" "an empty token file"
printf ' \n\n' > "$T/blank"
try_hub "$T/blank" "a token file of blanks"
try_hub "$T/missing" "a missing token file"
like "$(tail -n 5 "$HUB_LOG")" 'missing' "the log names the missing file's problem"

done_testing
