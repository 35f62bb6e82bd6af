#!/usr/bin/env bash
# test-cascade-delete.sh - deleting backups and contexts: a backup that a later
# one is backed by is kept unless cascade=true; running jobs are never deleted
# (contexts only with force=true, which drops the exports); a context goes with
# its jobs, disks and folder; and the catalog itself cascades (ON DELETE CASCADE).

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io nbdinfo jq curl sqlite3

SIZE=$((64 * MiB))
start_hub
REPO=$DATA/repository

# full_backup VM: a completed backup of every disk of VM (type $2, default full).
backup_done ()
{
  local i
  start_backup "$1" "${2:-full}"
  for i in "${!NBD_URI[@]}"; do
    write_ok "${NBD_URI[$i]}" "0x$((i + 1))$((${#BACKUPS[@]} % 10))" 0 64k
    complete_disk "$BID" "$i" "c-$BID-$i" 65536
  done
  BACKUPS+=("$BID")
}

snapshot ()
{
  echo "$(catalog_counts) $(sql "SELECT id, status FROM backup_jobs ORDER BY id" | tr '|' ':' | sql_join ,)"
  repo_listing "$REPO"
}

count_job ()
{
  sql "SELECT count(*) FROM backup_jobs WHERE id='$1'"
}

# --- Context A: full F <- I1 <- I2 completed, I3 running.
BACKUPS=()
put_vm cd1 $SIZE $SIZE
backup_done cd1 full;        F=$BID; CTX_A=$CTX; F_FILES=("${QCOW2[@]}")
backup_done cd1 incremental; I1=$BID; I1_FILES=("${QCOW2[@]}")
backup_done cd1 incremental; I2=$BID; I2_FILES=("${QCOW2[@]}")
start_backup cd1 incremental; I3=$BID; I3_FILES=("${QCOW2[@]}"); I3_URIS=("${NBD_URI[@]}")

# --- Context B: another VM, all completed, must survive everything done to A.
put_vm cd2 $SIZE
backup_done cd2 full;        B1=$BID; CTX_B=$CTX
backup_done cd2 incremental; B2=$BID
B_LISTING=$(repo_listing "$REPO/$CTX_B")

before=$(snapshot)
api DELETE "/api/v1/contexts/$CTX_A"
is_error 409 conflict "DELETE context while a backup runs: 409"
api DELETE "/api/v1/backups/$I3"
is_error 409 conflict "DELETE a running backup: 409"
api DELETE "/api/v1/backups/$F?cascade=true"
is_error 409 conflict "DELETE ?cascade=true when a dependent runs: 409"
api DELETE "/api/v1/backups/$F"
is_error 409 conflict "DELETE a backup a later one is backed by: 409"
is "$(snapshot)" "$before" "the refused deletes changed neither catalog nor repository"
ok "the running backup's export still serves" export_up "${I3_URIS[0]}"

api POST "/api/v1/backups/$I3/cancel" ''
is "$API_STATUS/$(jqb .status)" "200/cancelled" "cancel the running incremental"
api DELETE "/api/v1/backups/$I3"
is "$API_STATUS" 200 "DELETE the cancelled backup: 200"
is "$(jqb '.deleted_backups | join(",")')" "$I3" "it reports exactly that backup deleted"
is "$(count_job "$I3")|$(sql "SELECT count(*) FROM backup_disks WHERE backup_job_id='$I3'")" "0|0" "its job and disk rows are gone"
api GET "/api/v1/backups/$I3"
is_error 404 not_found "GET the deleted backup: 404"

before=$(snapshot)
api DELETE "/api/v1/backups/$I1"
is_error 409 conflict "DELETE I1 while I2 is backed by it: 409"
is "$(snapshot)" "$before" "nothing changed"

api DELETE "/api/v1/backups/$I2"
is "$API_STATUS/$(jqb '.deleted_backups | join(",")')" "200/$I2" "DELETE the newest backup I2: 200"
ok "I2's files are gone" eval "[ ! -e '${I2_FILES[0]}' ] && [ ! -e '${I2_FILES[1]}' ]"
ok "I1's files stay" eval "[ -f '${I1_FILES[0]}' ] && [ -f '${I1_FILES[1]}' ]"
is "$(count_job "$I2")|$(count_job "$I1")" "0|1" "I2's row is gone, I1's stays"
api GET "/api/v1/backups/changeid?vm_name=cd1&disk_id=1"
is "$(jqb .backup_id)" "$I1" "changeid now comes from I1"

