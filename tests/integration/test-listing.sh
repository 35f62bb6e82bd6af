#!/usr/bin/env bash
# test-listing.sh - GET /api/v1/backups lists one entry per job (a 3-disk job
# once, with its disks), filters and pages; GET /api/v1/backups/{id} shows each
# disk's state; repositories report their space; a second repository gets its
# own context, and a repository in use cannot be deleted.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io jq curl sqlite3

SIZE=$((64 * MiB))
start_hub
REPO=$DATA/repository

# ls1: 3 disks, a full and an incremental, completed.
put_vm ls1 $SIZE $SIZE $SIZE
start_backup ls1 full; F=$BID; CTX1=$CTX
for i in 0 1 2; do
  write_ok "${NBD_URI[$i]}" "0x1$i" 0 1M
  complete_disk "$F" $i "F$i" $((1000 + i))
done
start_backup ls1 incremental; I=$BID
I_FILES=("${QCOW2[@]}")
for i in 0 1 2; do
  write_ok "${NBD_URI[$i]}" "0x2$i" 1M 1M
  complete_disk "$I" $i "I$i" $((2000 + i))
done
# ls2: 1 disk, a completed full and a running incremental.
put_vm ls2 $SIZE
start_backup ls2 full; G=$BID
complete_disk "$G" 0 G0 1
start_backup ls2 incremental; H=$BID

# ids NAME...: the backup ids of the last listing, in order.
ids ()
{
  jqb '[.backups[].backup_id] | join(" ")'
}

api GET "/api/v1/backups?vm_name=ls1"
is "$API_STATUS" 200 "GET /api/v1/backups?vm_name=ls1"
is "$(jqb '.backups | length')/$(jqb .total)" "2/2" "a 3-disk VM backed up twice lists 2 entries, total 2"
is "$(ids)" "$I $F" "newest first"
is "$(jqb '[.backups[] | .disks | length] | join(" ")')" "3 3" "each entry carries its 3 disks"
is "$(jqb '[.backups[0].disks[] | "\(.disk_index):\(.status):\(.change_id)"] | join(" ")')" "0:completed:I0 1:completed:I1 2:completed:I2" "with their status and change ids"

api GET /api/v1/backups
is "$(jqb '.backups | length')/$(jqb .total)" "4/4" "all backups: 4 entries"
is "$(ids)" "$H $G $I $F" "newest first"
api GET "/api/v1/backups?status=running"
is "$(jqb .total)/$(ids)" "1/$H" "status=running"
api GET "/api/v1/backups?status=completed"
is "$(jqb .total)/$(ids)" "3/$G $I $F" "status=completed"
api GET "/api/v1/backups?backup_type=full"
is "$(jqb .total)/$(ids)" "2/$G $F" "backup_type=full"
api GET "/api/v1/backups?backup_type=incremental&vm_name=ls1"
is "$(jqb .total)/$(ids)" "1/$I" "backup_type=incremental&vm_name=ls1"
api GET "/api/v1/backups?repository_id=default"
is "$(jqb .total)" 4 "repository_id=default"
api GET "/api/v1/backups?vm_name=nobody"
is "$API_STATUS/$(jqb .total)/$(jqb '.backups | length')" "200/0/0" "a VM without backups lists nothing"
api GET "/api/v1/backups?limit=1"
is "$(jqb '.backups | length')/$(jqb .total)/$(ids)" "1/4/$H" "limit=1: one entry, total still 4"
api GET "/api/v1/backups?limit=2&offset=1"
is "$(jqb '.backups | length')/$(jqb .total)/$(ids)" "2/4/$G $I" "limit=2&offset=1"
api GET "/api/v1/backups?offset=3"
is "$(ids)" "$F" "offset=3: the oldest"
api GET "/api/v1/backups?offset=10"
is "$API_STATUS/$(jqb '.backups | length')/$(jqb .total)" "200/0/4" "offset past the end: empty page, total 4"

# One backup in detail.
api GET "/api/v1/backups/$I"
is "$API_STATUS" 200 "GET /api/v1/backups/{id}"
is "$(jqb '[.backup_id, .context_id, .vm_name, .repository_id, .backup_type, .status, (.error|tostring), (.completed_at != null | tostring)] | join(" ")')" \
   "$I $CTX1 ls1 default incremental completed null true" "the job's fields"
is "$(jqb -c '[.verify_state, .verified_at, [.disks[] | [.verify_state, .verified_at, .verify_error]]]')" \
   '["none",null,[["none",null,null],["none",null,null],["none",null,null]]]' \
   "never verified: verify_state none, no time, no error, for the job and each disk"
for i in 0 1 2; do
  is "$(jqb ".disks[$i] | [.disk_index, .backup_type, .status, .change_id, .bytes_transferred, .size_bytes, .parent_backup_id, .previous_change_id, (.nbd_uri|tostring), (.full_reason|tostring), .vmware_disk_key, .unit_number] | map(tostring) | join(\" \")")" \
     "$i incremental completed I$i $((2000 + i)) $SIZE $F F$i null null $((2000 + i)) $i" "disk $i: status, change id, bytes, size, parent, no export"
  is "$(jqb ".disks[$i].qcow2_path")" "${I_FILES[$i]}" "disk $i: its file"
  ok "disk $i: the file exists" test -f "${I_FILES[$i]}"
done
ok "disk 2's chain holds its data" qio -r -f qcow2 -c 'read -P 0x12 0 1M' -c 'read -P 0x22 1M 1M' "${I_FILES[2]}"

