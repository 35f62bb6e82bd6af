#!/usr/bin/env bash
# test-rebuild-catalog.sh - a lost catalog rebuilt from the manifests next to
# the backup files: after a full, two incrementals and a failed job of a VM
# with two disks, the catalog is deleted and `strata rebuild-catalog` makes it
# again; the listing, the change ids, a restore and the next incremental are
# as before.  A truncated manifest is reported and its job skipped, nothing
# is deleted; a catalog with backups, and a running hub, are refused.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo jq curl

SIZE=$((32 * MiB))
start_hub

src_write () # DISK PATTERN OFFSET LENGTH
{
  qemu-io -f qcow2 -c "write -P $2 $3 $4" "$T/src$1.qcow2" > /dev/null 2> "$T/qio.err" ||
    fail "write $2 at $3 into source $1" "$(cat "$T/qio.err")"
}

put_rb_vm ()
{
  api PUT /api/v1/vms/rb1 "$(jq -cn --arg a "$T/src0.qcow2" --arg b "$T/src1.qcow2" \
    --argjson s $SIZE '{disks:[{disk_index:0,size_bytes:$s,source:$a},
                              {disk_index:1,size_bytes:$s,source:$b}]}')"
}

# backup TYPE: start a hub-driven backup and wait (bounded) for its end;
# $B is its id, $JOB its last state.
backup ()
{
  api POST /api/v1/backups "{\"vm_name\":\"rb1\",\"backup_type\":\"$1\"}"
  B=$(jqb .backup_id)
  wait_for 120 job_ended "$B"
  JOB=$(curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups/$B")
}

# listing: the completed backups, reduced to what the rebuild restores.
listing ()
{
  curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups?status=completed" |
    jq -S '[.backups[] | {backup_id, backup_type, vm_name, driver,
             disks: [.disks[] | {disk_index, backup_type, parent_backup_id, change_id,
                                 size_bytes, bytes_transferred, qcow2_path}]
                    | sort_by(.disk_index)}] | sort_by(.backup_id)'
}

changeids ()
{
  local d
  for d in 0 1; do
    curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups/changeid?vm_name=rb1&disk_id=$d" |
      jq -cS .
  done
}

# lose_catalog: the catalog is gone (SQLite files, or the MariaDB database).
lose_catalog ()
{
  if [ "$TEST_DB" = mariadb ]; then
    $STRATA_TEST_MARIADB_ROOT -e "DROP DATABASE $CATALOG_DB; CREATE DATABASE $CATALOG_DB"
  else
    rm -f "$CATALOG" "$CATALOG-wal" "$CATALOG-shm"
  fi
}

rebuild () # ARGS...: run rebuild-catalog on $DATA; $RB_OUT, $RB_ERR, $RB_RC
{
  RB_OUT=$("$STRATA" rebuild-catalog --data-dir "$DATA" "${_hub_db_args[@]}" "$@" \
             2> "$T/rebuild.err")
  RB_RC=$?
  RB_ERR=$(cat "$T/rebuild.err")
}

repo_files ()
{
  (cd "$DATA/repository" && find . -type f | sort)
}

for d in 0 1; do qemu-img create -q -f qcow2 "$T/src$d.qcow2" $SIZE; done
src_write 0 0x11 0 4M
src_write 1 0x21 1M 3M
put_rb_vm
is "$API_STATUS" 201 "PUT a VM with two disks"

# --- Identity files ----------------------------------------------------------
is "$(jq -r '[.id, .name, .type, (.created_at | type)] | join(" ")' \
        "$DATA/repository/strata-repository.json")" "default default local string" \
   "the default repository has its strata-repository.json"
is "$(jq -r --arg p "$(realpath "$DATA/repository")" \
        '[.[] | select(.path == $p) | .id + "/" + .type] | join(" ")' "$DATA/repositories.json")" \
   "default/local" "DATA/repositories.json lists it"
mkdir -p "$T/r2"
api POST /api/v1/repositories "{\"id\":\"second\",\"name\":\"two\",\"type\":\"local\",\"path\":\"$T/r2\"}"
is "$API_STATUS" 201 "create a second repository"
is "$(jq -r '.id + "/" + .name' "$T/r2/strata-repository.json")" "second/two" \
   "it gets its strata-repository.json"
is "$(jq -r '[.[].id] | sort | join(" ")' "$DATA/repositories.json")" "default second" \
   "and repositories.json lists both"
api DELETE /api/v1/repositories/second
is "$API_STATUS" 204 "delete it"
is "$(jq -r '[.[].id] | join(" ")' "$DATA/repositories.json")" "default" \
   "repositories.json is rewritten without it"

