#!/usr/bin/env bash
# Checks the .deb and the .rpm (issue 6): builds them with scripts/packages.sh, then
#   1. lintian reports no error on the .deb (warnings are shown)
#   2. the .rpm's metadata: files, config, docs, dependencies, scriptlets
#   3. systemd-analyze verify passes on the unit, installed in a Debian root
#   4. the .deb installed with apt into a clean Debian 12 root (scripts/debian-root.sh):
#      files, owners and modes, the unit enabled and not started, `pgquorum --version`,
#      no `main` cluster left enabled on port 5432
#   5. the binary both packages ship is the same stripped file, needing GLIBC <= 2.28
#   6. Debian's main cluster at install time: a fresh one stopped and disabled, one holding
#      data left alone with a warning
#   7. reinstalling (the upgrade path) keeps a changed config; purging keeps a state
#      directory that holds anything
#   8. the .rpm's scriptlets, run on its files in a Debian root: state directory, unit
#      enabled through the preset, disabled on erase
# (6 to 8 in throw-away copies of the root)
# and ends with "packaging: N passed, M failed". Needs root (debootstrap, chroot, mount):
# without it this skips, except in CI (CI=true), where it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  if [ "${CI:-}" = true ]; then
    echo "test-packages.sh: needs root (debootstrap, chroot, mount), and CI runs as root" >&2
    exit 1
  fi
  echo "test-packages.sh: skipped: needs root (debootstrap, chroot, mount); try sudo"
  exit 0
fi

started=$(date +%s)
MAX_GLIBC=2.28
WANTS=/etc/systemd/system/multi-user.target.wants/pgquorum.service # the unit, enabled
ROOT=$(realpath -m "${PGQUORUM_DEBIAN_ROOT:-target/debian-root}")
LOGS=target/test-logs/packages
mkdir -p "$LOGS"

# The checking tools.
need_apt=()
command -v lintian >/dev/null 2>&1 || need_apt+=(lintian)
command -v rpm >/dev/null 2>&1 || need_apt+=(rpm)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "== scripts/packages.sh"
if ! built=$(bash scripts/packages.sh); then
  echo "FAIL: scripts/packages.sh builds both packages"
  echo "packaging: 0 passed, 1 failed"
  exit 1
fi
deb=$(sed -n 1p <<<"$built")
rpm=$(sed -n 2p <<<"$built")
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

# Removes a root, unmounting first whatever an interrupted run left mounted in it.
remove_root() {
  local m
  [ -e "$1" ] || return 0
  awk -v root="$1" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/mounts |
    sort -r | while read -r m; do umount "$m" || umount -l "$m"; done
  rm -rf --one-file-system "$1"
}

echo "== scripts/debian-root.sh $ROOT"
remove_root "$ROOT"
root_ok=true
bash scripts/debian-root.sh "$ROOT" "$deb" >"$LOGS/debian-root.log" 2>&1 || root_ok=false
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"; }

