#!/usr/bin/env bash
# Switchovers under load through three paths (issue 20): 50 clients commit two-statement
# transactions in a loop while 5 planned switchovers move the primary around a three-member
# cluster on loopback (release build, real PostgreSQL), through (a) the pooled port in
# transaction mode, (b) the writer port of the same member, (c) HAProxy in front of the
# members' PostgreSQL with Patroni's documented checks (OPTIONS /primary, inter 3s fall 3
# rise 2, on-marked-down shutdown-sessions). A client whose transaction fails connects
# again after 50 ms and goes on. Prints per path the commits, the failed transactions, the
# acknowledged commits missing on the last primary, and per switchover the longest any
# client went without a commit. The run is the ignored test
# compare_switchovers_through_the_pooler_the_writer_port_and_haproxy in
# tests/pooler_switchover.rs; node logs stay in the target directory's test-logs.
#
#   scripts/bench-switchover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prereqs.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --release --locked -q --test pooler_switchover -- --ignored --nocapture \
  --test-threads=1 compare_switchovers_through_the_pooler_the_writer_port_and_haproxy
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $(ls /usr/lib/postgresql | sort -V | tail -1), $(haproxy -v | head -1)"
