#!/usr/bin/env bash
# test-hub-driven-outside-complete.sh - only the hub's workers complete the
# disks of a hub-driven job.  A client's POST .../complete of such a disk,
# while the worker still copies it, is a 409 conflict that changes nothing:
# the copy goes on, the job completes by itself, and the point restores
# exactly as the source.  (Found by the soak test: the hub answered 200,
# recorded the half-copied disk completed, left the job finishing for good,
# and the point restored different from its source.)

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-storage-daemon nbdinfo nbdcopy jq curl cmp

start_hub
slow_hub_backup oc1

api POST "/api/v1/backups/$B/complete" '{"disk_id":0}'
is_error 409 conflict "a client's complete of the disk the hub copies is a conflict"
like "$(jqb .error.message)" "hub" "the message says the hub completes it"
api GET "/api/v1/backups/$B"
is "$(jqb '.status + "/" + .disks[0].status')" running/running "the job and its disk still run"

ok "the job ends by itself" wait_for 120 job_ended "$B"
api GET "/api/v1/backups/$B"
is "$(jqb .status)" completed "completed by its worker"
api POST "/api/v1/backups/$B/complete" '{"disk_id":0}'
is_error 409 conflict "a client's complete of the completed disk is a conflict too"

restores_as_src "$B"

kill "$SRC_QSD_PID" 2>/dev/null
wait "$SRC_QSD_PID" 2>/dev/null
done_testing
