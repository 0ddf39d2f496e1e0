#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, then the packages
# and the Vagrant demo's provisioning. `make test` and `.ci/run` both run this. Integration
# tests start real pgquorum daemons on loopback and in network namespaces; the package and
# Vagrant checks need root (they skip without it locally, and fail in CI, CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prereqs.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked --lib --bins --tests -- --test-threads="${PGQUORUM_TEST_THREADS:-2}"
echo "== packages: .deb and .rpm (scripts/test-packages.sh)"
bash scripts/test-packages.sh
echo "== the Vagrant demo's provisioning (scripts/test-vagrant.sh)"
bash scripts/test-vagrant.sh
