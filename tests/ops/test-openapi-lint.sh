#!/usr/bin/env bash
# test-openapi-lint.sh - docs/openapi.json passes Redocly's linter with the
# recommended rules (tests/ops/redocly.yaml): zero errors, zero warnings.
# The linter is the pinned @redocly/cli of tests/ops/package.json, installed
# by "make npm-deps" under $STRATA_NPM.

source "$(dirname "$0")/../functions.sh"
requires node jq

NPM=${STRATA_NPM:-$top/build/npm}
REDOCLY=$NPM/node_modules/.bin/redocly
[ -x "$REDOCLY" ] || bail_out "no redocly at $REDOCLY (run make npm-deps)"
DOC=$top/docs/openapi.json

jq -e . "$DOC" > /dev/null
is "$?" 0 "docs/openapi.json is JSON"
is "$(jq -r .openapi "$DOC")" 3.1.0 "it is an OpenAPI 3.1 document"

# --format=json: the problems as data, counted by severity, whatever the
# human-readable summary says.
"$REDOCLY" lint --config "$top/tests/ops/redocly.yaml" --format=json "$DOC" \
  > "$T/lint.json" 2> "$T/lint.err"
rc=$?
is "$rc" 0 "redocly lint exits 0"
jq -e '.totals' "$T/lint.json" > /dev/null ||
  bail_out "redocly gave no JSON report: $(head -c 2000 "$T/lint.err")"
is "$(jq '.totals.errors' "$T/lint.json")" 0 "no errors"
is "$(jq '.totals.warnings' "$T/lint.json")" 0 "no warnings"
if [ "$(jq '.totals.errors + .totals.warnings' "$T/lint.json")" != 0 ]; then
  diag "$(jq -r '.problems[] | "\(.severity) \(.ruleId): \(.message) at \(.location[0].pointer)"' \
          "$T/lint.json" | head -50)"
fi

# The committed config really holds the linter to its recommended rules:
# a document that breaks one of them is reported (the test can fail).
jq 'del(.paths["/api/v1/vms"].get.operationId)' "$DOC" > "$T/broken.json"
"$REDOCLY" lint --config "$top/tests/ops/redocly.yaml" --format=json "$T/broken.json" \
  > "$T/broken-lint.json" 2> /dev/null
cmp_ok "$(jq '.totals.errors + .totals.warnings' "$T/broken-lint.json")" -gt 0 \
  "an operation without an operationId is reported"

done_testing
