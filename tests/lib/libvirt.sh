# tests/lib/libvirt.sh - a private libvirtd for the libvirt tests, and
# test domains in it: start and stop the daemon, define TCG domains with
# qcow2 and raw disks, write into a running guest's disk through the QEMU
# monitor, kill a domain's QEMU.
#
# A test sources it after tests/functions.sh and calls start_libvirtd.
#
# THE DAEMON
#
# As root, libvirtd always reads /etc/libvirt and keeps its state in
# /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt;
# only its sockets can be moved (unix_sock_dir).  So each test runs its own
# virtlogd and libvirtd in a mount namespace of their own (unshare -m), with
# those five folders bind-mounted from $T/libvirt: nothing of the host's is
# read or written, two tests never share a daemon, and a libvirtd the host
# may run is not disturbed.  The QEMU processes libvirtd starts live in that
# namespace too.  The test talks to the daemon through its socket in
# $T/libvirt/sock, which is the same file inside and outside the namespace:
# LIBVIRT_URI (qemu+unix:///system?socket=...) is what virsh and strata get.
#
# qemu.conf for tests: QEMU runs as root with security_driver "none" (no
# AppArmor or SELinux labels, no chown of the images), without cgroups and
# without a /dev namespace, which a container may not offer.  libvirtd
# still looks up the `libvirt-qemu` user at start: `make deps` creates it.
#
# STRATA_TEST_LIBVIRT_URI, when set, names a libvirtd to use instead (its
# QEMU must be able to open files under $T); nothing is started then.
#
# The EXIT trap (_cleanup_extra, called first by _cleanup) destroys and
# undefines every domain whose name has the test's prefix ($LV_PREFIX), then stops the daemons it
# started, by pid, and waits for them.

LIBVIRT_URI=
LV_PREFIX=strata-t$$-
_lv_dir=
_lv_pids=()

# lv_virsh ARGS...: virsh against the test's libvirtd.
lv_virsh ()
{
  virsh -q -c "$LIBVIRT_URI" "$@"
}

# start_libvirtd: start the private virtlogd and libvirtd (unless
# STRATA_TEST_LIBVIRT_URI names one) and wait until libvirtd answers.
start_libvirtd ()
{
  requires virsh libvirtd virtlogd unshare qemu-system-x86_64
  if [ -n "${STRATA_TEST_LIBVIRT_URI:-}" ]; then
    LIBVIRT_URI=$STRATA_TEST_LIBVIRT_URI
    return 0
  fi
  id libvirt-qemu > /dev/null 2>&1 || skip_all "no libvirt-qemu user (make deps creates it)"
  _lv_dir=$T/libvirt
  mkdir -p "$_lv_dir"/{etc,run,lib,log,cache,sock}
  cat > "$_lv_dir/etc/libvirtd.conf" <<EOF
unix_sock_dir = "$_lv_dir/sock"
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
  cat > "$_lv_dir/etc/qemu.conf" <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
EOF
  cat > "$_lv_dir/etc/virtlogd.conf" <<EOF
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
EOF
  # The folders exist on the host only as mount points (empty, as the
  # libvirt packages would make them).
  mkdir -p /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt /etc/libvirt
  unshare -m --propagation private sh -ec '
    d=$1
    mount --bind "$d/etc" /etc/libvirt
    mount --bind "$d/run" /run/libvirt
    mount --bind "$d/lib" /var/lib/libvirt
    mount --bind "$d/log" /var/log/libvirt
    mount --bind "$d/cache" /var/cache/libvirt
    virtlogd -d -p "$d/virtlogd.pid" -f /etc/libvirt/virtlogd.conf
    libvirtd -d -p "$d/libvirtd.pid" -f /etc/libvirt/libvirtd.conf
  ' sh "$_lv_dir" || bail_out "libvirtd did not start"
  local f
  for f in virtlogd libvirtd; do
    wait_for 10 test -s "$_lv_dir/$f.pid" || bail_out "$f wrote no pid file"
    _lv_pids+=("$(tr -dc 0-9 < "$_lv_dir/$f.pid")")
  done
  LIBVIRT_URI="qemu+unix:///system?socket=$_lv_dir/sock/libvirt-sock"
  wait_for 30 virsh -c "$LIBVIRT_URI" version ||
    bail_out "libvirtd does not answer: $(tail -3 "$_lv_dir/log/libvirtd.log" 2>/dev/null)"
}