api DELETE "/api/v1/backups/$F?cascade=true"
is "$API_STATUS" 200 "DELETE F ?cascade=true: 200"
is "$(jqb '.deleted_backups | sort | join(",")')" "$(printf '%s\n' "$F" "$I1" | sort | paste -sd,)" "it deletes F and its dependent I1"
is "$(count_job "$F")|$(count_job "$I1")|$(sql "SELECT count(*) FROM backup_disks WHERE vm_backup_context_id='$CTX_A'")" "0|0|0" "their job and disk rows are gone"
ok "their files are gone" eval "[ -z \"\$(find '$REPO/$CTX_A' -name '*.qcow2')\" ]"
is "$(sql "SELECT count(*) FROM vm_backup_contexts WHERE context_id='$CTX_A'")" 1 "the context itself stays"
api GET "/api/v1/backups/changeid?vm_name=cd1&disk_id=0"
is "$API_STATUS|$(jqb .change_id)|$(jqb .backup_id)" "200||null" "changeid: no previous backup any more"

# The next backup of cd1 is a fresh chain in the same context; it runs.
start_backup cd1 incremental
R=$BID; R_URIS=("${NBD_URI[@]}")
is "$(jqb '.context_id + " " + ([.disks[] | .backup_type + "/" + (.full_reason != null | tostring)] | join(" "))')" \
   "$CTX_A full/true full/true" "the next incremental reuses the context, each disk taken as full"
before=$(snapshot)
api DELETE "/api/v1/contexts/$CTX_A"
is_error 409 conflict "DELETE context with a running backup: 409"
is "$(snapshot)" "$before" "nothing changed"
api DELETE "/api/v1/contexts/$CTX_A?force=true"
is "$API_STATUS" 200 "DELETE context ?force=true: 200"
is "$(jqb '.deleted_backups | join(",")')" "$R" "it reports the running backup deleted"
ok "the running backup's export is dropped" export_gone "${R_URIS[0]}"
is "$(sql "SELECT count(*) FROM vm_backup_contexts WHERE context_id='$CTX_A'")|$(sql "SELECT count(*) FROM backup_jobs WHERE vm_backup_context_id='$CTX_A'")|$(sql "SELECT count(*) FROM backup_disks WHERE vm_backup_context_id='$CTX_A'")" \
   "0|0|0" "context, jobs and disks are gone from the catalog"
ok "the context's folder is gone" test ! -e "$REPO/$CTX_A"
api GET "/api/v1/contexts/$CTX_A"
is_error 404 not_found "GET the deleted context: 404"
api POST "/api/v1/backups/$R/complete" '{"disk_id":0}'
is_error 404 not_found "completing a disk of the deleted job: 404"

# Context B was not touched.
is "$(sql "SELECT count(*) FROM backup_jobs WHERE vm_backup_context_id='$CTX_B'")|$(sql "SELECT count(*) FROM backup_disks WHERE vm_backup_context_id='$CTX_B'")" "2|2" "the other VM's context keeps its rows"
is "$(repo_listing "$REPO/$CTX_B")" "$B_LISTING" "and its files"

# Deleting a context with only finished backups needs no force.
api DELETE "/api/v1/contexts/$CTX_B"
is "$API_STATUS" 200 "DELETE an idle context: 200"
is "$(jqb '.deleted_backups | sort | join(",")')" "$(printf '%s\n' "$B1" "$B2" | sort | paste -sd,)" "it reports both its backups"
is "$(sql "SELECT count(*) FROM vm_backup_contexts")|$(sql "SELECT count(*) FROM backup_jobs")|$(sql "SELECT count(*) FROM backup_disks")" "0|0|0" "the catalog holds no context, job or disk"
ok "its folder is gone" test ! -e "$REPO/$CTX_B"
api GET /api/v1/vms/cd2
is "$API_STATUS" 200 "the VM stays in the inventory"

