#!/usr/bin/env bash
# test-verify.sh - verify finds what went wrong with a chain's files, and
# only in the points that read through them.  A QCOW2 disk backed up with
# `strata backup`: a full and three incrementals, each layer holding data of
# its own.  Every point verifies ok (task, backup, listing).  Then one byte is
# flipped inside a data cluster of the second incremental (found with
# `qemu-img map` on that file alone, in a guest block no later layer
# overwrites): the full and the first incremental stay ok, the second and the
# third are corrupt, naming that file and the guest offset; a context verify
# says the same and reads each block once; `strata verify` says so too; the
# next backup of the disk is a full, saying why.  Then, each undone before
# the next: a truncated layer, a missing layer, an edited backing pointer
# and data written into a layer where its manifest lists none
# are found, naming the file; a leaked cluster (what a storage daemon killed
# mid-copy leaves) is not corruption.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-nbd nbdcopy jq curl cmp perl

start_hub
VM=vf1
SRC=$T/vf1-disk0.qcow2
qemu-img create -q -f qcow2 "$SRC" 64M

# io CMD...: qemu-io commands on the source, as the guest would write.
io ()
{
  local a=() c
  for c in "$@"; do a+=(-c "$c"); done
  qemu-io -f qcow2 "${a[@]}" "$SRC" > /dev/null || fail "qemu-io $*"
}

# file_of BID: the backup's disk 0 file.
file_of ()
{
  curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups/$1" | jq -r '.disks[0].qcow2_path'
}

# states BID...: "BID:verify_state" of each backup as GET /backups/{id} shows it.
states ()
{
  local b
  for b in "$@"; do
    printf '%s:%s ' "$b" "$(curl -s "http://127.0.0.1:$HUB_PORT/api/v1/backups/$b" | jq -r .verify_state)"
  done
}

# expect BID...: "BID:STATE " for a states comparison, STATE given as BID=STATE.
expect ()
{
  local a
  for a in "$@"; do printf '%s:%s ' "${a%%=*}" "${a#*=}"; done
}

# problem_files BID: the files the last verify task's result names for the
# backup's disk 0, sorted, on one line.
problem_files ()
{
  verified "$1" '[.disks[0].problems[]?.file] | unique | join(" ")'
}

# writable FILE / sealed FILE: the repository's files are 0444; the test
# opens one up to damage it and seals it again.
writable () { chmod u+w "$1"; }
sealed () { chmod 0444 "$1"; }

# --- The chain: a full and three incrementals, each with data of its own ------
io 'write -P 0x11 0 4M' 'write -P 0x12 32M 4M'
take_point $VM "$SRC"; P1=$BID
io 'write -P 0x21 8M 1M' 'write -P 0x22 33M 64k'
take_point $VM "$SRC"; P2=$BID
io 'write -P 0x31 16M 1M' 'write -P 0x32 2M 64k'
take_point $VM "$SRC"; P3=$BID
io 'write -P 0x41 24M 1M' 'write -P 0x42 8M 64k'
take_point $VM "$SRC"; P4=$BID
CTX=$(context_of $VM)
F1=$(file_of $P1) F2=$(file_of $P2) F3=$(file_of $P3) F4=$(file_of $P4)
api GET "/api/v1/backups?vm_name=$VM"
is "$(jqb '[.backups[] | .disks[0].backup_type] | join(" ")')" "incremental incremental incremental full" \
   "a full and three incrementals"
is "$(jqb '[.backups[] | .verify_state] | join(" ")')" "none none none none" "no point is verified yet"
for f in "$F1" "$F2" "$F3" "$F4"; do
  ok "${f##*/} has its manifest" test -s "$f.manifest"
done
for f in "$F2" "$F3" "$F4"; do
  cmp_ok "$(overlay_data "$f")" -gt 0 "${f##*/} holds data of its own"
done

# --- Every point verifies ok --------------------------------------------------
for b in $P1 $P2 $P3 $P4; do
  verify_ok "/api/v1/backups/$b/verify" "verify $b"
  is "$(verified $b .verify_state)" ok "$b: the task finds it ok"
  is "$(verified $b '.disks[0] | "\(.verify_state) \(.hashed) \(.bad_blocks)"')" "ok true 0" \
     "$b: its disk is ok, hashed, with no bad block"
  cmp_ok "$(verified $b '.disks[0].blocks_checked')" -gt 0 "$b: blocks were checked"
  api GET "/api/v1/backups/$b"
  is "$(jqb '"\(.verify_state) \(.disks[0].verify_state) \(.disks[0].verify_error)"')" "ok ok null" \
     "$b: recorded ok on the backup and its disk"
  like "$(jqb .verified_at)" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' "$b: with the time it was verified"
  like "$(jqb .disks[0].verified_at)" '^[0-9]{4}-' "$b: on its disk too"
