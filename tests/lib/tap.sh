# tests/lib/tap.sh - TAP output for the integration tests: checks (ok, is,
# like, cmp_ok ...), diagnostics, the plan, skipping and bailing out.
# Sourced by tests/functions.sh; a failing check names the line of the test
# script that made it.

_tap_n=0
_tap_failed=0
_tap_done=0

diag ()
{
  local arg line
  for arg in "$@"; do
    [ -n "$arg" ] || continue
    while IFS= read -r line; do
      printf '# %s\n' "$line" >&2
    done <<< "$arg"
  done
}

# note: like diag, but on stdout (shown by prove -v only).
note ()
{
  local arg line
  for arg in "$@"; do
    [ -n "$arg" ] || continue
    while IFS= read -r line; do
      printf '# %s\n' "$line"
    done <<< "$arg"
  done
}

# _caller_line: the line of the test script that called into these helpers
# (the first caller outside tests/lib/ and functions.sh).
_caller_line ()
{
  local i
  for ((i = 1; i < ${#BASH_SOURCE[@]}; i++)); do
    case ${BASH_SOURCE[$i]} in
      "$top"/tests/lib/*.sh | */functions.sh) ;;
      *)
        echo "${BASH_LINENO[$((i - 1))]}"
        return
        ;;
    esac
  done
  echo "?"
}

pass ()
{
  _tap_n=$((_tap_n + 1))
  printf 'ok %d - %s\n' "$_tap_n" "$1"
}

fail ()
{
  _tap_n=$((_tap_n + 1))
  _tap_failed=$((_tap_failed + 1))
  printf 'not ok %d - %s\n' "$_tap_n" "$1"
  diag "  Failed test '$1' in $TEST_NAME at line $(_caller_line)"
  shift
  [ $# -gt 0 ] && diag "$@"
  return 1
}

# ok DESC CMD [ARGS...]: passes when CMD exits 0.  Its output is shown on failure.
ok ()
{
  local desc=$1 out rc
  shift
  out=$("$@" 2>&1)
  rc=$?
  if [ $rc -eq 0 ]; then
    pass "$desc"
  else
    fail "$desc" "  command: $*" "  exit status: $rc" "$(printf '%s' "$out" | head -c 4000 | sed 's/^/    /')"
  fi
}

# nok DESC CMD [ARGS...]: passes when CMD exits non-zero.
nok ()
{
  local desc=$1 out rc
  shift
  out=$("$@" 2>&1)
  rc=$?
  if [ $rc -ne 0 ]; then
    pass "$desc"
  else
    fail "$desc" "  command unexpectedly succeeded: $*" "$(printf '%s' "$out" | head -c 2000 | sed 's/^/    /')"
  fi
}

# is GOT EXPECTED DESC
is ()
{
  if [ "$1" == "$2" ]; then
    pass "$3"
  else
    fail "$3" "         got: '$1'" "    expected: '$2'" "$(_api_context)"
  fi
}

# isnt GOT UNEXPECTED DESC
isnt ()
{
  if [ "$1" != "$2" ]; then
    pass "$3"
  else
    fail "$3" "         got: '$1'" "    expected anything else" "$(_api_context)"
  fi
}

# like GOT ERE DESC
like ()
{
  if [[ $1 =~ $2 ]]; then
    pass "$3"
  else
    fail "$3" "                  '$1'" "    doesn't match '$2'" "$(_api_context)"
  fi
}

# unlike GOT ERE DESC
unlike ()
{
  if [[ $1 =~ $2 ]]; then
    fail "$3" "                  '$1'" "    matches '$2'" "$(_api_context)"
  else
    pass "$3"
  fi
}

# cmp_ok A OP B DESC, with OP one of -eq -ne -lt -le -gt -ge
cmp_ok ()
{
  if [[ $1 =~ ^-?[0-9]+$ && $3 =~ ^-?[0-9]+$ ]] && [ "$1" "$2" "$3" ]; then
    pass "$4"
  else
    fail "$4" "    '$1' $2 '$3' does not hold" "$(_api_context)"
  fi
}

# bail_out MSG: abort the whole test file (the EXIT trap still cleans up).
# The hub's log comes first: prove stops reading at the "Bail out!" line.
bail_out ()
{
  _print_hub_log
  printf 'Bail out! %s\n' "$*"
  _tap_failed=$((_tap_failed + 1))
  _tap_done=1
  exit 255
}

# skip_all REASON
skip_all ()
{
  printf '1..0 # SKIP %s\n' "$*"
  _tap_done=1
  exit 0
}

# done_testing: stop the hub (checking that it leaves nothing behind), print
# the plan, print the hub's log when something failed, and exit.
done_testing ()
{
  if [ -n "$HUB_PID" ]; then
    stop_hub
  fi
  # Under the ASan/UBSan build, any report in the hub's log (across all its
  # restarts in this test) is a failure, even one the hub survived.
  if [ -s "$HUB_LOG" ]; then
    ok "the hub's log has no sanitizer report" \
       eval "! grep -qE 'Sanitizer|runtime error:' \"\$HUB_LOG\""
  fi
  printf '1..%d\n' "$_tap_n"
  _tap_done=1
  if [ $_tap_failed -gt 0 ]; then
    diag "Looks like you failed $_tap_failed test(s) of $_tap_n."
    _print_hub_log
    exit 1
  fi
  exit 0
}

# requires CMD...: skip the whole test when a tool is missing.
requires ()
{
  local c
  for c in "$@"; do
    command -v "$c" > /dev/null 2>&1 || skip_all "missing $c"
  done
}