passed=0
failed=0
# Runs one check in a subshell with errexit in force, its output indented under the verdict.
check() { # NAME FUNCTION
  local rc out
  set +e
  out=$( (set -e; "$2") 2>&1)
  rc=$?
  set -e
  if [ $rc -eq 0 ]; then
    echo "PASS: $1"
    passed=$((passed + 1))
  else
    echo "FAIL: $1"
    failed=$((failed + 1))
  fi
  [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/    /'
}
# expect TEXT PATTERN WHAT: fails, saying WHAT, unless TEXT has a line matching PATTERN (ERE).
expect() {
  grep -Eq -- "$2" <<<"$1" || { echo "missing: $3 (no line matching '$2')"; return 1; }
}
expect_not() {
  if grep -Eq -- "$2" <<<"$1"; then echo "unexpected: $3 ('$2')"; return 1; fi
}
# The highest GLIBC_x.y symbol version in the ELF file $1.
glibc_needed() { objdump -T "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -u -V | tail -n 1; }
version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" = "$2" ]; }

check_lintian() {
  # Suppressed, each for a reason:
  #  no-manual-page                  every command documents itself (`pgquorum <cmd> --help`);
  #                                  a man page is not written yet
  #  initial-upload-closes-no-bugs   not an upload to Debian's archive; no ITP bug
  local out
  out=$(lintian --allow-root --fail-on error --display-level '>=warning' \
    --suppress-tags no-manual-page,initial-upload-closes-no-bugs "$deb") || {
    echo "$out"
    return 1
  }
  local warnings
  warnings=$(grep -c '^W:' <<<"$out" || true)
  echo "lintian: no errors, $warnings warnings"
  [ -z "$out" ] || echo "$out"
}

check_rpm() {
  local info files reqs scripts
  info=$(rpm -qpi "$rpm")
  expect "$info" '^Name +: pgquorum$' "Name"
  expect "$info" "^Version +: ${version//./\\.}$" "Version $version"
  expect "$info" '^Release +: 1$' "Release 1"
  expect "$info" '^Architecture: x86_64$' "Architecture x86_64"
  expect "$info" '^License +: Apache-2\.0$' "License"
  files=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm")
  echo "$files"
  expect "$files" '^-rwxr-xr-x root:root +/usr/bin/pgquorum$' "the binary, 0755 root"
  expect "$files" '^-rw-r--r-- root:root +/usr/lib/systemd/system/pgquorum\.service$' "the unit"
  expect "$files" '^-rw-r--r-- root:root +/usr/lib/systemd/system-preset/50-pgquorum\.preset$' "the preset"
  expect "$files" '^-rw-r--r-- root:root cn /etc/pgquorum/pgquorum\.toml$' "the config, %config(noreplace)"
  expect "$files" '^-rw-r--r-- root:root d /usr/share/doc/pgquorum/README\.md$' "README as %doc"
  expect "$(rpm -qpl "$rpm")" '^/usr/bin/pgquorum$' "rpm -qpl lists the binary"
  expect "$(rpm -qpc "$rpm")" '^/etc/pgquorum/pgquorum\.toml$' "rpm -qpc lists the config"
  reqs=$(rpm -qpR "$rpm")
  grep -v '^lib\|^ld-linux' <<<"$reqs" | sort -u
  echo "(and $(grep -c '^lib\|^ld-linux' <<<"$reqs") library requirements, from libc.so.6(GLIBC_2.2.5) to" \
    "$(grep -o 'libc\.so\.6(GLIBC_[0-9.]*)' <<<"$reqs" | sort -V | tail -n 1))"
  expect "$reqs" '^\(postgresql18-server or postgresql17-server or .*postgresql12-server or postgresql-server >= 12\)$' \
    "a PGDG/RHEL PostgreSQL server"
  expect "$reqs" '^systemd$' "systemd"
  expect "$reqs" '^/bin/sh$' "/bin/sh (scriptlets)"
  expect "$reqs" '^libc\.so\.6\(GLIBC_2\.[0-9]+\)\(64bit\)$' "libc's symbol versions (auto-req)"
  expect_not "$reqs" 'PayloadIsZstd' "a zstd payload (EL8's rpm reads gzip)"
  local v
  while read -r v; do
    version_le "$v" "$MAX_GLIBC" || { echo "requires GLIBC_$v > $MAX_GLIBC"; return 1; }
  done < <(grep -o 'GLIBC_2\.[0-9]*' <<<"$reqs" | sed 's/GLIBC_//')
  scripts=$(rpm -qp --scripts "$rpm")
  grep -E 'scriptlet|systemctl' <<<"$scripts" || true
  expect "$scripts" '^postinstall scriptlet' "%post"
  expect "$scripts" 'systemctl daemon-reload' "%post: daemon-reload"
  expect "$scripts" 'systemctl preset pgquorum\.service' "%post: preset on first install"
  expect "$scripts" 'install -d -o pgquorum -g pgquorum -m 0711 /var/lib/pgquorum' "%post: the state directory"
  expect "$scripts" '^preuninstall scriptlet' "%preun"
  expect "$scripts" 'systemctl disable --now pgquorum\.service' "%preun: disable --now on erase"
  expect "$scripts" '^postuninstall scriptlet' "%postun"
  rpm -K --nosignature "$rpm"
}

check_systemd_verify() {
  "$root_ok" || { echo "no Debian root (see $LOGS/debian-root.log)"; return 1; }
  # In the root, so that verify finds ExecStart's binary where the package put it, and
  # the units ours refers to in the root's systemd (debian-root.sh installs it, as a real
  # host has it). Warnings (an unknown setting, a bad value) exit 0: any output fails.
  local out
  out=$(systemd-analyze verify --root="$ROOT" /usr/lib/systemd/system/pgquorum.service 2>&1) || {
    echo "$out"
    return 1
  }
  expect_not "$out" '.' "any complaint from systemd-analyze verify"
  echo "systemd-analyze verify --root=$ROOT pgquorum.service: clean"
}

check_installed() {
  "$root_ok" || { cat "$LOGS/debian-root.log"; return 1; }
  # pgquorum reads the host name from /proc (for [node] name); unmounted by the EXIT trap
  # of check's subshell.
  mount -t proc proc "$ROOT/proc"
  trap 'umount "$ROOT/proc"' EXIT
  local got
  # shellcheck disable=SC2016 # dpkg-query's format, not the shell's
  expect "$(in_root dpkg-query -W -f '${Status} ${Version}' pgquorum)" "^install ok installed ${version//./\\.}-1$" "dpkg: installed"
  got=$(in_root stat -c '%a %U:%G %F %n' /usr/bin/pgquorum /etc/pgquorum /etc/pgquorum/pgquorum.toml \
    /var/lib/pgquorum /usr/lib/systemd/system/pgquorum.service \
    /etc/postgresql-common/createcluster.d/50-pgquorum.conf /usr/share/doc/pgquorum/README.md)
  echo "$got"
  expect "$got" '^755 root:root regular file /usr/bin/pgquorum$' "/usr/bin/pgquorum 0755 root"
  expect "$got" '^755 root:root directory /etc/pgquorum$' "/etc/pgquorum 0755 root"
  expect "$got" '^644 root:root regular file /etc/pgquorum/pgquorum.toml$' "the config 0644 root"
  expect "$got" '^711 pgquorum:pgquorum directory /var/lib/pgquorum$' "/var/lib/pgquorum pgquorum 0711"
  expect "$(in_root getent passwd pgquorum)" '^pgquorum:x:[0-9]+:[0-9]+:pgquorum daemon,*:/var/lib/pgquorum:/usr/sbin/nologin$' \
    "the pgquorum system user"
  expect "$got" '^644 root:root regular file /usr/lib/systemd/system/pgquorum.service$' "the unit"
  expect "$got" '^644 root:root regular file /etc/postgresql-common/createcluster.d/50-pgquorum.conf$' "the createcluster snippet"
  # shellcheck disable=SC2016
  expect "$(in_root dpkg-query -W -f '${Conffiles}\n' pgquorum)" '^ /etc/pgquorum/pgquorum\.toml [0-9a-f]+$' "the config as a conffile"
  cmp "$ROOT/etc/pgquorum/pgquorum.toml" packaging/pgquorum.toml.example
  [ -z "$(in_root dpkg --verify pgquorum)" ] || { in_root dpkg --verify pgquorum; return 1; }
  # Enabled: the symlink deb-systemd-helper made, as `systemctl enable` would.
  local link=$WANTS
  [ -L "$ROOT$link" ] || { echo "missing: $link"; return 1; }
  echo "$link -> $(readlink "$ROOT$link")"
  expect "$(readlink "$ROOT$link")" '^(/usr)?/lib/systemd/system/pgquorum\.service$' "the wants symlink's target"
  # Not started: no pgquorum process has the root as its root, and the postinst has no
  # start action (the policy-rc.d would have refused one, which is not the same thing).
  local p
  for p in /proc/[0-9]*; do
    if [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] && [ "$(cat "$p/comm" 2>/dev/null)" = pgquorum ]; then
      echo "pgquorum is running in the root (pid ${p#/proc/})"
      return 1
    fi
  done
  expect_not "$(cat "$ROOT/var/lib/dpkg/info/pgquorum.postinst")" \
    '^[[:space:]]*(deb-systemd-invoke|invoke-rc\.d|systemctl)([[:space:]]+-[-a-z]+)*[[:space:]]+(start|restart|try-restart)' \
    "a start in the postinst"
  local out
  out=$(in_root pgquorum --version)
  echo "chroot: pgquorum --version: $out"
  expect "$out" "^pgquorum ${version//./\\.}$" "pgquorum --version"
  out=$(in_root pgquorum config check --config /etc/pgquorum/pgquorum.toml 2>&1) || { echo "$out"; return 1; }
  echo "chroot: pgquorum config check: ok"
  # Debian's main cluster: none enabled on 5432; new versions get no main cluster.
  expect "$(in_root pg_conftool /etc/postgresql-common/createcluster.conf show -bs create_main_cluster)" '^off$' \
    "create_main_cluster off"
  grep -A1 '^pgquorum: stopped' "$ROOT/tmp/pgquorum/apt-install.log" | sed 's/^/apt-get install: /' || true
  out=$(in_root pg_lsclusters --no-header || true)
  echo "chroot: pg_lsclusters: ${out:-(no cluster)}"
  local ver name port
  while read -r ver name port _; do
    if [ -z "$ver" ] || [ "$port" != 5432 ]; then continue; fi
    if ! grep -Eq '^[[:space:]]*disabled[[:space:]]*$' "$ROOT/etc/postgresql/$ver/$name/start.conf"; then
      echo "cluster $ver/$name on 5432 is not disabled"
      return 1
    fi
  done <<<"$out"
}

check_binary() {
  local dist=target/dist/pgquorum
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT # (check's subshell)
  mkdir -p "$tmp/deb"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/deb" ./usr/bin/pgquorum
  # rpm itself unpacks the .rpm (into an empty rpm database; Debian's rpm2cpio exits 1).
  mkdir -p "$tmp/rpm"
  rpm --root "$tmp/rpm" --initdb
  rpm --root "$tmp/rpm" -i --nodeps --noscripts --notriggers "$rpm" 2>/dev/null
  sha256sum "$dist" "$tmp/deb/usr/bin/pgquorum" "$tmp/rpm/usr/bin/pgquorum" |
    sed "s|$tmp/deb|in the .deb: |; s|$tmp/rpm|in the .rpm: |"
  cmp "$dist" "$tmp/deb/usr/bin/pgquorum"
  cmp "$dist" "$tmp/rpm/usr/bin/pgquorum"
  if readelf -S "$dist" | grep -Eq '\.(symtab|debug_[a-z]+)\b'; then
    echo "$dist is not stripped"
    return 1
  fi
  local glibc
  glibc=$(glibc_needed "$dist")
  echo "highest GLIBC symbol version needed: GLIBC_$glibc (limit $MAX_GLIBC)"
  version_le "$glibc" "$MAX_GLIBC"
}

# Makes $copy, a throw-away copy of the installed root for one check, with /proc and
# /dev/shm mounted. The EXIT trap of check's subshell removes it however the check ends.
make_copy() { # NAME
  copy="$ROOT-$1"
  remove_root "$copy"
  cp -a "$ROOT" "$copy"
  trap 'remove_root "$copy"' EXIT
  mount -t proc proc "$copy/proc"
  mount -t tmpfs tmpfs "$copy/dev/shm"
}
in_copy() { chroot "$copy" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"; }

check_main_cluster() {
  "$root_ok" || { echo "no Debian root (see $LOGS/debian-root.log)"; return 1; }
  local ver out
  make_copy main-cluster
  ver=$(in_copy ls /usr/lib/postgresql | sort -n | tail -n 1)
  local start_conf="$copy/etc/postgresql/$ver/main/start.conf"

  # A fresh main cluster, as postgresql-NN made it when apt installed it for pgquorum (and
  # pgquorum's postinst then disabled): back to that state, then pgquorum installed afresh.
  in_copy dpkg --purge pgquorum >/dev/null
  [ -d "$copy/etc/postgresql/$ver/main" ] || in_copy pg_createcluster --port 5432 "$ver" main >/dev/null
  sed -i 's/^disabled$/auto/' "$start_conf"
  expect "$(cat "$start_conf")" '^auto$' "the cluster set to start automatically"
  out=$(in_copy dpkg -i "/tmp/pgquorum/$(basename "$deb")" 2>&1)
  echo "fresh cluster, postinst says:"
  grep -A3 "^pgquorum: stopped" <<<"$out" | sed 's/^/  /' || true
  expect "$out" "^pgquorum: stopped Debian's freshly created PostgreSQL cluster $ver/main on port 5432" "the fresh cluster stopped"
  expect "$(cat "$start_conf")" '^disabled$' "start.conf disabled"
  [ -f "$copy/var/lib/postgresql/$ver/main/PG_VERSION" ] || { echo "the cluster's data went away"; return 1; }

  # A main cluster with a database of its own is only reported.
  in_copy dpkg --purge pgquorum >/dev/null
  sed -i 's/^disabled$/auto/' "$start_conf"
  in_copy pg_ctlcluster "$ver" main start
  in_copy runuser -u postgres -- createdb --port 5432 app
  in_copy pg_ctlcluster "$ver" main stop
  out=$(in_copy dpkg -i "/tmp/pgquorum/$(basename "$deb")" 2>&1)
  echo "cluster with a database, postinst says:"
  grep -A5 "^pgquorum: WARNING" <<<"$out" | sed 's/^/  /' || true
  expect "$out" "^pgquorum: WARNING: PostgreSQL cluster $ver/main .* is set to start on port 5432" "the warning"
  expect "$(cat "$start_conf")" '^auto$' "start.conf left alone"
}

check_reinstall_purge() {
  "$root_ok" || { echo "no Debian root (see $LOGS/debian-root.log)"; return 1; }
  make_copy reinstall
  local conf=/etc/pgquorum/pgquorum.toml out
  echo '# changed by the operator' >>"$copy$conf"
  out=$(in_copy dpkg -i "/tmp/pgquorum/$(basename "$deb")" 2>&1) || { echo "$out"; return 1; }
  [ "$(tail -n 1 "$copy$conf")" = '# changed by the operator' ] || {
    echo "reinstalling replaced the changed $conf"
    return 1
  }
  [ -L "$copy$WANTS" ] || { echo "not enabled after reinstalling"; return 1; }
  echo "reinstall: $conf keeps the operator's change; the unit stays enabled"
  # Upgrading from the layout where postgres owned the state directory: one never set up is
  # handed to pgquorum at once; one set up is left for the daemon to take over at its next
  # start (the daemon of the old version may still run, as postgres), and the postinst says so.
  in_copy chown postgres:postgres /var/lib/pgquorum # the root's postgres, not ours
  in_copy chmod 0700 /var/lib/pgquorum
  out=$(in_copy dpkg -i "/tmp/pgquorum/$(basename "$deb")" 2>&1) || { echo "$out"; return 1; }
  expect "$(in_copy stat -c '%a %U:%G' /var/lib/pgquorum)" '^711 pgquorum:pgquorum$' "upgrade: an empty postgres-owned state directory handed to pgquorum"
  in_copy chown postgres:postgres /var/lib/pgquorum # the root's postgres, not ours
  in_copy chmod 0700 /var/lib/pgquorum
  echo '{}' >"$copy/var/lib/pgquorum/node.json"
  out=$(in_copy dpkg -i "/tmp/pgquorum/$(basename "$deb")" 2>&1) || { echo "$out"; return 1; }
  expect "$out" '^pgquorum: /var/lib/pgquorum now belongs to the pgquorum user' "upgrade: the postinst tells of the takeover"
  expect "$(in_copy stat -c '%a %U:%G' /var/lib/pgquorum)" '^700 postgres:postgres$' "upgrade: a set-up state directory left to the daemon"
  echo "upgrade from the postgres layout: empty state directory handed over; a set-up one left to the daemon, with a message"
  rm "$copy/var/lib/pgquorum/node.json"
  # A node that was set up: purging keeps its state, removes the rest.
  echo '{}' >"$copy/var/lib/pgquorum/node.json"
  out=$(in_copy dpkg --purge pgquorum 2>&1)
  expect "$out" '^pgquorum: kept /var/lib/pgquorum ' "purge saying it kept the state directory"
  [ -f "$copy/var/lib/pgquorum/node.json" ] || { echo "purge deleted /var/lib/pgquorum"; return 1; }
  local gone
  for gone in /etc/pgquorum /usr/bin/pgquorum /usr/lib/systemd/system/pgquorum.service "$WANTS" \
    /etc/postgresql-common/createcluster.d/50-pgquorum.conf; do
    if [ -e "$copy$gone" ] || [ -L "$copy$gone" ]; then
      echo "purge left $gone"
      return 1
    fi
  done
  echo "purge: /var/lib/pgquorum kept (it held node.json); the config, binary, unit and its symlink gone"
}

check_rpm_scriptlets() {
  "$root_ok" || { echo "no Debian root (see $LOGS/debian-root.log)"; return 1; }
  make_copy rpm
  in_copy dpkg --purge pgquorum >/dev/null # what stays: PostgreSQL and its postgres user
  [ ! -e "$copy/var/lib/pgquorum" ] || { echo "purging the .deb left /var/lib/pgquorum"; return 1; }
  in_copy userdel pgquorum # the .deb's postinst made it (purging keeps system users)
  # The .rpm's files as rpm unpacks them (not its database), and its scriptlets as shipped.
  local payload="$copy/tmp/rpm-payload" out tag
  mkdir -p "$payload"
  rpm --root "$payload" --initdb
  rpm --root "$payload" -i --nodeps --noscripts --notriggers "$rpm" 2>/dev/null
  tar -c -C "$payload" usr etc | tar -x -C "$copy"
  for tag in POSTIN PREUN POSTUN; do
    rpm -qp --qf "%{$tag}\n" "$rpm" >"$copy/tmp/$tag"
  done
  # As on RHEL (90-default.preset, 99-default-disable.preset): what no preset enables
  # stays disabled, so only pgquorum's own preset can enable it.
  mkdir -p "$copy/etc/systemd/system-preset"
  echo 'disable *' >"$copy/etc/systemd/system-preset/99-default-disable.preset"
  out=$(in_copy sh -e /tmp/POSTIN 1 2>&1) || { echo "$out"; return 1; }
  expect "$(in_copy stat -c '%a %U:%G' /var/lib/pgquorum)" '^711 pgquorum:pgquorum$' "%post: /var/lib/pgquorum pgquorum 0711"
  expect "$(in_copy getent passwd pgquorum)" '^pgquorum:x:[0-9]+:[0-9]+:pgquorum daemon:/var/lib/pgquorum:/sbin/nologin$' "%post: the pgquorum system user"
  [ -L "$copy$WANTS" ] || { echo "%post (systemctl preset) did not enable the unit"; return 1; }
  echo "%post 1: /var/lib/pgquorum 711 pgquorum; $WANTS -> $(readlink "$copy$WANTS")"
  out=$(in_copy sh -e /tmp/PREUN 0 2>&1) || { echo "$out"; return 1; }
  [ ! -L "$copy$WANTS" ] || { echo "%preun 0 left the unit enabled"; return 1; }
  echo "%preun 0: unit disabled"
  rm -f "$copy/usr/bin/pgquorum" "$copy/etc/pgquorum/pgquorum.toml" "$copy/usr/lib/systemd/system/pgquorum.service" \
    "$copy/usr/lib/systemd/system-preset/50-pgquorum.preset"
  out=$(in_copy sh -e /tmp/POSTUN 0 2>&1) || { echo "$out"; return 1; }
  if [ -e "$copy/etc/pgquorum" ] || [ -e "$copy/var/lib/pgquorum" ]; then
    echo "%postun 0 left /etc/pgquorum or an empty /var/lib/pgquorum"
    return 1
  fi
  echo "%postun 0: empty /etc/pgquorum and /var/lib/pgquorum removed"
}

check "lintian on $(basename "$deb"): no errors" check_lintian
check "rpm -qpi/-qpl/-qpR/--scripts on $(basename "$rpm")" check_rpm
check "systemd-analyze verify pgquorum.service" check_systemd_verify
check "the .deb installed with apt in a clean Debian 12 root" check_installed
check "one stripped binary in both packages, GLIBC <= $MAX_GLIBC" check_binary
check "Debian's main cluster: a fresh one disabled, one with data left alone" check_main_cluster
check "reinstall keeps a changed config; purge keeps a state directory in use" check_reinstall_purge
check "the .rpm's scriptlets on its files in a Debian root" check_rpm_scriptlets

echo "Debian root with the package installed: $ROOT"
echo "took $(($(date +%s) - started)) s"
echo "packaging: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