# --- A chain with a failed job in it -----------------------------------------
backup full
is "$(jq -r .status <<< "$JOB")" completed "the full completes"
B1=$B
src_write 0 0x12 8M 1M
src_write 1 0x22 20M 2M
backup incremental
is "$(jq -r .status <<< "$JOB")" completed "an incremental completes"
B2=$B
mv "$T/src1.qcow2" "$T/away.qcow2"
backup incremental
is "$(jq -r .status <<< "$JOB")" failed "a backup with a source gone fails"
mv "$T/away.qcow2" "$T/src1.qcow2"
src_write 0 0x13 12M 1M
src_write 1 0x23 2M 1M
backup incremental
is "$(jq -r .status <<< "$JOB")" completed "a second incremental completes"
B3=$B
for d in 0 1; do cp "$T/src$d.qcow2" "$T/last-$d.qcow2"; done

is "$(for b in $B1 $B2 $B3; do ls "$DATA"/repository/ctx-*/disk*/"$b".qcow2.manifest; done \
        2>/dev/null | wc -l)" 6 "every file of a completed backup has its manifest"
BEFORE=$(listing)
is "$(jq -r '[.[].backup_id] | length' <<< "$BEFORE")" 3 "three completed backups are listed"
CHANGEIDS=$(changeids)
like "$CHANGEIDS" '"change_id":' "the change ids answer"

# --- Refusals ----------------------------------------------------------------
rebuild
isnt "$RB_RC" 0 "rebuild-catalog while the hub runs is refused"
like "$RB_ERR" "hub is running" "and says a hub runs on the folder"
stop_hub
FILES=$(repo_files)
rebuild
isnt "$RB_RC" 0 "rebuild-catalog into a catalog that has backups is refused"
like "$RB_ERR" "already holds 4 backup job" "and says so"
is "$(repo_files)" "$FILES" "no file changed"

# --- The catalog is lost -----------------------------------------------------
lose_catalog
# A hub started on the empty catalog first (the careless way) must not take
# the completed backups for leftovers of a crash.
start_hub
is "$(repo_files)" "$FILES" "a hub started on an empty catalog deletes no completed backup"
like "$(cat "$HUB_LOG")" "completed backup \(it has a manifest\) of a context the catalog does not know: it is kept" \
     "and says why it keeps them"
stop_hub
lose_catalog
rebuild --dry-run
is "$RB_RC" 0 "a dry run succeeds"
like "$RB_OUT" "jobs rebuilt: 3" "it plans three jobs"
like "$RB_OUT" "dry run: nothing was written" "and says nothing was written"
if [ "$TEST_DB" != mariadb ]; then
  ok "no catalog was made by the dry run" test ! -e "$CATALOG"
fi
rebuild --json
is "$RB_RC" 0 "rebuild-catalog succeeds"
is "$(jq -r '[(.contexts | length), (.jobs | length), (.disks | length)] | join(" ")' <<< "$RB_OUT")" \
   "1 3 6" "one context, three jobs, six disks rebuilt"
is "$(jq -r '[.jobs[].backup_id] | join(" ")' <<< "$RB_OUT")" "$B1 $B2 $B3" \
   "parents first"
is "$(jq -r '.repositories[0].id + " " + .repositories[0].from' <<< "$RB_OUT")" \
   "default strata-repository.json" "the repository's id comes from its identity file"
is "$(repo_files)" "$FILES" "no file changed"
rebuild
isnt "$RB_RC" 0 "a second rebuild is refused"

start_hub
is "$(listing)" "$BEFORE" "the listing is the same"
is "$(changeids)" "$CHANGEIDS" "the change ids are the same"
for d in 0 1; do
  api POST /api/v1/restores "{\"backup_id\":\"$B3\",\"disk_index\":$d}"
  is "$API_STATUS" 201 "restore disk $d of the last point"
  ok "it reads as the source did" qimg compare -q -U -f qcow2 -F raw \
     "$T/last-$d.qcow2" "$(answer_uri)"
  api DELETE "/api/v1/restores/$(jqb .restore_id)"
done
put_rb_vm   # the inventory is not in the manifests
like "$API_STATUS" "^20[01]$" "PUT the VM again (its sources)"
src_write 0 0x14 16M 1M
backup incremental
is "$(jq -r .status <<< "$JOB")" completed "the next incremental completes"
is "$(jq -r '[.disks[] | .backup_type + "/" + .parent_backup_id] | join(" ")' <<< "$JOB")" \
   "incremental/$B3 incremental/$B3" "it continues the chain from the last point"
B4=$B

# --- A damaged manifest -------------------------------------------------------
stop_hub
lose_catalog
BAD=$(ls "$DATA"/repository/ctx-*/disk1/"$B4".qcow2.manifest)
truncate -s 100 "$BAD"
FILES=$(repo_files)
rebuild
is "$RB_RC" 0 "rebuild-catalog with a truncated manifest succeeds"
like "$RB_OUT" "jobs rebuilt: 3" "the other three jobs are rebuilt"
like "$RB_OUT" "$B4.qcow2: unreadable manifest" "the truncated manifest is reported"
like "$RB_OUT" "disk0/$B4.qcow2: job incomplete" "the job's other disk is reported skipped"
is "$(repo_files)" "$FILES" "nothing is deleted"

done_testing
