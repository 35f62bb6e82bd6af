#!/usr/bin/env bash
# test-agent-bad-input.sh - `strata backup` and `strata restore` with bad
# options, disks, outputs and ids: a clear message, the documented exit
# status (2 usage, 3 hub unreachable or refusing, 4 conflict), and nothing
# changed on the hub or in the disk images.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl

start_hub
D0=$T/vm-disk0.qcow2
qemu-img create -q -f qcow2 "$D0" 16M
qemu-io -f qcow2 -c 'write -P 0x11 0 1M' "$D0" > /dev/null
printf 'odd' > "$T/odd.raw"
mkdir "$T/adir"
before=$(catalog_counts)
files_before=$(repo_listing)

# bad_backup RC REGEX DESC ARGS...: the backup exits RC saying REGEX.
bad ()
{
  local rc=$1 re=$2 desc=$3
  shift 3
  agent "$@"
  is "$AGENT_RC" "$rc" "$desc: exit status $rc"
  like "$AGENT_ERR" "$re" "$desc: says why"
}

bad 2 "--vm NAME is required" "backup without --vm" backup "$D0"
bad 2 "no DISK given" "backup without disks" backup --vm bad1
bad 2 "--type bogus: auto, full or incremental" "an unknown --type" backup --vm bad1 --type bogus "$D0"
bad 2 "unrecognized option|Usage" "an unknown option" backup --vm bad1 --frobnicate "$D0"
bad 2 "disk 1: .*missing.qcow2" "a missing disk" backup --vm bad1 "$D0" "$T/missing.qcow2"
bad 2 "disk 0: .*neither a file" "a folder as disk" backup --vm bad1 "$T/adir"
bad 2 "3 bytes, not a multiple of 512" "a raw disk of 3 bytes" backup --vm bad1 "$T/odd.raw"
bad 2 "disk 0: .*NBD" "an NBD URI nobody serves" backup --vm bad1 "nbd+unix:///x?socket=$T/none.sock"
bad 2 "--parallel 0" "--parallel 0" backup --vm bad1 --parallel 0 "$D0"
bad 2 "--token-file" "an unreadable token file" backup --vm bad1 --token-file "$T/none" "$D0"
bad 2 "not an http" "a hub URL that is not http" backup --hub ftp://x --vm bad1 "$D0"
is "$(bitmaps_of "$D0")" "" "the disk image got no bitmap from any of them"

bad 2 "either --output PATH or --export" "restore without --output or --export" \
    restore --backup b1 --disk 0
bad 2 "either --output PATH or --export" "restore with both" \
    restore --backup b1 --disk 0 --output "$T/x.raw" --export
bad 2 "--backup ID and --disk N are required" "restore without --disk" restore --backup b1 --output "$T/x.raw"
bad 2 "--disk -1: a disk index" "restore --disk -1" restore --backup b1 --disk -1 --output "$T/x.raw"
bad 2 "--format vmdk: raw or qcow2" "restore --format vmdk" \
    restore --backup b1 --disk 0 --output "$T/x.raw" --format vmdk
bad 2 "already exists" "restore onto an existing file" restore --backup b1 --disk 0 --output "$D0"

is "$(catalog_counts)" "$before" "the catalog is unchanged"
is "$(repo_listing)" "$files_before" "the repository is unchanged"

# Hub-side refusals.
bad 3 "404|not found|no such" "restore of an unknown backup" \
    restore --backup backup-nope-20200101T000000-000000000000 --disk 0 --output "$T/x.raw"
ok "no partial output is left" test ! -e "$T/x.raw"
bad 3 "does not answer" "a hub that is not there" \
    backup --hub "http://127.0.0.1:$(free_port)" --vm bad1 "$D0"
is "$(catalog_counts)" "$before" "the catalog is still unchanged"

# A real backup, then a restore of a disk it does not have.
agent_ok "a backup works" backup --vm bad1 --json "$D0"
B1=$(jqa .backup_id)
bad 3 "404|not found|no such|disk" "restore of a disk the backup lacks" \
    restore --backup "$B1" --disk 5 --output "$T/x.raw"
ok "no output is left" test ! -e "$T/x.raw"

# A running job of the VM: a conflict, naming it.
api POST /api/v1/backups '{"vm_name":"bad1","backup_type":"incremental"}'
B2=$(jqb .backup_id)
bad 4 "already running: $B2" "a backup while one runs" backup --vm bad1 "$D0"
is "$(bitmaps_of "$D0")" "$B1" "the conflict leaves the disk's bitmaps alone"
api POST "/api/v1/backups/$B2/cancel"

agent backup --help
is "$AGENT_RC" 0 "backup --help exits 0"
like "$AGENT_OUT" "Exit status: 0 backed up; 1 .*2 usage.*3 the hub.*4 a backup" "and documents the exit statuses"
agent restore --help
like "$AGENT_OUT" "Exit status: 0 restored" "restore --help documents them too"

done_testing
