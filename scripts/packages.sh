#!/usr/bin/env bash
# Builds the pgquorum packages from a clean clone (`make packages`):
#   target/debian/pgquorum_<version>-1_amd64.deb      (cargo-deb)
#   target/generate-rpm/pgquorum-<version>-1.x86_64.rpm  (cargo-generate-rpm)
# Both ship one and the same binary, built with cargo-zigbuild against glibc 2.28 so that
# it runs on EL8 as well as on Debian 12 and Ubuntu 24.04, and stripped (target/dist/).
# Installs the tools it needs, pinned, only when they are missing; a second run rebuilds
# only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
CARGO_ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.17.0 # from PyPI; the zig release cargo-zigbuild 0.24 is tested with
GLIBC_VERSION=2.28     # EL8's
TARGET=x86_64-unknown-linux-gnu
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/pgquorum
ZIG_VENV=$CACHE/ziglang-$ZIGLANG_VERSION
# The zig build's own target directory: outside the clone, so that a fresh clone (as in CI)
# recompiles only pgquorum itself, not its ~300 dependencies, and never waits for (or
# invalidates) a developer's `cargo build --release` in target/.
ZIG_TARGET_DIR=${PGQUORUM_ZIGBUILD_TARGET_DIR:-$CACHE/zigbuild-target}

# Rust and a C compiler (scripts/prereqs.sh installs what is missing).
# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$HOME/.cargo/bin:$PATH"

# Debian packages: dpkg-shlibdeps (cargo-deb's $auto dependencies), rpm's find-requires
# (the .rpm's library dependencies, as rpmbuild finds them), strip/objdump, venv.
need_apt=()
command -v dpkg-shlibdeps >/dev/null 2>&1 || need_apt+=(dpkg-dev)
[ -x /usr/lib/rpm/find-requires ] || need_apt+=(rpm)
command -v strip >/dev/null 2>&1 || need_apt+=(binutils)
command -v objdump >/dev/null 2>&1 || need_apt+=(binutils)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "packages.sh: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]}) or run as root" >&2
    exit 1
  fi
  echo "installing ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Cargo subcommands, at exactly the pinned versions.
installed=$(cargo install --list)
for tool in "cargo-deb $CARGO_DEB_VERSION" "cargo-generate-rpm $CARGO_GENERATE_RPM_VERSION" \
  "cargo-zigbuild $CARGO_ZIGBUILD_VERSION"; do
  name=${tool% *}
  version=${tool#* }
  if ! grep -qxF "$name v$version:" <<<"$installed"; then
    echo "installing $name $version" >&2
    cargo install --quiet --locked "$name@$version"
  fi
done

# zig, from PyPI's ziglang wheel, in a virtualenv of its own (kept between clones).
if ! "$ZIG_VENV/bin/python" -m ziglang version 2>/dev/null | grep -qxF "$ZIGLANG_VERSION"; then
  echo "installing ziglang $ZIGLANG_VERSION into $ZIG_VENV" >&2
  rm -rf "$ZIG_VENV"
  python3 -m venv "$ZIG_VENV"
  "$ZIG_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "ziglang==$ZIGLANG_VERSION"
fi
export CARGO_ZIGBUILD_PYTHON_PATH="$ZIG_VENV/bin/python"

# The binary; zig cc also compiles ring's C and assembly for the same glibc.
# Cargo judges pgquorum's own sources by modification time, so a clone whose files are
# older than the last build from another clone would look up to date: when the clone
# changes, pgquorum's artifacts (only those) are cleaned first.
stamp=$ZIG_TARGET_DIR/pgquorum-built-from
if [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$PWD" ]; then
  cargo clean --quiet --release --target "$TARGET" --target-dir "$ZIG_TARGET_DIR" -p pgquorum
fi
mkdir -p "$ZIG_TARGET_DIR"
echo "$PWD" >"$stamp"
echo "== cargo zigbuild --release --target $TARGET.$GLIBC_VERSION (in $ZIG_TARGET_DIR)" >&2
cargo zigbuild --quiet --release --locked --bin pgquorum \
  --target "$TARGET.$GLIBC_VERSION" --target-dir "$ZIG_TARGET_DIR"
built=$ZIG_TARGET_DIR/$TARGET/release/pgquorum
dist=target/dist/pgquorum
mkdir -p target/dist
# The release profile keeps line tables for backtraces; the packages ship without them.
# (Always, as it takes a moment: the build directory may be shared with another clone.)
strip --strip-all --remove-section=.comment -o "$dist.tmp" "$built"
mv "$dist.tmp" "$dist"
glibc=$(objdump -T "$dist" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -u -V | tail -n 1)
echo "$dist: needs $glibc at most" >&2

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
deb=target/debian/pgquorum_${version}-1_amd64.deb
rpm=target/generate-rpm/pgquorum-${version}-1.x86_64.rpm

echo "== cargo deb" >&2
cargo deb --quiet --no-build --locked --output "$deb" >/dev/null
echo "== cargo generate-rpm" >&2
# gzip, not the default zstd, keeps the payload readable by the oldest rpm we target (EL8).
cargo generate-rpm --payload-compress gzip --auto-req find-requires --output "$rpm"

echo "$deb"
echo "$rpm"