# Repositories.
api GET /api/v1/repositories
is "$API_STATUS/$(jqb '.repositories | length')" "200/1" "one repository"
is "$(jqb '.repositories[0] | [.id, .name, .type, .path] | join(" ")')" "default default local $REPO" "default is local at DATA-DIR/repository"
used=$(jqb '.repositories[0].used_bytes'); avail=$(jqb '.repositories[0].available_bytes')
du_used=$(du -sb --apparent-size "$REPO" | cut -f1); du_alloc=$(( $(du -sk "$REPO" | cut -f1) * 1024 ))
fs_size=$(( $(df -Pk "$REPO" | awk 'NR==2 {print $2}') * 1024 ))
cmp_ok "$used" -gt 0 "used_bytes is positive ($used)"
ok "used_bytes ($used) is the space of the files (du: $du_alloc allocated, $du_used apparent)" \
   test "$used" -le $((du_used > du_alloc ? du_used + 1048576 : du_alloc + 1048576))
cmp_ok "$avail" -gt 0 "available_bytes is positive ($avail)"
cmp_ok "$avail" -le "$fs_size" "available_bytes is at most the file system's size"
api GET /api/v1/repositories/default
is "$API_STATUS/$(jqb .id)/$(jqb '.used_bytes > 0')" "200/default/true" "GET /api/v1/repositories/default"

# A second repository, and a backup of ls1 into it.
api POST /api/v1/repositories "{\"id\":\"second\",\"name\":\"Second repo\",\"type\":\"local\",\"path\":\"$T/repo2\"}"
is "$API_STATUS" 201 "POST /api/v1/repositories: 201"
is "$(jqb '[.id, .name, .type, .path, (.created_at != null)] | map(tostring) | join("|")')" "second|Second repo|local|$T/repo2|true" "the repository object"
ok "its folder is created" test -d "$T/repo2"
api GET /api/v1/repositories
is "$(jqb '[.repositories[].id] | sort | join(",")')" "default,second" "two repositories listed"
is "$(sql "SELECT count(*) FROM backup_repositories")" 2 "two repository rows"
api POST /api/v1/repositories "{\"id\":\"second\",\"name\":\"again\",\"type\":\"local\",\"path\":\"$T/repo2b\"}"
is_error 409 conflict "the same id again: 409"
api POST /api/v1/repositories "{\"id\":\"third\",\"name\":\"again\",\"type\":\"local\",\"path\":\"$T/repo2\"}"
is_error 409 conflict "the same path again: 409"
api POST /api/v1/repositories "{\"id\":\"nested\",\"name\":\"n\",\"type\":\"local\",\"path\":\"$T/repo2/inner\"}"
is_error 409 conflict "a repository inside another: 409"
ok "and its folder is not left behind" test ! -e "$T/repo2/inner"
api POST /api/v1/repositories "{\"id\":\"outer\",\"name\":\"o\",\"type\":\"local\",\"path\":\"$T\"}"
is_error 409 conflict "a repository holding other repositories and the data folder: 409"
api POST /api/v1/repositories "{\"name\":\"no id\",\"type\":\"local\",\"path\":\"$T/repo3\"}"
is "$API_STATUS" 201 "a repository without id: 201"
like "$(jqb .id)" '^repo-[A-Za-z0-9._-]+$' "the hub names it repo-..."
R3=$(jqb .id)

start_backup ls1 incremental '"repository_id":"second"'
S=$BID; CTX2=$CTX
isnt "$CTX2" "$CTX1" "a backup into the second repository makes a second context"
is "$(jqb '.repository_id')" second "in the second repository"
is "$(jqb '[.disks[] | .backup_type + "/" + (.full_reason != null | tostring) + "/" + (.parent_backup_id|tostring)] | join(" ")')" \
   "full/true/null full/true/null full/true/null" "no completed backup there: each disk is taken as full, with a reason"
like "${QCOW2[0]}" "^$T/repo2/$CTX2/disk0/$S\\.qcow2\$" "its files are in the second repository"
for i in 0 1 2; do complete_disk "$S" $i "S$i" 1; done
is "$(sql "SELECT count(*) FROM vm_backup_contexts WHERE vm_name='ls1'")" 2 "two contexts for ls1 in the catalog"
api GET "/api/v1/contexts?vm_name=ls1"
is "$(jqb '[.contexts[].repository_id] | sort | join(",")')" "default,second" "GET /api/v1/contexts?vm_name=ls1 lists both"
api GET "/api/v1/backups?repository_id=second"
is "$(jqb .total)/$(ids)" "1/$S" "listing filtered by repository_id=second"
api GET "/api/v1/backups/changeid?vm_name=ls1&disk_id=0"
is_error 409 conflict "changeid without repository_id when the VM has two contexts: 409"
api GET "/api/v1/backups/changeid?vm_name=ls1&disk_id=0&repository_id=second"
is "$API_STATUS/$(jqb .change_id)/$(jqb .backup_id)" "200/S0/$S" "changeid with repository_id=second"
api GET "/api/v1/backups/changeid?vm_name=ls1&disk_id=0&repository_id=default"
is "$API_STATUS/$(jqb .change_id)/$(jqb .backup_id)" "200/I0/$I" "changeid with repository_id=default"

api DELETE /api/v1/repositories/second
is_error 409 conflict "DELETE a repository in use: 409"
is "$(sql "SELECT count(*) FROM backup_repositories WHERE id='second'")" 1 "it stays"
api DELETE "/api/v1/contexts/$CTX2"
is "$API_STATUS" 200 "delete its context"
api DELETE /api/v1/repositories/second
is "$API_STATUS" 204 "then DELETE the repository: 204"
ok "its folder is left on disk" test -d "$T/repo2"
api GET /api/v1/repositories/second
is_error 404 not_found "GET the deleted repository: 404"
api DELETE "/api/v1/repositories/$R3"
is "$API_STATUS" 204 "DELETE an unused repository: 204"

done_testing
