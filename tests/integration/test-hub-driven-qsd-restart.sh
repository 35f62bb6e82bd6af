#!/usr/bin/env bash
# test-hub-driven-qsd-restart.sh - the hub's qemu-storage-daemon dies
# (kill -9) while a hub-driven backup copies into it.  The hub starts a new
# daemon and exports the disk again under the same name; the worker copies
# the disk once more and the job completes by itself, restoring exactly as
# the source.  The source is an NBD export throttled to a few MB/s, so that
# the copy is still running when the daemon is killed.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-storage-daemon nbdinfo nbdcopy jq curl cmp

start_hub
slow_hub_backup qr1
old=$(qsd_pids)
ok "kill -9 the hub's qemu-storage-daemon mid-copy" kill -KILL "$old"

ok "the job ends by itself" wait_for 120 job_ended "$B"
api GET "/api/v1/backups/$B"
is "$(jqb .status)" completed "completed, after copying again"
like "$(cat "$HUB_LOG")" "storage daemon was restarted during the copy; copying again" \
     "the hub says it copied again"

restores_as_src "$B"

# The disk copied again holds exactly what its manifest lists.
verify_ok "/api/v1/backups/$B/verify" "verify $B"
is "$(verified "$B" '.disks[0] | "\(.verify_state) \(.hashed) \(.bad_blocks) \(.error)"')" \
   "ok true 0 null" "the disk copied again verifies ok, hashed, with no bad block"

kill "$SRC_QSD_PID" 2>/dev/null
wait "$SRC_QSD_PID" 2>/dev/null
done_testing
