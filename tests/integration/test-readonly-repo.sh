#!/usr/bin/env bash
# test-readonly-repo.sh - a repository that became read-only (here a
# read-only bind mount of it, in a mount namespace of the test's own): a
# start answers 503 naming the cause and changes nothing; a cancel answers
# 200 but says that its files could not be removed, and the hub removes them
# once the repository is writable again (at the next start).

if [ -z "$STRATA_TEST_NS" ]; then
  if command -v unshare > /dev/null && [ "$(id -u)" = 0 ] &&
     unshare -m --propagation private true 2> /dev/null; then
    STRATA_TEST_NS=1 exec unshare -m --propagation private bash "$0" "$@"
  fi
  echo "1..0 # SKIP needs root and unshare -m"
  exit 0
fi

source "$(dirname "$0")/../functions.sh"
requires qemu-img jq curl mount umount mountpoint

start_hub
REPO=$DATA/repository
# read_only: a read-only bind mount of the repository on top of it (files
# the storage daemon has open stay as they are, as on a file system that
# went read-only under a running job); writable: that mount goes again.
read_only ()
{
  mount --bind "$REPO" "$REPO" && mount -o remount,ro,bind "$REPO" ||
    bail "mounting the repository read-only"
}
writable () { umount -l "$REPO" || bail "unmounting the read-only repository"; }
_cleanup_extra () { while mountpoint -q "$REPO"; do umount -l "$REPO" || break; done; }

put_vm ro1 $((1 * MiB))
put_vm ro2 $((1 * MiB))
put_vm ro3 $((1 * MiB))

# A first backup of ro2, completed, so that its context folder exists.
start_backup ro2 full
FIRST=$BID
complete_disk "$FIRST" 0

# --- A start into the read-only repository -------------------------------
read_only
state_save
bad 503 unavailable "a full start into a read-only repository answers 503" \
  POST /api/v1/backups '{"vm_name":"ro1","backup_type":"full"}'
like "$(jqb .error.message)" "[Rr]ead-only" "... saying the repository is read-only"
bad 503 unavailable "an incremental in an existing context answers 503 too" \
  POST /api/v1/backups '{"vm_name":"ro2","backup_type":"incremental"}'
like "$(jqb .error.message)" "[Rr]ead-only" "... saying why"
writable

# --- A cancel that cannot remove its files -------------------------------
start_backup ro3 full
JOB=$BID
FILE=${QCOW2[0]}
ok "the running backup's image exists" test -f "$FILE"
read_only
api POST "/api/v1/backups/$JOB/cancel"
is "$API_STATUS" 200 "a cancel in a read-only repository answers 200"
is "$(jqb .status)" cancelled "... the backup is cancelled"
like "$(jqb .cleanup_pending)" "[Rr]ead-only" "... and says its files could not be removed, and why"
ok "the image is still there" test -f "$FILE"
api GET "/api/v1/backups/$JOB"
like "$(jqb .cleanup_pending)" "[Rr]ead-only" "GET of the backup says so as well"
like "$(cat "$HUB_LOG")" "$JOB.*retr" "the hub's log says it will retry"

# Still read-only: a start fails and the files stay.
api POST /api/v1/backups '{"vm_name":"ro1","backup_type":"full"}'
is "$API_STATUS" 503 "a start while still read-only answers 503"
ok "the image is still there" test -f "$FILE"

# Writable again: the next start removes them.
writable
start_backup ro1 full
ok "the next start removed the cancelled backup's image" test ! -e "$FILE"
ok "... and its folder" test ! -e "$(dirname "$FILE")"
api GET "/api/v1/backups/$JOB"
is "$(jqb .cleanup_pending)" null "the cancelled backup no longer has files pending removal"
like "$(cat "$HUB_LOG")" "removed the files left by backup $JOB" "the hub's log says so"
api POST "/api/v1/backups/$BID/cancel"
is "$API_STATUS" 200 "a cancel in a writable repository answers 200"
is "$(jqb .cleanup_pending)" null "... with nothing pending"

done_testing
