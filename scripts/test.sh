#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests. `make test` and
# `.ci/run` both run this. Integration tests start real pgquorum daemons on loopback.
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
