#!/usr/bin/env bash
# Usage: scripts/debian-root.sh DIR [DEB]
#
# Makes DIR a Debian 12 (bookworm, minbase plus systemd, as on a real host; not booted)
# root unless it already is one, and installs the pgquorum .deb into it with apt, so that the package's Depends (PostgreSQL) are resolved
# as on a real host. Services do not start in it (a policy-rc.d says no). Copies of such a
# root serve as the "hosts" of the packaging and Vagrant-provisioning tests.
#
# debootstrap runs once per machine: its result is kept, untouched, in
# $PGQUORUM_ROOT_CACHE (default /var/cache/pgquorum/debian-12-root) and copied into DIR.
# DEB defaults to the package `make packages` builds. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
MIRROR=${PGQUORUM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${PGQUORUM_ROOT_CACHE:-/var/cache/pgquorum/debian-12-root}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 DIR [DEB]" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "$0: needs root (debootstrap, chroot, mount)" >&2
  exit 1
fi
dir=$(realpath -m "$1")
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
deb=$(realpath -m "${2:-target/debian/pgquorum_${version}-1_amd64.deb}")
if [ ! -f "$deb" ]; then
  echo "$0: $deb does not exist; build it with 'make packages'" >&2
  exit 1
fi

# A root is one once debootstrap finished (it is only moved into place then).
is_bookworm_root() {
  [ -x "$1/usr/bin/apt-get" ] && grep -q '^12\.' "$1/etc/debian_version" 2>/dev/null
}

if ! is_bookworm_root "$CACHE"; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  echo "debootstrap $SUITE (minbase, systemd) from $MIRROR into $CACHE" >&2
  rm -rf "$CACHE.tmp"
  mkdir -p "$(dirname "$CACHE")"
  debootstrap --variant=minbase --include=systemd "$SUITE" "$CACHE.tmp" "$MIRROR" >"$CACHE.log" 2>&1 || {
    tail -n 20 "$CACHE.log" >&2
    exit 1
  }
  # No service starts in the root: invoke-rc.d and deb-systemd-invoke ask policy-rc.d.
  printf '#!/bin/sh\n# Installed by pgquorum scripts/debian-root.sh: no service starts here.\nexit 101\n' \
    >"$CACHE.tmp/usr/sbin/policy-rc.d"
  chmod 0755 "$CACHE.tmp/usr/sbin/policy-rc.d"
  rm -rf "$CACHE.tmp/var/cache/apt/archives/"*.deb
  mv "$CACHE.tmp" "$CACHE"
fi

if ! is_bookworm_root "$dir"; then
  if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    echo "$0: $dir exists, is not empty and is not a Debian 12 root; not touching it" >&2
    exit 1
  fi
  mkdir -p "$dir"
  cp -a "$CACHE/." "$dir/"
fi

# apt and the PostgreSQL maintainer scripts want /proc and a shared-memory tmpfs (initdb);
# unmounted again on exit, so the root can be copied.
mounted=()
cleanup() {
  local m
  for m in "${mounted[@]}"; do umount "$m" || umount -l "$m" || true; done
}
trap cleanup EXIT
mount_in_root() { # TYPE TARGET
  if ! mountpoint -q "$dir$2"; then
    mkdir -p "$dir$2"
    mount -t "$1" "$1" "$dir$2"
    mounted=("$dir$2" "${mounted[@]}")
  fi
}
mount_in_root proc /proc
mount_in_root tmpfs /dev/shm

cp /etc/resolv.conf "$dir/etc/resolv.conf"
mkdir -p "$dir/tmp/pgquorum"
rm -f "$dir"/tmp/pgquorum/*.deb
cp "$deb" "$dir/tmp/pgquorum/"
in_root() {
  chroot "$dir" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive ${http_proxy:+"http_proxy=$http_proxy"} "$@"
}
in_root apt-get update -qq
# A root being reused may have this version already: install the file's contents again.
reinstall=()
if in_root dpkg-query -W pgquorum >/dev/null 2>&1; then reinstall=(--reinstall); fi
echo "installing $(basename "$deb") into $dir with apt" >&2
in_root apt-get install -y -q --no-install-recommends "${reinstall[@]}" "/tmp/pgquorum/$(basename "$deb")" \
  >"$dir/tmp/pgquorum/apt-install.log" 2>&1 || {
  tail -n 30 "$dir/tmp/pgquorum/apt-install.log" >&2
  exit 1
}
in_root apt-get clean
# shellcheck disable=SC2016 # dpkg-query's format
echo "Debian 12 root with pgquorum $(in_root dpkg-query -W -f '${Version}' pgquorum): $dir"
echo "  (apt's output: $dir/tmp/pgquorum/apt-install.log)"
