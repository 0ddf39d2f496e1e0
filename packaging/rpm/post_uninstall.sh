# pgquorum %postun. $1: 0 when the package is erased, 1 or more on upgrade.
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -eq 0 ]; then
    rmdir /etc/pgquorum 2>/dev/null || :
    # Never deleted while it holds anything: node identity, Raft log, PostgreSQL data.
    if [ -d /var/lib/pgquorum ] && ! rmdir /var/lib/pgquorum 2>/dev/null; then
        echo "pgquorum: kept /var/lib/pgquorum (node identity, Raft log, PostgreSQL data); remove it by hand if you mean to" >&2
    fi
fi
exit 0
