#!/usr/bin/env bash
# tests/bench/bench.sh - "make bench": strata's data path against its peers,
# measured in the same run on the same machine.  Prints figures and ratios;
# asserts nothing about speed (machines are noisy), but every copy made is
# checked for correctness, so a fast wrong answer cannot pass for a result.
#
#   1. full backup of a disk holding 2 GiB of data: `strata backup` against
#      `nbdcopy` from the same source into the same kind of target (a fresh
#      QCOW2 that the hub exports);
#   2. incremental with 5% of the blocks dirty, in scattered 64 KiB runs:
#      time, and the bytes the overlay holds against the bytes made dirty;
#   3. full backup of a 100 TiB virtual disk holding 1 GiB of data;
#   4. restore of a full plus 3 incrementals to a raw file: `strata restore`
#      (through the hub's NBD export, fsynced) against `qemu-img convert` of
#      the same chain followed by a sync of its output;
#   5. prune of a chain of the same disk, a full plus 20 incrementals of 5%
#      scattered changes each, down to its newest 3 points (one task, from
#      the request to its end) against what it replaces: deleting the chain
#      and taking a new full of the disk; the bytes freed; every kept point
#      restored and compared with the disk as it was;
#   6. full backup of the disk of test 1 with block hashing (as always)
#      against the same with hashing off (STRATA_COPY_HASH=0): the cost of the
#      manifests (goal: ratio at most 1.05);
#   7. verify of the chain of test 4 (a full plus 3 incrementals: one task,
#      from the request to its end) against reading the same files with
#      `cat > /dev/null`.
#
# BENCH_DATA_MIB (default 2048) scales tests 1, 2, 4 and 5; BENCH_DIR picks
# the scratch folder's parent (default $TMPDIR or /tmp); it needs about 5x
# the data size.

set -u
TEST_NAME=bench
. "$(dirname "$0")/../functions.sh"

BENCH_DATA_MIB=${BENCH_DATA_MIB:-2048}
BENCH_ROUNDS=${BENCH_ROUNDS:-4}
DIRTY_PERCENT=5
HUGE_VIRTUAL=100T
HUGE_DATA_MIB=${BENCH_HUGE_DATA_MIB:-1024}

for c in qemu-img qemu-io qemu-nbd nbdcopy jq curl; do
  command -v "$c" > /dev/null || { echo "bench: missing $c" >&2; exit 2; }
done

say () { printf '%s\n' "$*"; }
die () { printf 'bench: %s\n' "$*" >&2; _tap_done=1; exit 1; }

