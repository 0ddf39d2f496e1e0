# pgquorum %post. $1: 1 on first install, 2 or more on upgrade.
# The daemon runs as its own system user, pgquorum, which owns its secrets; PostgreSQL runs
# as postgres (its server package makes that user) and cannot read them.
# /var/lib/pgquorum, pgquorum:pgquorum 0711, must exist before the first start: `pgquorum
# init` or `pgquorum node join` fills it. On upgrade from the layout where postgres owned
# it, a directory already set up is left to the daemon, which takes over its own files
# (only those) when it next starts.
if ! getent passwd postgres >/dev/null 2>&1; then
    echo "pgquorum: there is no postgres user; install the PostgreSQL server package first" >&2
    exit 1
fi
if ! getent passwd pgquorum >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/pgquorum --no-create-home \
        --shell /sbin/nologin --comment "pgquorum daemon" pgquorum
fi
if [ ! -d /var/lib/pgquorum ]; then
    install -d -o pgquorum -g pgquorum -m 0711 /var/lib/pgquorum
elif [ "$1" -eq 1 ] || [ -z "$(ls -A /var/lib/pgquorum)" ]; then
    chown pgquorum:pgquorum /var/lib/pgquorum
    chmod 0711 /var/lib/pgquorum
fi
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
    # Enabled through 50-pgquorum.preset (a higher-priority preset file can say otherwise);
    # not started: the node has to be set up first.
    systemctl preset pgquorum.service >/dev/null 2>&1 || :
    cat <<'MSG'
pgquorum: installed; the pgquorum service is enabled but not started. Next: edit
  /etc/pgquorum/pgquorum.toml (set [postgresql] bin_dir = "/usr/bin" for the distribution's
  postgresql-server; PGDG's /usr/pgsql-NN is found by itself), run "pgquorum init" on the
  first host or "pgquorum node join <peer>:7400 --token <token>" on the others, then
  "systemctl start pgquorum".
MSG
elif systemctl --quiet is-active pgquorum.service 2>/dev/null; then
    # Not restarted on upgrade: restarting the primary's daemon stops its PostgreSQL and
    # hands over the lease. Restart members one at a time, replicas first.
    cat <<'MSG'
pgquorum: upgraded; the running daemon keeps the old version until "systemctl restart
  pgquorum" (one member at a time; "pgquorum switchover" before restarting the primary).
MSG
fi
exit 0