# define_domain NAME DISK...: define a TCG domain (a few MiB of memory, no
# OS, ACPI so that disks can be hot-plugged) with the DISKs as virtio disks
# vda, vdb, ...: each an image file, qcow2 or raw by its contents, or
# "cdrom:FILE" for a read-only cdrom.
define_domain ()
{
  local name=$1 disks="" i=0 d fmt letters=abcdefgh
  shift
  for d in "$@"; do
    if [[ $d == cdrom:* ]]; then
      disks+="<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
        <source file='${d#cdrom:}'/><target dev='hdc' bus='ide'/><readonly/></disk>"
      continue
    fi
    fmt=$(qemu-img info -U --output=json "$d" | jq -r .format)
    disks+="<disk type='file' device='disk'><driver name='qemu' type='$fmt'/>
      <source file='$d'/><target dev='vd${letters:$i:1}' bus='virtio'/></disk>"
    i=$((i + 1))
  done
  cat > "$T/$name.xml" <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>24</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    $disks
    <memballoon model='none'/>
  </devices>
</domain>
EOF
  lv_virsh define "$T/$name.xml" > /dev/null
}

# guest_write DOMAIN TARGET PATTERN OFFSET LENGTH: the guest writes PATTERN
# into its disk TARGET (vda, vdb, ...), through QEMU's monitor.
guest_write ()
{
  local idx
  idx=$(( $(printf '%d' "'${2:2:1}") - 97 ))
  lv_virsh qemu-monitor-command "$1" --hmp \
    "qemu-io -d /machine/peripheral/virtio-disk$idx/virtio-backend \"write -P $3 $4 $5\"" > /dev/null
}

# kill_domain DOMAIN: SIGKILL its QEMU, as a host crash or the OOM killer
# would (virsh destroy lets QEMU save its bitmaps; this does not).
kill_domain ()
{
  local pidf=$_lv_dir/run/qemu/$1.pid pid
  pid=$(tr -dc 0-9 < "$pidf")
  [ -n "$pid" ] || return 1
  kill -KILL "$pid"
  wait_for 10 sh -c "virsh -q -c '$LIBVIRT_URI' domstate '$1' | grep -q 'shut off'"
}

# domain_state DOMAIN: "running", "paused", "shut off", ...
domain_state ()
{
  lv_virsh domstate "$1" 2> /dev/null | head -1
}

# checkpoints_of DOMAIN: its checkpoint names, sorted, one a line.
checkpoints_of ()
{
  lv_virsh checkpoint-list "$1" --name 2> /dev/null | sed '/^$/d' | sort
}

_cleanup_extra ()
{
  local d p
  [ -n "$LIBVIRT_URI" ] || return 0
  # Every domain with the test's prefix (define_domain may have run in a
  # subshell, as under ok).
  for d in $(virsh -q -c "$LIBVIRT_URI" list --all --name 2> /dev/null | grep "^$LV_PREFIX"); do
    virsh -q -c "$LIBVIRT_URI" destroy "$d" > /dev/null 2>&1
    virsh -q -c "$LIBVIRT_URI" undefine "$d" --checkpoints-metadata > /dev/null 2>&1
  done
  for p in "${_lv_pids[@]}"; do
    kill -TERM "$p" 2> /dev/null
  done
  for p in "${_lv_pids[@]}"; do
    _wait_gone "$p" 10 || kill -KILL "$p" 2> /dev/null
  done
}

# guest_write_ref DOMAIN TARGET REF PATTERN OFFSET LENGTH: guest_write, and
# the same write into the raw reference image REF.
guest_write_ref ()
{
  guest_write "$1" "$2" "$4" "$5" "$6" && ref_write "$3" "$4" "$5" "$6"
}

# backup_job_running DOMAIN: libvirt has a backup job on the domain.
backup_job_running ()
{
  lv_virsh domjobinfo "$1" 2> /dev/null | grep -q 'Operation: *Backup'
}
