#!/usr/bin/env bash
# test-start-halfway.sh - a backup start that fails half-way (the repository
# refuses a file after others were made) answers an error and leaves no rows,
# no files and no exports behind; once the cause is gone, the same backup
# starts normally.  Folders are made immutable (chattr +i) so that even root
# cannot create files in them.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo jq curl sqlite3 chattr

SIZE=$((64 * MiB))
mkdir "$T/probe"
immutable "$T/probe" || skip_all "chattr +i does not stop root on this file system"
mutable "$T/probe"
start_hub
REPO=$DATA/repository

state ()
{
  local t
  for t in backup_repositories vms vm_disks vm_backup_contexts backup_jobs backup_disks; do
    echo "== $t"
    sql "SELECT * FROM $t ORDER BY 1, 2"
  done
  echo "== files"
  repo_listing "$REPO"
  echo "== exports"
  nbd_exports
}

# --- First backup of a VM into a repository whose root is immutable: the
# context folder cannot be made.
put_vm hw0 $SIZE
before=$(state)
immutable "$REPO"
api POST /api/v1/backups '{"vm_name":"hw0","backup_type":"full"}'
like "$API_STATUS" '^5[0-9][0-9]$' "a first backup that cannot make its folder fails with a 5xx"
ok "with a JSON error body ($API_BODY)" has_error_body
mutable "$REPO"
is "$(state)" "$before" "no context, job, disk row, file or export is left behind"
start_backup hw0 full
is "$(jqb .status)" running "once the repository is writable, the same backup starts"
complete_disk "$BID" 0 H0 1

# --- An incremental of a 3-disk VM where disk 1's folder is immutable: disk 0's
# overlay (and maybe export) exists by the time disk 1 fails.
put_vm hw1 $SIZE $SIZE $SIZE
start_backup hw1 full; F=$BID; CTX1=$CTX
write_ok "${NBD_URI[0]}" 0x11 0 1M
for i in 0 1 2; do complete_disk "$F" $i "F$i" 1; done
before=$(state)
immutable "$REPO/$CTX1/disk1"
api POST /api/v1/backups '{"vm_name":"hw1","backup_type":"incremental"}'
like "$API_STATUS" '^5[0-9][0-9]$' "an incremental whose disk 1 cannot be created fails with a 5xx"
mutable "$REPO/$CTX1/disk1"
is "$(state)" "$before" "disk 0's overlay, the rows and any export are gone again"
api GET /api/v1/contexts/$CTX1
is "$(jqb '[.total_backups_run, .successful_backups, .failed_backups] | map(tostring) | join(" ")')" "1 1 0" "the failed start is not counted as a run"
api GET "/api/v1/backups?vm_name=hw1"
is "$(jqb .total)" 1 "the listing shows only the full"

# The same with a full: disk 2 fails after disks 0 and 1 were made.
before=$(state)
immutable "$REPO/$CTX1/disk2"
api POST /api/v1/backups '{"vm_name":"hw1","backup_type":"full"}'
like "$API_STATUS" '^5[0-9][0-9]$' "a full whose disk 2 cannot be created fails with a 5xx"
mutable "$REPO/$CTX1/disk2"
is "$(state)" "$before" "nothing of it is left"

# After the failures the chain goes on from the full.
start_backup hw1 incremental; I=$BID
is "$(jqb '[.disks[].parent_backup_id] | unique | join(",")')" "$F" "the next incremental builds on the full"
ok "its export shows the full's data" qio -r -f raw -c 'read -P 0x11 0 1M' "${NBD_URI[0]}"
for i in 0 1 2; do complete_disk "$I" $i "I$i" 1; done
is "$(jqb .job_status)" completed "and completes"
is "$(cd "$REPO" && find . -name '*.qcow2' | wc -l)" 7 "the repository holds exactly the 7 files of the catalog"

done_testing