# now: seconds since the epoch, with nanoseconds.
now () { date +%s.%N; }
# secs START END: END - START with 2 decimals.
secs () { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# ratio A B: A / B with 2 decimals.
ratio () { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# best A B: the smaller of two durations (A may be empty).
best () { if [ -z "$1" ]; then echo "$2"; else awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'; fi; }
mib () { awk -v a="$1" 'BEGIN { printf "%.1f", a / 1048576 }'; }

hub_url () { echo "http://127.0.0.1:$HUB_PORT"; }

# fill_random RAW OFFSET_MIB LEN_MIB: write random data into a raw file.
fill_random ()
{
  dd if=/dev/urandom of="$1" bs=1M seek="$2" count="$3" conv=notrunc status=none
}

# strata_backup VM TYPE DISK...: run the agent with --json; sets BACKUP_JSON.
strata_backup ()
{
  local vm=$1 type=$2
  shift 2
  BACKUP_JSON=$("$STRATA" backup --hub "$(hub_url)" --vm "$vm" --type "$type" --json "$@" \
                  2> "$T/agent.err") || die "strata backup failed: $(cat "$T/agent.err")"
}

# top_layer_bytes QCOW2: bytes of data the image itself holds (not its
# backing chain): the depth-0 data extents of qemu-img map.
top_layer_bytes ()
{
  qemu-img map --output=json "$1" |
    jq '[.[] | select(.depth == 0 and .data == true) | .length] | add // 0'
}

machine ()
{
  say "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
      "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
  say "versions: strata $("$STRATA" version 2>/dev/null | head -n1), $(qemu-img --version | head -n1)," \
      "nbdcopy $(nbdcopy --version 2>/dev/null | head -n1 | awk '{print $2}')"
}

start_hub
machine
say ""

# ---- 1. full backup: strata against nbdcopy --------------------------------
SRC_MIB=$((BENCH_DATA_MIB * 2))
say "== 1. full backup of a ${SRC_MIB} MiB disk holding ${BENCH_DATA_MIB} MiB of data"
raw=$T/src1.raw
truncate -s "${SRC_MIB}M" "$raw"
# Data in 64 MiB runs, every other run: half data, half holes.
chunk=64
for ((off = 0; off < SRC_MIB; off += 2 * chunk)); do
  fill_random "$raw" "$off" "$chunk"
done
src=$T/src1.qcow2
qemu-img convert -f raw -O qcow2 "$raw" "$src" || die "qemu-img convert"
size=$(stat -c %s "$raw")

# Each copy is made BENCH_ROUNDS times, alternating the two tools, and the
# best time of each counts: the disk's write-back makes single runs noisy.
cat "$src" > /dev/null
t_nbdcopy= t_strata= s_nbdcopy= s_strata=
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  # nbdcopy into a fresh hub export: start a full job, copy, complete.
  api POST /api/v1/backups "{\"vm_name\":\"bench-peer-$round\",\"backup_type\":\"full\",\"disks\":[{\"disk_index\":0,\"size_bytes\":$size}]}"
  [ "$API_STATUS" = 201 ] || die "start for nbdcopy: $API_STATUS $API_BODY"
  peer_id=$(jqb .backup_id)
  peer_uri=$(answer_uri '.disks[0].nbd_uri')
  sync
  t0=$(now)
  nbdcopy --flush -- [ qemu-nbd -r -f qcow2 "$src" ] "$peer_uri" || die "nbdcopy failed"
  t1=$(now)
  t_nbdcopy=$(best "$t_nbdcopy" "$(secs "$t0" "$t1")")
  s_nbdcopy+=" $(secs "$t0" "$t1")"
  api POST "/api/v1/backups/$peer_id/complete" '{"disk_id":0}'
  [ "$API_STATUS" = 200 ] || die "complete after nbdcopy: $API_STATUS $API_BODY"
  api GET "/api/v1/backups/$peer_id"
  qemu-img compare -q -f qcow2 -F qcow2 "$src" "$(jqb '.disks[0].qcow2_path')" ||
    die "nbdcopy's copy differs from the source"

  # The last round's backup starts the chain of tests 2 and 4.
  vm=bench-vm
  [ "$round" -lt "$BENCH_ROUNDS" ] && vm=bench-vm-$round
  sync
  t0=$(now)
  strata_backup "$vm" full "$src"
  t1=$(now)
  t_strata=$(best "$t_strata" "$(secs "$t0" "$t1")")
  s_strata+=" $(secs "$t0" "$t1")"
  full_id=$(jq -r .backup_id <<< "$BACKUP_JSON")
  api GET "/api/v1/backups/$full_id"
  qemu-img compare -q -f qcow2 -F qcow2 "$src" "$(jqb '.disks[0].qcow2_path')" ||
    die "strata's backup differs from the source"
done
say "nbdcopy (copy + flush):              best ${t_nbdcopy} s of:${s_nbdcopy}"
say "strata backup (start..completed):    best ${t_strata} s of:${s_strata}"
say "   last strata run:                  $(jq -c '.disks[0] | {mode, bytes_read, bytes_written, bytes_zero, seconds}' <<< "$BACKUP_JSON")"
say "ratio strata / nbdcopy:              $(ratio "$t_strata" "$t_nbdcopy")   (goal: <= 1.00)"
rm -f "$raw"
say ""

# ---- 2. incremental, 5% dirty in scattered 64 KiB runs ---------------------
say "== 2. incremental with ${DIRTY_PERCENT}% of the 64 KiB blocks dirty, scattered"
blocks=$((size / 65536))
ndirty=$((blocks * DIRTY_PERCENT / 100))
# Distinct random blocks, none adjacent to another (so no run is longer than
# 64 KiB), written with qemu-io in one process.
shuf -i 0-$(((blocks - 1) / 2)) -n "$ndirty" --random-source=<(yes 42) |
  awk '{ printf "write -P 0x5a %d 64k\n", $1 * 2 * 65536 }' > "$T/dirty.cmds"
qemu-io -f qcow2 "$src" < "$T/dirty.cmds" > /dev/null || die "qemu-io writes"
dirty_bytes=$((ndirty * 65536))
t0=$(now)
strata_backup bench-vm incremental "$src"
t1=$(now)
inc_id=$(jq -r .backup_id <<< "$BACKUP_JSON")
api GET "/api/v1/backups/$inc_id"
inc_file=$(jqb '.disks[0].qcow2_path')
[ "$(jqb '.disks[0].backup_type')" = incremental ] || die "the second backup is not incremental"
qemu-img compare -q -f qcow2 -F qcow2 "$src" "$inc_file" || die "the incremental differs from the source"
held=$(top_layer_bytes "$inc_file")
say "dirty data:                          $(mib "$dirty_bytes") MiB in $ndirty runs of 64 KiB"
say "strata incremental:                  $(secs "$t0" "$t1") s   ($(jq -c '.disks[0] | {mode, bytes_read, bytes_written, bytes_zero, seconds}' <<< "$BACKUP_JSON"))"
say "overlay holds:                       $(mib "$held") MiB = $(ratio "$held" "$dirty_bytes") x the dirty data   (goal: about 1.00)"
say ""

# ---- 4. (chain for it) two more incrementals -------------------------------
for round in 2 3; do
  shuf -i 0-$((blocks - 1)) -n "$ndirty" --random-source=<(yes "$round") |
    awk -v p="$round" '{ printf "write -P %d %d 64k\n", p, $1 * 65536 }' > "$T/dirty.cmds"
  qemu-io -f qcow2 "$src" < "$T/dirty.cmds" > /dev/null || die "qemu-io writes"
  strata_backup bench-vm incremental "$src"
done
last_id=$(jq -r .backup_id <<< "$BACKUP_JSON")
api GET "/api/v1/backups/$last_id"
last_file=$(jqb '.disks[0].qcow2_path')

# ---- 3. 100 TiB virtual disk, 1 GiB of data --------------------------------
say "== 3. full backup of a ${HUGE_VIRTUAL} virtual disk holding ${HUGE_DATA_MIB} MiB of data"
huge=$T/huge.qcow2
qemu-img create -q -f qcow2 "$huge" "$HUGE_VIRTUAL"
# 16 runs of data spread over the whole virtual size.
huge_bytes=$(qemu-img info --output=json "$huge" | jq '.["virtual-size"]')
run_mib=$((HUGE_DATA_MIB / 16))
fill_random "$T/run.raw" 0 "$run_mib"
for i in $(seq 0 15); do
  off=$(( (huge_bytes / 16) * i / 1048576 * 1048576 ))
  printf 'write -s %s %d %dM\n' "$T/run.raw" "$off" "$run_mib"
done > "$T/huge.cmds"
qemu-io -f qcow2 "$huge" < "$T/huge.cmds" > /dev/null || die "qemu-io writes (huge)"
rm -f "$T/run.raw"
t0=$(now)
strata_backup bench-huge full "$huge"
t1=$(now)
huge_id=$(jq -r .backup_id <<< "$BACKUP_JSON")
api GET "/api/v1/backups/$huge_id"
huge_file=$(jqb '.disks[0].qcow2_path')
[ "$(top_layer_bytes "$huge_file")" = "$((run_mib * 16 * 1048576))" ] ||
  die "the 100 TiB backup does not hold exactly the data written"
say "strata backup:                       $(secs "$t0" "$t1") s   ($(jq -c '.disks[0] | {mode, bytes_read, bytes_written, bytes_zero, seconds}' <<< "$BACKUP_JSON"))   (goal: seconds)"
say ""

# ---- 4. restore of full + 3 incrementals -----------------------------------
say "== 4. restore of a full plus 3 incrementals to a raw file"
t_convert= t_restore= s_convert= s_restore=
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  rm -f "$T/peer.raw" "$T/restored.raw"
  sync
  t0=$(now)
  # qemu-img convert leaves its output in the page cache; strata restore
  # fsyncs before it returns, so the peer's time includes a sync of its file.
  qemu-img convert -f qcow2 -O raw "$last_file" "$T/peer.raw" || die "qemu-img convert of the chain"
  sync "$T/peer.raw"
  t1=$(now)
  t_convert=$(best "$t_convert" "$(secs "$t0" "$t1")")
  s_convert+=" $(secs "$t0" "$t1")"
  sync
  t0=$(now)
  "$STRATA" restore --hub "$(hub_url)" --backup "$last_id" --disk 0 --output "$T/restored.raw" \
    --format raw > /dev/null 2> "$T/agent.err" || die "strata restore failed: $(cat "$T/agent.err")"
  t1=$(now)
  t_restore=$(best "$t_restore" "$(secs "$t0" "$t1")")
  s_restore+=" $(secs "$t0" "$t1")"
done
cmp -s "$T/peer.raw" "$T/restored.raw" || die "strata's restore differs from qemu-img convert's"
say "qemu-img convert -O raw + sync FILE:  best ${t_convert} s of:${s_convert}"
say "strata restore --format raw:         best ${t_restore} s of:${s_restore}"
say "   restored file uses                $(mib $(($(stat -c %b "$T/restored.raw") * 512))) MiB of $(mib "$size") MiB (sparse)"
say "ratio strata / qemu-img:             $(ratio "$t_restore" "$t_convert")   (goal: <= 1.00)"
rm -f "$T/peer.raw" "$T/restored.raw"
say ""

# ---- 5. prune a full + 20 incrementals down to 3 points ---------------------
PRUNE_INCS=20
PRUNE_KEEP=3
say "== 5. prune of a full plus $PRUNE_INCS incrementals (${DIRTY_PERCENT}% scattered each) down to $PRUNE_KEEP points"
# The chain, of the disk of test 1; the kept points' contents saved as they
# are taken, to compare their restores with.
strata_backup bench-prune full "$src"
kept=()
for ((round = 1; round <= PRUNE_INCS; round++)); do
  shuf -i 0-$((blocks - 1)) -n "$ndirty" --random-source=<(yes "prune$round") |
    awk -v p="$((round + 16))" '{ printf "write -P %d %d 64k\n", p, $1 * 65536 }' > "$T/dirty.cmds"
  qemu-io -f qcow2 "$src" < "$T/dirty.cmds" > /dev/null || die "qemu-io writes"
  strata_backup bench-prune incremental "$src"
  [ "$(jq -r '.disks[0].mode' <<< "$BACKUP_JSON")" = incremental ] || die "backup $round of the chain is not incremental"
  if [ "$round" -gt $((PRUNE_INCS - PRUNE_KEEP)) ]; then
    id=$(jq -r .backup_id <<< "$BACKUP_JSON")
    kept=("$id" "${kept[@]}")
    qemu-img convert -U -O raw "$src" "$T/ref-$id.raw" || die "saving the disk at $id"
  fi
done
ctx=$(curl -s "$(hub_url)/api/v1/contexts?vm_name=bench-prune" | jq -r '.contexts[0].context_id')
files_before=$(find "$DATA/repository/$ctx" -name '*.qcow2' | wc -l)
used_before=$(curl -s "$(hub_url)/api/v1/repositories/default" | jq .used_bytes)
sync
t0=$(now)
api POST "/api/v1/contexts/$ctx/prune" "{\"keep_last\":$PRUNE_KEEP}"
[ "$API_STATUS" = 202 ] || die "prune: $API_STATUS $API_BODY"
task=$(jqb .task_id)
# Polled often: the poll's period bounds the time's precision.
while [ "$(curl -s "$(hub_url)/api/v1/tasks/$task" | jq -r .status)" = running ]; do
  sleep 0.02
done
t1=$(now)
t_prune=$(secs "$t0" "$t1")
api GET "/api/v1/tasks/$task"
[ "$(jqb .status)" = completed ] || die "the prune task ended $(jqb .status): $(jqb .error)"
freed=$(jqb .result.bytes_freed)
steps=$(jqb .steps_done)
used_after=$(curl -s "$(hub_url)/api/v1/repositories/default" | jq .used_bytes)
files_after=$(find "$DATA/repository/$ctx" -name '*.qcow2' | wc -l)
left=$(curl -s "$(hub_url)/api/v1/backups?vm_name=bench-prune&limit=1000" | jq -r '[.backups[].backup_id] | join(" ")')
[ "$left" = "${kept[*]}" ] || die "after the prune the chain holds '$left', not '${kept[*]}'"
for id in "${kept[@]}"; do
  rm -f "$T/restored.raw"
  "$STRATA" restore --hub "$(hub_url)" --backup "$id" --disk 0 --output "$T/restored.raw" \
    --format raw > /dev/null 2> "$T/agent.err" || die "strata restore of $id failed: $(cat "$T/agent.err")"
  cmp -s "$T/ref-$id.raw" "$T/restored.raw" || die "kept point $id restores differently after the prune"
  rm -f "$T/ref-$id.raw" "$T/restored.raw"
done

# What a prune replaces: delete the chain, take a new full.
sync
t0=$(now)
api DELETE "/api/v1/contexts/$ctx"
[ "$API_STATUS" = 200 ] || die "delete of the chain: $API_STATUS $API_BODY"
strata_backup bench-prune full "$src"
t1=$(now)
t_refull=$(secs "$t0" "$t1")
refull_id=$(jq -r .backup_id <<< "$BACKUP_JSON")
api GET "/api/v1/backups/$refull_id"
qemu-img compare -q -f qcow2 -F qcow2 "$src" "$(jqb '.disks[0].qcow2_path')" ||
  die "the new full differs from the source"
say "strata prune (request..completed):   ${t_prune} s   ($steps step(s), $files_before files -> $files_after, kept points restore bit-identical)"
say "delete the chain + new full backup:  ${t_refull} s"
say "ratio prune / (delete + full):       $(ratio "$t_prune" "$t_refull")   (goal: < 1.00)"
say "bytes freed (task):                  $(mib "$freed") MiB; repository used $(mib "$used_before") -> $(mib "$used_after") MiB"

say ""

# ---- 6. full backup with and without block hashing ---------------------------
say "== 6. full backup of the disk of test 1 with and without block hashing"
# drop_vm VM: delete the VM's context (its backups and files), to keep the
# scratch space at one copy.
drop_vm ()
{
  local c
  c=$(context_of "$1")
  [ -n "$c" ] || return 0
  api DELETE "/api/v1/contexts/$c"
  [ "$API_STATUS" = 200 ] || die "delete of $1's context: $API_STATUS $API_BODY"
}
# hashed FILE: true/false, as the facts of the file's manifest say.
hashed ()
{
  grep -a -o '"hashed":[a-z]*' "$1.manifest" | tail -n1 | cut -d: -f2
}
t_hash= t_nohash= s_hash= s_nohash= nohash_honoured=yes
cat "$src" > /dev/null
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  sync
  t0=$(now)
  strata_backup "bench-hash-$round" full "$src"
  t1=$(now)
  t_hash=$(best "$t_hash" "$(secs "$t0" "$t1")")
  s_hash+=" $(secs "$t0" "$t1")"
  id=$(jq -r .backup_id <<< "$BACKUP_JSON")
  api GET "/api/v1/backups/$id"
  [ "$(hashed "$(jqb '.disks[0].qcow2_path')")" = true ] || die "the hashed full $id has no hashes"
  qemu-img compare -q -f qcow2 -F qcow2 "$src" "$(jqb '.disks[0].qcow2_path')" ||
    die "the hashed full differs from the source"
  drop_vm "bench-hash-$round"

  sync
  t0=$(now)
  STRATA_COPY_HASH=0 strata_backup "bench-nohash-$round" full "$src"
  t1=$(now)
  t_nohash=$(best "$t_nohash" "$(secs "$t0" "$t1")")
  s_nohash+=" $(secs "$t0" "$t1")"
  id=$(jq -r .backup_id <<< "$BACKUP_JSON")
  api GET "/api/v1/backups/$id"
  [ "$(hashed "$(jqb '.disks[0].qcow2_path')")" = false ] || nohash_honoured=no
  qemu-img compare -q -f qcow2 -F qcow2 "$src" "$(jqb '.disks[0].qcow2_path')" ||
    die "the full without hashes differs from the source"
  drop_vm "bench-nohash-$round"
done
say "strata backup, hashing:              best ${t_hash} s of:${s_hash}"
say "strata backup, STRATA_COPY_HASH=0:   best ${t_nohash} s of:${s_nohash}"
if [ "$nohash_honoured" = yes ]; then
  say "ratio hashing / no hashing:          $(ratio "$t_hash" "$t_nohash")   (goal: <= 1.05)"
else
  say "ratio hashing / no hashing:          n/a: STRATA_COPY_HASH=0 did not turn hashing off (the backups have hashes)"
fi
say ""

# ---- 7. verify of a full + 3 incrementals against cat ------------------------
say "== 7. verify of a full plus 3 incrementals against cat of their files and nbdcopy"
chain_files=()
f=$last_file
while [ -n "$f" ]; do
  chain_files+=("$f")
  b=$(qemu-img info -U --output=json "$f" | jq -r '."backing-filename" // empty')
  [ -n "$b" ] && f=${f%/*}/$b || f=
done
[ "${#chain_files[@]}" = 4 ] || die "the chain of $last_id has ${#chain_files[@]} files, not 4"
chain_bytes=$(stat -c %s "${chain_files[@]}" | awk '{ s += $1 } END { print s }')
t_verify= t_cat= s_verify= s_cat= t_nbd= s_nbd=
cat "${chain_files[@]}" > /dev/null
# The peer of verify's own reads: each file alone (no backing file) through
# a read-only qemu-nbd, copied to nowhere by nbdcopy.
nbd_read_all ()
{
  local f sock=$T/bench-nbd.sock pid
  for f in "${chain_files[@]}"; do
    rm -f "$sock"
    qemu-nbd -r -f qcow2 --shared=0 -k "$sock" \
      "json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"$f\"}}" &
    pid=$!
    while [ ! -S "$sock" ]; do sleep 0.01; done
    nbdcopy "nbd+unix:///?socket=$sock" null: || die "nbdcopy of $f"
    kill "$pid" 2> /dev/null; wait "$pid" 2> /dev/null
  done
}
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  t0=$(now)
  cat "${chain_files[@]}" > /dev/null
  t1=$(now)
  t_cat=$(best "$t_cat" "$(secs "$t0" "$t1")")
  s_cat+=" $(secs "$t0" "$t1")"

  t0=$(now)
  nbd_read_all
  t1=$(now)
  t_nbd=$(best "$t_nbd" "$(secs "$t0" "$t1")")
  s_nbd+=" $(secs "$t0" "$t1")"

  t0=$(now)
  api POST "/api/v1/backups/$last_id/verify"
  [ "$API_STATUS" = 202 ] || die "verify: $API_STATUS $API_BODY"
  task=$(jqb .task_id)
  # Polled often: the poll's period bounds the time's precision.
  while [ "$(curl -s "$(hub_url)/api/v1/tasks/$task" | jq -r .status)" = running ]; do
    sleep 0.02
  done
  t1=$(now)
  t_verify=$(best "$t_verify" "$(secs "$t0" "$t1")")
  s_verify+=" $(secs "$t0" "$t1")"
  api GET "/api/v1/tasks/$task"
  [ "$(jqb .status)" = completed ] || die "the verify task ended $(jqb .status): $(jqb .error)"
  [ "$(jqb .result.points[0].verify_state)" = ok ] ||
    die "the verify finds $last_id $(jqb .result.points[0].verify_state): $(jqb -c .result.points[0].disks)"
  verify_bytes=$(jqb .result.bytes_read)
done
say "cat FILES > /dev/null:               best ${t_cat} s of:${s_cat}   ($(mib "$chain_bytes") MiB, $(ratio "$(mib "$chain_bytes")" "$t_cat") MiB/s)"
say "strata verify (request..completed):  best ${t_verify} s of:${s_verify}   ($(mib "$verify_bytes") MiB read, $(ratio "$(mib "$verify_bytes")" "$t_verify") MiB/s)"
say "qemu-nbd + nbdcopy null:, each file: best ${t_nbd} s of:${s_nbd}"
say "ratio verify / cat:                  $(ratio "$t_verify" "$t_cat")   (time; cat reads the page cache, verify goes through qemu-nbd)"
say "ratio verify / qemu-nbd + nbdcopy:   $(ratio "$t_verify" "$t_nbd")   (time; the same reads, plus hashing, checks and the task; goal: <= 1.50)"

stop_hub > /dev/null
_tap_done=1
exit 0
