#!/usr/bin/env bash
# test-openapi-served.sh - a hub serves its OpenAPI document at
# GET /api/v1/openapi.json: the very bytes of docs/openapi.json, as JSON,
# without a token even on a hub that has one (it holds no data), while the
# API beside it still wants the token; other methods are refused.

source "$(dirname "$0")/../functions.sh"
requires jq curl cmp

TOKEN=tok-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
echo "$TOKEN" > "$T/token"
chmod 600 "$T/token"
start_hub --api-token-file "$T/token"

served ()
{
  curl -s -S -g -o "$T/served.json" -D "$T/headers" -w '%{http_code}' --max-time 30 \
       "$@" "http://127.0.0.1:$HUB_PORT/api/v1/openapi.json"
}

is "$(served)" 200 "GET /api/v1/openapi.json answers 200 without a token"
cmp -s "$T/served.json" "$top/docs/openapi.json"
is "$?" 0 "it is docs/openapi.json, byte for byte"
like "$(grep -i '^content-type:' "$T/headers")" 'application/json' "as application/json"
is "$(jq -r '.openapi' "$T/served.json")" 3.1.0 "an OpenAPI 3.1 document"

is "$(served -H "Authorization: Bearer $TOKEN")" 200 "with the token too"
cmp -s "$T/served.json" "$top/docs/openapi.json"
is "$?" 0 "the same bytes"

is "$(served -I)" 200 "HEAD answers as well"

api GET /api/v1/vms
is_error 401 unauthorized "the API beside it still needs the token"

api POST /api/v1/openapi.json '{}'
is_error 405 method_not_allowed "POST on the document is refused"
like "$(curl -s -D - -o /dev/null -X DELETE \
          "http://127.0.0.1:$HUB_PORT/api/v1/openapi.json" | grep -i '^allow:')" \
     'GET' "with Allow: GET"

done_testing