# --- The catalog cascades by itself: on a copy of the database, with the hub
# stopped, deleting a context row with foreign keys on removes its jobs and disks.
BACKUPS=()
put_vm cd3 $SIZE $SIZE
backup_done cd3 full;        C1=$BID; CTX_C=$CTX
backup_done cd3 incremental; C2=$BID
stop_hub
if [ "$TEST_DB" = sqlite ]; then
  ok "copy the catalog" sqlite3 "$CATALOG" ".backup '$T/copy.db'"
  is "$(sqlite3 "$T/copy.db" "SELECT count(*) FROM backup_jobs WHERE vm_backup_context_id='$CTX_C'")|$(sqlite3 "$T/copy.db" "SELECT count(*) FROM backup_disks WHERE vm_backup_context_id='$CTX_C'")" \
     "2|4" "the copy holds the context's 2 jobs and 4 disks"
  ok "DELETE FROM vm_backup_contexts with foreign keys on" sqlite3 "$T/copy.db" "PRAGMA foreign_keys=ON; DELETE FROM vm_backup_contexts WHERE context_id='$CTX_C';"
  is "$(sqlite3 "$T/copy.db" "SELECT count(*) FROM backup_jobs WHERE vm_backup_context_id='$CTX_C'")|$(sqlite3 "$T/copy.db" "SELECT count(*) FROM backup_disks")" \
     "0|0" "ON DELETE CASCADE removed its jobs and disks"
  ok "the copy passes foreign_key_check" eval "[ -z \"\$(sqlite3 '$T/copy.db' 'PRAGMA foreign_key_check;')\" ]"
  ok "copy the catalog again" sqlite3 "$CATALOG" ".backup '$T/copy2.db'"
  ok "DELETE FROM backup_jobs (the newest job) with foreign keys on" sqlite3 "$T/copy2.db" "PRAGMA foreign_keys=ON; DELETE FROM backup_jobs WHERE id='$C2';"
  is "$(sqlite3 "$T/copy2.db" "SELECT count(*) FROM backup_disks WHERE backup_job_id='$C2'")|$(sqlite3 "$T/copy2.db" "SELECT count(*) FROM backup_disks WHERE backup_job_id='$C1'")" \
     "0|2" "deleting a job row removes its disks only"
  sqlite3 "$CATALOG" ".backup '$T/copy3.db'"
  nok "deleting the full's job row while an incremental is based on it is refused by the foreign keys" \
      sqlite3 "$T/copy3.db" "PRAGMA foreign_keys=ON; DELETE FROM backup_jobs WHERE id='$C1';"
  is "$(sqlite3 "$T/copy3.db" "SELECT count(*) FROM backup_jobs")" 2 "and both jobs stay"

else
  # MariaDB: the same checks inside transactions that are rolled back.  InnoDB
  # checks foreign keys row by row, so a context whose disks form a chain is
  # deleted by hand disks newest first, then the context (as the hub does);
  # a bare DELETE of the context row is refused and leaves everything.
  is "$(sql "SELECT count(*) FROM backup_jobs WHERE vm_backup_context_id='$CTX_C'")|$(sql "SELECT count(*) FROM backup_disks WHERE vm_backup_context_id='$CTX_C'")" \
     "2|4" "the catalog holds the context's 2 jobs and 4 disks"
  nok "a bare DELETE of the context row of a chain is refused by the foreign keys" \
      sql_write "DELETE FROM vm_backup_contexts WHERE context_id='$CTX_C'"
  is "$(sql "SELECT count(*) FROM backup_jobs")|$(sql "SELECT count(*) FROM backup_disks")" "2|4" \
     "and nothing went"
  is "$(sql_write "START TRANSACTION;
        DELETE FROM backup_disks WHERE vm_backup_context_id='$CTX_C' ORDER BY id DESC;
        DELETE FROM vm_backup_contexts WHERE context_id='$CTX_C';
        SELECT count(*) FROM backup_jobs WHERE vm_backup_context_id='$CTX_C';
        SELECT count(*) FROM backup_disks; ROLLBACK" | sql_join '|')" \
     "0|0" "disks newest first, then the context: ON DELETE CASCADE removed its jobs"
  is "$(sql_write "START TRANSACTION; DELETE FROM backup_jobs WHERE id='$C2';
        SELECT count(*) FROM backup_disks WHERE backup_job_id='$C2';
        SELECT count(*) FROM backup_disks WHERE backup_job_id='$C1'; ROLLBACK" | sql_join '|')" \
     "0|2" "deleting a job row removes its disks only"
  nok "deleting the full's job row while an incremental is based on it is refused by the foreign keys" \
      sql_write "DELETE FROM backup_jobs WHERE id='$C1'"
  is "$(sql "SELECT count(*) FROM backup_jobs")|$(sql "SELECT count(*) FROM backup_disks")" "2|4" \
     "and both jobs stay, with their disks"
fi

done_testing
