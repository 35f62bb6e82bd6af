#!/usr/bin/env bash
# test-slow-clients.sh - clients that hold connections without finishing a
# request cannot lock others out of the API: a few hundred slow connections
# from other loopback addresses (each sending a header line now and then,
# never ending its head) leave /healthz and an authenticated API call
# answering, with and without --api-token-file; a head that never ends is
# cut, garbage is answered or closed, and a declared Content-Length over
# the limit is answered 413 before any byte of the body.
#
# Everything stays on loopback (Linux routes all of 127/8 to lo), and the
# slow clients are bounded: 8 addresses x 40 connections, for 60 s.

source "$(dirname "$0")/../functions.sh"
requires curl jq perl

SLOW="perl $top/tests/lib/slow-client.pl"
SLOW_ADDRS=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9
SLOW_SECONDS=60
# The normal client gives up well before the slow ones do.
API_CURL_EXTRA=(--interface 127.0.0.1 --max-time 20)

TOKEN=tok-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
echo "$TOKEN" > "$T/token"
chmod 600 "$T/token"

# under_load DESC: with the slow clients holding their connections, a
# normal client gets /healthz and an API call answered.
under_load ()
{
  local desc=$1 pid
  rm -f "$T/slow.ready"
  $SLOW hold "$HUB_PORT" "$SLOW_ADDRS" 40 2 "$SLOW_SECONDS" "$T/slow.ready" > "$T/slow.out" 2>&1 &
  pid=$!
  wait_for 40 test -s "$T/slow.ready" || diag "the slow clients did not finish connecting"
  diag "$desc: slow clients $(cat "$T/slow.ready" 2>/dev/null)"
  api GET /healthz
  is "$API_STATUS/$(jqb .status)" "200/ok" "$desc: GET /healthz answers under slow clients"
  api GET /api/v1/vms
  is "$API_STATUS" 200 "$desc: an API call answers under slow clients"
  api GET /api/v1/repositories
  is "$API_STATUS" 200 "$desc: and another"
  ok "$desc: the slow clients were still running" kill -0 "$pid"
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

start_hub
under_load "no token"

# One address gets 32 connections; those past them are closed at once.
$SLOW hold "$HUB_PORT" 127.0.0.10 40 1 8 "$T/once.ready" once > "$T/once.out" 2>&1
like "$(cat "$T/once.out")" '^opened 40 closed [0-9]+ early 8$' \
     "one address holds at most 32 connections: 8 of 40 closed at once"
stop_hub

start_hub --api-token-file "$T/token"
API_TOKEN=$TOKEN
under_load "with --api-token-file"

# A declared body over the limit: 413 at once, before any body byte.
printf 'PUT /api/v1/vms/big HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n' \
       "$TOKEN" | $SLOW raw "$HUB_PORT" 20 > "$T/big.out"
like "$(sed -n 1p "$T/big.out")" '^HTTP/1\.1 413 ' "a 10 MiB declared body with no body sent: 413"
is "$(sed -n '3,$p' "$T/big.out" | jq -r .error.code 2>/dev/null)" payload_too_large \
   "the 413 is the API's JSON error"
api GET /api/v1/vms/big
is "$API_STATUS" 404 "no VM was made"

# The same without a token: refused at once too (401 or 413), never held.
printf 'PUT /api/v1/vms/big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10485760\r\n\r\n' |
  $SLOW raw "$HUB_PORT" 20 > "$T/big2.out"
like "$(sed -n 1p "$T/big2.out")" '^HTTP/1\.1 4(01|13) ' "without a token: answered at once"

# Garbage: a line that is no request line is answered (400) or closed.
printf 'garbage\r\n\r\n' | $SLOW raw "$HUB_PORT" 30 > "$T/garbage.out"
like "$(sed -n 1,2p "$T/garbage.out" | tr '\n' ' ')" '(^HTTP/1\.[01] 4[0-9][0-9] |closed)' \
     "a garbage request line is answered or closed"
# Binary junk with no line end at all (a TLS hello, say) is cut.
printf '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03junk' | $SLOW raw "$HUB_PORT" 30 > "$T/junk.out"
is "$(sed -n 2p "$T/junk.out")" closed "binary junk with no line end: the connection is closed"

# Heads that libmicrohttpd refuses before the API sees them get the right
# status, whatever the body (the library's own HTML: README, "Not yet").
mhd_refuses ()
{
  $SLOW raw "$HUB_PORT" 20 < "$T/mhd.req" > "$T/mhd.out"
  like "$(sed -n 1p "$T/mhd.out")" "^HTTP/1\\.1 $1 " "$2: $1"
}
printf 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' > "$T/mhd.req"
mhd_refuses 505 "an HTTP/2 preface"
printf 'GET /healthz\r\n\r\n' > "$T/mhd.req"
mhd_refuses 400 "an HTTP/0.9 request line"
printf 'PUT /api/v1/vms/c HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n' \
       "$TOKEN" > "$T/mhd.req"
mhd_refuses 400 "a malformed chunk size"
# Headers past the API's 32 KiB (and under the library's 512 KiB): the API's
# JSON 431, at once.
printf 'GET /api/v1/vms HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nX-Filler: %s\r\n\r\n' \
       "$TOKEN" "$(head -c 40000 /dev/zero | tr '\0' a)" | $SLOW raw "$HUB_PORT" 20 > "$T/h431.out"
like "$(sed -n 1p "$T/h431.out")" '^HTTP/1\.1 431 ' "40 kB of headers: 431"
is "$(sed -n '3,$p' "$T/h431.out" | jq -r .error.code 2>/dev/null)" headers_too_large \
   "the 431 is the API's JSON error"

# A head that never ends (a line every second, 60 in all) is cut before it
# is all sent.
$SLOW trickle "$HUB_PORT" 60 1 > "$T/trickle.out"
like "$(head -n 1 "$T/trickle.out")" '^cut after [0-9]+ lines' \
     "a request head sent a line a second is cut before its end"

api GET /healthz
is "$API_STATUS" 200 "the hub still answers"

done_testing
