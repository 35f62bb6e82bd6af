# tests/lib/qemu.sh - images and NBD with the qemu tools: write and check
# patterns (qemu-io), image info, backing files and bitmaps, the exports the
# hub serves, reference images, and a throttled NBD source.

# qemu_tls_args ARGS...: ARGS for qemu-io or qemu-img with every nbds://
# URI (nbds://IDENTITY@HOST:PORT/EXPORT[?tls-psk-file=F]) made a json:
# filename that opens it over TLS with that identity's key (F, else
# nbd_key_file), the --object of each key first.  Into QEMU_ARGS.  The
# image's format is given apart (-f/-F raw): the URI is its file.
qemu_tls_args ()
{
  local a id file dir n=0
  local re='^nbds://([^@]+)@([^:/]+):([0-9]+)/([^?]*)(\?tls-psk-file=(.*))?$'
  QEMU_ARGS=()
  local rest=()
  for a in "$@"; do
    if [[ $a =~ $re ]]; then
      id=${BASH_REMATCH[1]}
      file=${BASH_REMATCH[6]}
      [ -n "$file" ] || file=$(nbd_key_file "$id")
      n=$((n + 1))
      dir=$T/keys/qemu-$id
      mkdir -p "$dir"
      ( umask 077; grep "^$id:" "$file" > "$dir/keys.psk" )
      QEMU_ARGS+=(--object "tls-creds-psk,id=tls$n,endpoint=client,dir=$dir,username=$id")
      rest+=("json:{\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"inet\",\"host\":\"${BASH_REMATCH[2]}\",\"port\":\"${BASH_REMATCH[3]}\"},\"export\":\"${BASH_REMATCH[4]}\",\"tls-creds\":\"tls$n\"}}")
    else
      rest+=("$a")
    fi
  done
  QEMU_ARGS+=("${rest[@]}")
}

# qimg SUBCOMMAND ARGS...: qemu-img, NBD URIs of the hub opened with their
# keys (qemu_tls_args).
qimg ()
{
  local sub=$1
  shift
  qemu_tls_args "$@"
  qemu-img "$sub" "${QEMU_ARGS[@]}"
}

# qio ARGS...: qemu-io that fails on a pattern mismatch even where qemu-io
# would exit 0 (old versions), printing what qemu-io said.  NBD URIs of
# the hub are opened with their keys (qemu_tls_args).
qio ()
{
  local out rc
  qemu_tls_args "$@"
  out=$(qemu-io "${QEMU_ARGS[@]}" 2>&1)
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
  local u=${1%%\?*}
  ok "write $2 at $3 (+$4) into ${u##*/}" nbd_write "$@"
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

# export_gone URI: true when nothing serves that NBD export (asked with the
# hub's master key: whether a job's key is still in force does not count).
export_gone ()
{
  ! nbdinfo --size "$(master_keyed "$1")" > /dev/null 2>&1
}

# export_up URI: true when the NBD export answers (as export_gone).
export_up ()
{
  nbdinfo --size "$(master_keyed "$1")" > /dev/null 2>&1
}

# nbd_exports: the export names the hub's NBD server lists now, sorted, one a
# line (nothing when it serves none; "DOWN" when nothing answers).
nbd_exports ()
{
  local out uri=nbd://127.0.0.1:$NBD_PORT
  [ -f "${NBD_MASTER_PSK:-$DATA/nbd.psk}" ] && uri=$(master_keyed "nbds://hub@127.0.0.1:$NBD_PORT")
  out=$(nbdinfo --list --json "$uri" 2>/dev/null) || { echo DOWN; return; }
  jq -r '.exports[]?."export-name"' <<< "$out" | sort
}

# exports_of URI...: the export names of NBD URIs, sorted, one a line.
exports_of ()
{
  local u
  for u in "$@"; do u=${u%%\?*}; echo "${u##*/}"; done | sort
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
