#!/usr/bin/env bash
# Installs what building and testing pgquorum needs on Debian/Ubuntu, only when missing:
# a C compiler (ring, the crypto library, builds C), Rust >= 1.88, the PostgreSQL server
# and client (the supervisor manages a real PostgreSQL; tests run it), iproute2 (`ip`:
# the partition tests make hosts out of network namespaces), nftables (`nft`: the fault
# campaign's one-way partitions and the three-region relays' NAT rules) and HAProxy (its
# check-ssl health checks of the REST API are tested against a real one), pgBackRest
# (backups, WAL archiving and restores are tested with the real one), and a JDK with
# PostgreSQL's JDBC driver and Python's psycopg 3 (the pooled port is tested with these
# real client drivers; the JDK's source launcher runs the JDBC program).
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v curl >/dev/null 2>&1 || need_apt+=(curl ca-certificates)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
ls /usr/lib/postgresql/*/bin/psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
[ -x /usr/bin/pgbackrest ] || need_apt+=(pgbackrest)
command -v javac >/dev/null 2>&1 || need_apt+=(default-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || need_apt+=(libpostgresql-jdbc-java)
/usr/bin/python3 -c 'import psycopg' >/dev/null 2>&1 || need_apt+=(python3-psycopg)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "installing Rust with rustup (Debian's packaged Rust is older than the 1.88 we need)" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
