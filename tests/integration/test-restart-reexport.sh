#!/usr/bin/env bash
# test-restart-reexport.sh - a hub killed with SIGKILL in the middle of a backup
# takes its qemu-storage-daemon with it (no orphan), and on restart exports the
# running job's disks again at the same NBD URIs: the agent writes the rest,
# completes, and the data written before and after the crash is all there.
# The same after a clean stop (SIGTERM).

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo jq curl sqlite3

SIZE=$((64 * MiB))
start_hub
REPO=$DATA/repository

put_vm rr1 $SIZE $SIZE
start_backup rr1 full
F=$BID; F_FILES=("${QCOW2[@]}"); F_URIS=("${NBD_URI[@]}")

# First half of the data.
write_ok "${F_URIS[0]}" 0x11 0 1M
write_ok "${F_URIS[1]}" 0x33 0 1M

old_qsd=$(qsd_pids)
like "$old_qsd" '^[0-9]+$' "the hub runs one qemu-storage-daemon"
if [ -r "$DATA/run/qsd.pid" ]; then
  is "$(tr -dc 0-9 < "$DATA/run/qsd.pid")" "$old_qsd" "DATA-DIR/run/qsd.pid names it"
fi

kill_hub
ok "no process of ours serves the NBD port any more" export_gone "${F_URIS[0]}"
is "$(pgrep -f -- "$DATA/" | tr '\n' ' ')" "" "no process refers to the data dir"

start_hub
new_qsd=$(qsd_pids)
like "$new_qsd" '^[0-9]+$' "the restarted hub runs one qemu-storage-daemon"
isnt "$new_qsd" "$old_qsd" "a new one"

api GET "/api/v1/backups/$F"
is "$API_STATUS/$(jqb .status)" "200/running" "after the crash the job still runs"
is "$(jqb '[.disks[].nbd_uri] | join(" ")')" "${F_URIS[*]%%\?*}" "with the same nbd_uris"
is "$(jqb '[.disks[].status] | join(" ")')" "running running" "both disks still run"
ok "disk 0 is exported again" wait_for 10 export_up "${F_URIS[0]}"
ok "disk 1 is exported again" wait_for 10 export_up "${F_URIS[1]}"
is "$(nbdinfo --size "${F_URIS[0]}" 2>&1)" "$SIZE" "at the disk's size"
is "$(nbd_exports)" "$(exports_of "${F_URIS[@]}")" "exactly the running disks are exported"
ok "the data written before the crash is there" qio -r -f raw -c 'read -P 0x11 0 1M' "${F_URIS[0]}"
ok "on disk 1 too" qio -r -f raw -c 'read -P 0x33 0 1M' "${F_URIS[1]}"

# The rest of the data, then complete.
write_ok "${F_URIS[0]}" 0x22 1M 1M
write_ok "${F_URIS[1]}" 0x44 1M 1M
complete_disk "$F" 0 RR0 2097152
complete_disk "$F" 1 RR1 2097152
is "$(jqb .job_status)" completed "the job completes after the restart"
is "$(sql "SELECT status FROM backup_jobs WHERE id='$F'")" completed "catalog: completed"
ok "disk 0 holds both halves" qio -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' -c 'read -P 0 2M 62M' "${F_FILES[0]}"
ok "disk 1 holds both halves" qio -r -f qcow2 -c 'read -P 0x33 0 1M' -c 'read -P 0x44 1M 1M' -c 'read -P 0 2M 62M' "${F_FILES[1]}"
ok "the completed files are read-only" eval "read_only '${F_FILES[0]}' && read_only '${F_FILES[1]}'"
ok "the exports are gone" export_gone "${F_URIS[0]}"

# --- The same across a clean stop, with an incremental whose disk 0 is
# already completed: only disk 1 comes back.
start_backup rr1 incremental
I=$BID; I_FILES=("${QCOW2[@]}"); I_URIS=("${NBD_URI[@]}")
write_ok "${I_URIS[0]}" 0x55 2M 1M
complete_disk "$I" 0 RI0 1
write_ok "${I_URIS[1]}" 0x66 2M 1M
stop_hub
ok "the export is gone while the hub is down" export_gone "${I_URIS[1]}"
start_hub
api GET "/api/v1/backups/$I"
is "$API_STATUS/$(jqb .status)/$(jqb '[.disks[] | .status + "=" + (.nbd_uri|tostring)] | join(" ")')" \
   "200/running/completed=null running=${I_URIS[1]%%\?*}" "after a clean stop the incremental runs, disk 1 at the same URI"
ok "disk 1 of the incremental is exported again" wait_for 10 export_up "${I_URIS[1]}"
is "$(nbd_exports)" "$(exports_of "${I_URIS[1]}")" "only the running disk is exported, not the completed one"
ok "it shows the chain and the data written before the stop" \
   qio -r -f raw -c 'read -P 0x33 0 1M' -c 'read -P 0x44 1M 1M' -c 'read -P 0x66 2M 1M' "${I_URIS[1]}"
write_ok "${I_URIS[1]}" 0x77 3M 1M
complete_disk "$I" 1 RI1 1
is "$(jqb .job_status)" completed "the incremental completes"
is "$(backing_of "${I_FILES[0]}")" "$F.qcow2" "its overlay is backed by the full"
ok "disk 0's chain reads everything" qio -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' -c 'read -P 0x55 2M 1M' "${I_FILES[0]}"
ok "disk 1's chain reads everything" qio -r -f qcow2 -c 'read -P 0x33 0 1M' -c 'read -P 0x44 1M 1M' -c 'read -P 0x66 2M 1M' -c 'read -P 0x77 3M 1M' "${I_FILES[1]}"
is "$(cd "$REPO" && find . -name '*.qcow2' | wc -l)" 4 "exactly the four files of the catalog"
is "$(nbd_exports)" "" "nothing is exported any more"

done_testing
