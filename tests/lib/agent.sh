# tests/lib/agent.sh - the strata client (strata backup / strata restore)
# run against the test's hub, its output, and restores checked against a
# reference image.

AGENT_RC=
AGENT_OUT=
AGENT_ERR=

# agent backup|restore ARGS...: run the strata client against the test's hub.
# Sets AGENT_RC, AGENT_OUT (stdout) and AGENT_ERR (stderr).
agent ()
{
  local cmd=$1
  shift
  "$STRATA" "$cmd" --hub "$HUB_SCHEME://$HUB_HOST:$HUB_PORT" "$@" > "$T/agent.out" 2> "$T/agent.err" < /dev/null
  AGENT_RC=$?
  AGENT_OUT=$(cat "$T/agent.out")
  AGENT_ERR=$(cat "$T/agent.err")
}

# agent_ok DESC backup|restore ARGS...: one test that it exits 0 (its
# output shown otherwise).
agent_ok ()
{
  local desc=$1
  shift
  agent "$@"
  if [ "$AGENT_RC" = 0 ]; then
    pass "$desc"
  else
    fail "$desc" "  exit status: $AGENT_RC" "  stderr: $AGENT_ERR" "  stdout: $(printf '%s' "$AGENT_OUT" | head -c 3000)"
  fi
}

# jqa FILTER: jq -r FILTER on the last agent's stdout.
jqa ()
{
  printf '%s' "$AGENT_OUT" | jq -r "$@" 2>/dev/null
}

# restore_is BID IDX REF DESC [FORMAT]: restore disk IDX of backup BID with
# `strata restore --output` and test that it equals the raw file REF.
restore_is ()
{
  local bid=$1 idx=$2 ref=$3 desc=$4 fmt=${5:-raw} out
  out=$T/restore-$RANDOM$RANDOM.$fmt
  agent restore --backup "$bid" --disk "$idx" --output "$out" --format "$fmt"
  if [ "$AGENT_RC" != 0 ]; then
    fail "$desc" "  strata restore exited $AGENT_RC: $AGENT_ERR"
  elif [ "$fmt" = raw ] && cmp "$ref" "$out" > /dev/null 2>&1; then
    pass "$desc"
  elif [ "$fmt" != raw ] && qemu-img compare -q -f raw -F "$fmt" "$ref" "$out" > /dev/null 2>&1; then
    pass "$desc"
  else
    fail "$desc" "  $out differs from $ref" "$(cmp "$ref" "$out" 2>&1 | head -3)"
  fi
  rm -f "$out"
}