done
api GET "/api/v1/backups?vm_name=$VM"
is "$(jqb '[.backups[] | .verify_state, .disks[0].verify_state] | unique | join(" ")')" ok \
   "the listing shows every point and disk ok"

# --- One byte flipped in a data cluster of the second incremental -------------
# Guest block 16 MiB + 128 KiB: written for P3 only (0x31), not by P4.
G=$((16 * MiB + 128 * 1024))
MAP=$(qemu-img map -U --output=json \
  "json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"$F3\"}}")
HOST=$(jq --argjson g $G 'map(select(.data and .start <= $g and $g < .start + .length))
                           | .[0] | if . == null then empty else .offset + ($g - .start) end' <<< "$MAP")
like "$HOST" '^[0-9]+$' "qemu-img map finds the host offset of guest offset $G in ${F3##*/}"
# flip FILE OFFSET: invert the byte at OFFSET (a second flip restores it).
flip ()
{
  perl -e 'open(my $f, "+<", $ARGV[0]) or die "$ARGV[0]: $!"; binmode $f;
           seek($f, $ARGV[1], 0); read($f, my $c, 1) == 1 or die "short read";
           seek($f, $ARGV[1], 0); print $f chr(ord($c) ^ 0xff); close $f or die' "$1" "$2"
}
is "$(od -An -tx1 -j $((HOST + 1000)) -N1 "$F3" | tr -d ' ')" 31 "the byte there is the guest's 0x31"
writable "$F3"
ok "flip one byte of it" flip "$F3" $((HOST + 1000))
sealed "$F3"

SUM=0
for b in $P1 $P2 $P3 $P4; do
  verify_ok "/api/v1/backups/$b/verify" "after the flip, verify $b"
  SUM=$((SUM + $(jqb '.result.blocks_read // 0')))
  case $b in
    $P1|$P2)
      is "$(verified $b '"\(.verify_state) \(.disks[0].verify_state)"')" "ok ok" \
         "$b does not read ${F3##*/}: still ok"
      ;;
    *)
      is "$(verified $b '"\(.verify_state) \(.disks[0].verify_state)"')" "corrupt corrupt" \
         "$b reads through ${F3##*/}: corrupt"
      is "$(problem_files $b)" "$F3" "$b: the problem names ${F3##*/}"
      is "$(verified $b "[.disks[0].problems[] | select(.file == \"$F3\") | .bad_offsets[]] | join(\" \")")" "$G" \
         "$b: at guest offset $G"
      is "$(verified $b '.disks[0] | "\(.bad_blocks) \(.first_bad_offset)"')" "1 $G" \
         "$b: one bad block, the first at $G"
      ;;
  esac
done
is "$(states $P1 $P2 $P3 $P4)" "$(expect $P1=ok $P2=ok $P3=corrupt $P4=corrupt)" \
   "the backups record it: ok, ok, corrupt, corrupt"
api GET "/api/v1/backups/$P3"
like "$(jqb .disks[0].verify_error)" "$G" "$P3's disk says what is wrong, with the offset"
api GET "/api/v1/backups?vm_name=$VM"
is "$(jqb '[.backups[] | "\(.verify_state)/\(.disks[0].verify_state)"] | join(" ")')" \
   "corrupt/corrupt corrupt/corrupt ok/ok ok/ok" "the listing shows the same"

# A context verify: the same per point, each block read once.
verify_ok "/api/v1/contexts/$CTX/verify" "verify the context"
is "$(jqb '[.result.points[] | "\(.backup_id):\(.verify_state)"] | sort | join(" ")')" \
   "$(printf '%s\n' "$P1:ok" "$P2:ok" "$P3:corrupt" "$P4:corrupt" | sort | paste -sd ' ')" \
   "the context verify finds the same per point"
for b in $P3 $P4; do
  is "$(problem_files $b)/$(verified $b '.disks[0].first_bad_offset')" "$F3/$G" \
     "context verify: $b names ${F3##*/} at $G"
done
cmp_ok "$(jqb '.result.blocks_read // 0')" -lt "$SUM" \
   "it reads fewer blocks ($(jqb .result.blocks_read)) than the four verifies together ($SUM)"
cmp_ok "$(jqb '.result.blocks_read // 0')" -gt 0 "and reads some"

# strata verify: exit 0 all ok, 1 something corrupt.
agent verify --backup $P2
is "$AGENT_RC" 0 "strata verify --backup $P2 exits 0 (ok)"
agent verify --backup $P4
is "$AGENT_RC" 1 "strata verify --backup $P4 exits 1 (corrupt)"
like "$AGENT_OUT$AGENT_ERR" "corrupt" "and says corrupt"
like "$AGENT_OUT$AGENT_ERR" "${F3##*/}" "naming the file"
agent verify --vm $VM --json
is "$AGENT_RC" 1 "strata verify --vm $VM --json exits 1"
ok "and prints JSON" jq -e . "$T/agent.out"
like "$AGENT_OUT" "$P4" "naming the corrupt point"

# The next backup of the disk is a full, and says why.
io 'write -P 0x51 40M 64k'
take_point $VM "$SRC"; P5=$BID
is "$(jqa '.disks[0].mode')" full "the next backup copies the disk in full"
api GET "/api/v1/backups/$P5"
is "$(jqb '.disks[0] | "\(.backup_type) \(.parent_backup_id)"')" "full null" \
   "its disk is a full, built on nothing"
like "$(jqb .disks[0].full_reason)" 'verif' "its full_reason mentions the failed verification"
is "$(backing_of "$(jqb .disks[0].qcow2_path)")" "" "its file has no backing file"
points_restore_ok $P5

# Undo the flip: verified again, the points are ok again.
writable "$F3"
ok "flip the byte back" flip "$F3" $((HOST + 1000))
sealed "$F3"
verify_ok "/api/v1/backups/$P4/verify" "after the repair, verify $P4"
is "$(verified $P4 .verify_state)" ok "$P4 is ok again"

# --- A truncated layer -----------------------------------------------------------
cp -p "$F2" "$T/f2.saved"
writable "$F2"
truncate -s $(( $(stat -c %s "$F2") / 2 )) "$F2"
for b in $P2 $P4; do
  verify_ok "/api/v1/backups/$b/verify" "${F2##*/} truncated to half, verify $b"
  is "$(verified $b .verify_state)" corrupt "$b reads the truncated file: corrupt"
  like "$(problem_files $b)" "$F2" "$b: the problem names ${F2##*/}"
done
verify_ok "/api/v1/backups/$P1/verify" "${F2##*/} truncated, verify $P1"
is "$(verified $P1 .verify_state)" ok "$P1 does not read it: ok"
mv -f "$T/f2.saved" "$F2"
verify_ok "/api/v1/backups/$P2/verify" "${F2##*/} restored, verify $P2"
is "$(verified $P2 .verify_state)" ok "$P2 is ok again"

# --- A missing layer ---------------------------------------------------------------
mv "$F1" "$T/f1.away"
verify_ok "/api/v1/backups/$P2/verify" "${F1##*/} moved away, verify $P2"
is "$(verified $P2 .verify_state)" corrupt "$P2, whose chain lacks its full: corrupt"
like "$(problem_files $P2)" "$F1" "the problem names ${F1##*/}"
like "$(verified $P2 '.disks[0].problems[0].message')" 'missing|not found|[Nn]o such' "and says it is missing"
api GET "/api/v1/backups/$P2"
is "$(jqb '"\(.verify_state) \(.disks[0].verify_state)"')" "corrupt corrupt" "recorded on the backup"
mv "$T/f1.away" "$F1"
verify_ok "/api/v1/backups/$P2/verify" "${F1##*/} back, verify $P2"
is "$(verified $P2 .verify_state)" ok "$P2 is ok again"

# --- An edited backing pointer: P3's layer made to skip P2's ----------------------
is "$(backing_of "$F3")" "$P2.qcow2" "${F3##*/} is backed by $P2.qcow2"
writable "$F3"
ok "qemu-img rebase -u -b $P1.qcow2 ${F3##*/}" \
   eval "cd '${F3%/*}' && qemu-img rebase -u -b '$P1.qcow2' -F qcow2 '$F3'"
sealed "$F3"
verify_ok "/api/v1/backups/$P3/verify" "backing pointer edited, verify $P3"
is "$(verified $P3 .verify_state)" corrupt "$P3 with an edited backing pointer: corrupt"
like "$(problem_files $P3)" "$F3" "the problem names ${F3##*/}"
like "$(verified $P3 '[.disks[0].problems[].message] | join(" | ")')" 'backing' "and says the backing file is wrong"
writable "$F3"
ok "qemu-img rebase -u -b $P2.qcow2 back" \
   eval "cd '${F3%/*}' && qemu-img rebase -u -b '$P2.qcow2' -F qcow2 '$F3'"
sealed "$F3"

# --- Data written into a layer behind strata's back, where its manifest lists
# nothing (no layer holds 50M): the file no longer matches its manifest.
cp -p "$F2" "$T/f2.saved"
writable "$F2"
ok "write 64 KiB at 50M into ${F2##*/} alone" \
   qemu-io -c 'write -P 0x77 50M 64k' \
   "json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"$F2\"}}"
sealed "$F2"
verify_ok "/api/v1/backups/$P2/verify" "data written into ${F2##*/}, verify $P2"
is "$(verified $P2 .verify_state)" corrupt "$P2 holds data its manifest never saw: corrupt"
like "$(problem_files $P2)" "$F2" "the problem names ${F2##*/}"
like "$(verified $P2 '[.disks[0].problems[].message] | join(" | ")')" \
     "data in 1 block its manifest does not list \\(first at offset 52428800\\)" \
     "and says where"
verify_ok "/api/v1/backups/$P1/verify" "data written into ${F2##*/}, verify $P1"
is "$(verified $P1 .verify_state)" ok "$P1 does not read it: ok"
mv -f "$T/f2.saved" "$F2"

# --- A leaked cluster: a storage daemon killed mid-copy leaves clusters that
# its refcounts count and no table references (qemu-img check exits 3 and
# lists them on standard error).  Space lost, no data wrong: not corrupt.
# leak FILE: append one cluster to the QCOW2 image FILE, counted (refcount
# 1, v3's 16-bit refcounts, in the first refcount block) and referenced by
# nothing.
leak ()
{
  perl -e 'open(my $f, "+<", $ARGV[0]) or die "$ARGV[0]: $!"; binmode $f;
           read($f, my $h, 104) == 104 or die "short header";
           substr($h, 0, 4) eq "QFI\xfb" or die "not qcow2";
           my $cs = 1 << unpack("N", substr($h, 20, 4));
           my $rt = unpack("Q>", substr($h, 48, 8));
           unpack("N", substr($h, 96, 4)) == 4 or die "refcounts are not 16-bit";
           my $c = int(((-s $f) + $cs - 1) / $cs);
           $c < $cs / 2 or die "beyond the first refcount block";
           seek($f, $rt, 0); read($f, my $e, 8) == 8 or die "short read";
           my $rb = unpack("Q>", $e);
           truncate($f, ($c + 1) * $cs) or die "truncate: $!";
           seek($f, $rb + 2 * $c, 0); print $f pack("n", 1); close $f or die' "$1"
}
cp -p "$F2" "$T/f2.saved"
writable "$F2"
ok "leak one cluster in ${F2##*/}" leak "$F2"
sealed "$F2"
qemu-img check -U "$F2" > /dev/null 2> "$T/check.err"
is "$?|$(grep -c 'Leaked cluster' "$T/check.err")" "3|1" "qemu-img check exits 3, naming one leaked cluster"
mark=$(wc -l < "$HUB_LOG")
verify_ok "/api/v1/backups/$P2/verify" "a leaked cluster in ${F2##*/}, verify $P2"
is "$(verified $P2 '"\(.verify_state) \(.disks[0].problems | length)"')" "ok 0" \
   "$P2 is ok: a leak is no corruption"
like "$(tail -n "+$((mark + 1))" "$HUB_LOG")" "${F2##*/} has 1 leaked cluster" "the hub's log says so"
mv -f "$T/f2.saved" "$F2"

# --- All repaired: the whole context verifies ok ------------------------------------
verify_ok "/api/v1/contexts/$CTX/verify" "everything repaired, verify the context"
is "$(jqb '[.result.points[] | .verify_state] | unique | join(" ")')" ok "every point is ok"
is "$(jqb '.result.points | length')" 5 "all five points were verified"
is "$(states $P1 $P2 $P3 $P4 $P5)" "$(expect $P1=ok $P2=ok $P3=ok $P4=ok $P5=ok)" "and recorded ok"
repo_images_check "after the repairs"
points_restore_ok $P1 $P2 $P3 $P4
no_qemu_nbd "no qemu-nbd is left behind"
done_testing
