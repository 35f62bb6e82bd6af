# tests/lib/qemu.sh - images and NBD with the qemu tools: write and check
# patterns (qemu-io), image info, backing files and bitmaps, the exports the
# hub serves, reference images, and a throttled NBD source.

# qio ARGS...: qemu-io that fails on a pattern mismatch even where qemu-io
# would exit 0 (old versions), printing what qemu-io said.
qio ()
{
  local out rc
  out=$(qemu-io "$@" 2>&1)
  rc=$?
  printf '%s\n' "$out"
  [ $rc -eq 0 ] || return $rc
  if printf '%s' "$out" | grep -qiE 'Pattern verification failed|error|failed|Could not'; then
    return 1
  fi
  return 0
}

# nbd_write URI PATTERN OFFSET LENGTH: write a pattern into an NBD target.
nbd_write ()
{
  qio -f raw -c "write -P $2 $3 $4" -c flush "$1"
}

# write_ok URI PATTERN OFFSET LENGTH: one test that the write into the NBD
# target succeeds.
write_ok ()
{
  ok "write $2 at $3 (+$4) into ${1##*/}" nbd_write "$@"
}

# img_info FILE: qemu-img info --output=json (no locking: the file may be
# open in the storage daemon).
img_info ()
{
  qemu-img info -U --output=json "$1"
}

# backing_of FILE: the backing-filename recorded in a QCOW2 file ("" if none).
backing_of ()
{
  img_info "$1" | jq -r '."backing-filename" // ""'
}

# bitmaps_of IMAGE: the names of its persistent bitmaps, sorted, one a line.
bitmaps_of ()
{
  qemu-img info -U --output=json "$1" | jq -r '."format-specific".data.bitmaps[]?.name' | sort
}

# overlay_data QCOW2: bytes of data the file itself holds (not its backing).
overlay_data ()
{
  qemu-img map -U --output=json "$1" |
    jq '[.[] | select(.depth == 0 and .data == true) | .length] | add // 0'
}

# snapshot IMAGE RAW: save what IMAGE holds now, as a raw file.
snapshot ()
{
  qemu-img convert -U -O raw "$1" "$2"
}

# ref_image FILE SIZE: a sparse raw reference image to mirror the writes in.
ref_image ()
{
  rm -f "$1"
  truncate -s "$2" "$1"
}

# ref_write FILE PATTERN OFFSET LENGTH
ref_write ()
{
  qemu-io -f raw -c "write -P $2 $3 $4" "$1" > /dev/null
}

# export_gone URI: true when nothing serves that NBD export.
export_gone ()
{
  ! nbdinfo --size "$1" > /dev/null 2>&1
}

# export_up URI: true when the NBD export answers.
export_up ()
{
  nbdinfo --size "$1" > /dev/null 2>&1
}

# nbd_exports: the export names the hub's NBD server lists now, sorted, one a
# line (nothing when it serves none; "DOWN" when nothing answers).
nbd_exports ()
{
  local out
  out=$(nbdinfo --list --json "nbd://127.0.0.1:$NBD_PORT" 2>/dev/null) || { echo DOWN; return; }
  jq -r '.exports[]?."export-name"' <<< "$out" | sort
}

# exports_of URI...: the export names of NBD URIs, sorted, one a line.
exports_of ()
{
  local u
  for u in "$@"; do echo "${u##*/}"; done | sort
}

# no_qemu_nbd DESC: one test that no qemu-nbd serving a file of this test runs.
no_qemu_nbd ()
{
  local left
  left=$(pgrep -a -f "qemu-nbd.*$T/" 2>/dev/null)
  if [ -z "$left" ]; then pass "$1"; else fail "$1" "  still running: $left"; fi
}

# throttled_source RAW SOCK BPS: serve RAW read-only over NBD on the unix
# socket SOCK through a qemu-storage-daemon limited to BPS bytes a second,
# so that a copy from it takes long enough to be cut half-way.  Sets
# SRC_QSD_PID; waits (bounded) until the socket answers.
throttled_source ()
{
  rm -f "$2"
  qemu-storage-daemon \
    --blockdev "driver=file,node-name=f0,filename=$1,read-only=on" \
    --object "throttle-group,id=tg0,x-bps-read=$3" \
    --blockdev "driver=throttle,node-name=t0,throttle-group=tg0,file=f0,read-only=on" \
    --nbd-server "addr.type=unix,addr.path=$2" \
    --export "type=nbd,id=e0,node-name=t0,name=src,writable=off" \
    > "$T/src-qsd.log" 2>&1 &
  SRC_QSD_PID=$!
  wait_for 20 nbdinfo --size "nbd+unix:///src?socket=$2"
}
