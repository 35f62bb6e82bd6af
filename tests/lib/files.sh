# tests/lib/files.sh - files on disk: repository listings, permission
# bits, and folders made immutable so that the hub fails to write there.

# repo_listing [DIR]: every file and folder under DIR (default: the default
# repository), with size and mode, sorted.
repo_listing ()
{
  local dir=${1:-$DATA/repository}
  (cd "$dir" 2>/dev/null && find . -printf '%p %y %s %m\n' | sort)
}

# file_mode FILE: octal permission bits.
file_mode ()
{
  stat -c %a "$1"
}

# read_only FILE: true when no write bit is set.
read_only ()
{
  [ -f "$1" ] && [ $(( 0$(stat -c %a "$1") & 0222 )) -eq 0 ]
}

# immutable DIR / mutable DIR: chattr +i/-i, so that even root cannot create
# files there (the cleanup trap undoes it).  immutable fails where the file
# system does not support it.
immutable ()
{
  touch "$T/.immutable"
  chattr +i "$1" 2>/dev/null && ! touch "$1/.probe" 2>/dev/null
}

mutable ()
{
  chattr -i "$1"
}
