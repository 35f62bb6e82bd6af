#!/usr/bin/env bash
# test-storage-daemon-restart.sh - when the qemu-storage-daemon dies under a
# running backup (kill -9), the hub reaps it, starts a new one and puts the
# exports back at the same URIs; the agent goes on writing and completes.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo jq curl sqlite3

SIZE=$((64 * MiB))
start_hub

put_vm sd1 $SIZE $SIZE
start_backup sd1 full
F=$BID; F_FILES=("${QCOW2[@]}"); F_URIS=("${NBD_URI[@]}")
write_ok "${F_URIS[0]}" 0x11 0 1M
write_ok "${F_URIS[1]}" 0x33 0 1M

old=$(qsd_pids)
like "$old" '^[0-9]+$' "the hub runs one qemu-storage-daemon"
ok "kill -9 the qemu-storage-daemon" kill -KILL "$old"

# new_daemon: a live daemon of the hub other than the old one.
new_daemon ()
{
  local p
  p=$(qsd_pids)
  [[ $p =~ ^[0-9]+$ ]] && [ "$p" != "$old" ]
}
ok "the hub starts a new qemu-storage-daemon" wait_for 20 new_daemon
ok "disk 0's export comes back at the same URI" wait_for 20 export_up "${F_URIS[0]}"
ok "disk 1's export comes back at the same URI" wait_for 20 export_up "${F_URIS[1]}"
ok "the dead daemon was reaped (no zombie)" wait_for 5 test ! -d "/proc/$old"
api GET /healthz
is "$API_STATUS/$(jqb .storage_daemon)" "200/up" "healthz: storage_daemon up"
ok "the hub is alive" hub_alive

api GET "/api/v1/backups/$F"
is "$(jqb '[.status, (.disks | map(.status + "=" + .nbd_uri) | join(" "))] | join(" ")')" \
   "running running=${F_URIS[0]%%\?*} running=${F_URIS[1]%%\?*}" "the job runs with the same URIs"
ok "data written before the crash reads back" qio -r -f raw -c 'read -P 0x11 0 1M' "${F_URIS[0]}"
write_ok "${F_URIS[0]}" 0x22 1M 1M
write_ok "${F_URIS[1]}" 0x44 1M 1M
complete_disk "$F" 0 SD0 1
complete_disk "$F" 1 SD1 1
is "$(jqb .job_status)" completed "completing works after the daemon restart"
ok "disk 0 holds the data of before and after" qio -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' "${F_FILES[0]}"
ok "disk 1 holds the data of before and after" qio -r -f qcow2 -c 'read -P 0x33 0 1M' -c 'read -P 0x44 1M 1M' "${F_FILES[1]}"

# A new backup after the restart is exported by the new daemon.
put_vm sd2 $SIZE
start_backup sd2 full
ok "a new backup's export serves after the restart" export_up "${NBD_URI[0]}"
write_ok "${NBD_URI[0]}" 0x55 0 1M
complete_disk "$BID" 0 SD2 1
ok "and its data is in the file" qio -r -f qcow2 -c 'read -P 0x55 0 1M' "${QCOW2[0]}"

# A backup started right as the daemon dies either starts (and is exported
# once the daemon is back) or is refused with 503 and leaves nothing behind.
put_vm sd3 $SIZE
before="$(catalog_counts) $(repo_listing "$DATA/repository")"
old=$(qsd_pids)
kill -KILL "$old"
api POST /api/v1/backups '{"vm_name":"sd3","backup_type":"full"}'
case $API_STATUS in
  201)
    U=$(jqb '.disks[0].nbd_uri')
    pass "a start during the daemon restart answers 201"
    ok "and its export serves once the daemon is back" wait_for 20 export_up "$U"
    api POST "/api/v1/backups/$(jqb .backup_id)/cancel" '{}'
    is "$API_STATUS" 200 "cancel it"
    ;;
  *)
    is_error 503 unavailable "a start during the daemon restart answers 201 or 503"
    is "$(catalog_counts) $(repo_listing "$DATA/repository")" "$before" "the refused start left no rows and no files"
    ;;
esac
ok "the daemon comes back" wait_for 20 new_daemon

# A second crash is handled too.
old=$(qsd_pids)
start_backup sd1 incremental
I_URIS=("${NBD_URI[@]}"); I=$BID
ok "kill -9 the new daemon" kill -KILL "$old"
ok "the hub starts yet another daemon" wait_for 20 new_daemon
ok "the incremental's export comes back" wait_for 20 export_up "${I_URIS[1]}"
ok "it shows the chain" qio -r -f raw -c 'read -P 0x33 0 1M' -c 'read -P 0x44 1M 1M' "${I_URIS[1]}"
complete_disk "$I" 0 SDI0 1
complete_disk "$I" 1 SDI1 1
is "$(jqb .job_status)" completed "the incremental completes"

done_testing
