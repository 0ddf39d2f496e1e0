"""psycopg 3 (Debian's python3-psycopg) through the pooled port in transaction mode, run by
tests/pooler_drivers.rs with Debian's interpreter (which has the package):

    /usr/bin/python3 tests/drivers/pooled_psycopg.py PORT CLIENTS ROUNDS

CLIENTS connections in autocommit mode (more than the pool has server connections) take
turns, statement by statement, so that their transactions share server connections. Each
part is one named check that prints "PASS <name>" or "FAIL <name>: <error>" (with the
traceback on stderr) and the next part runs on fresh connections either way, so that one
failure does not hide another: server-side prepared statements (prepare=True) interleaved
across clients; that such a statement is prepared on the server connection; pairs of
transactions side by side with `with conn.transaction()`, committed and rolled back;
executemany (psycopg 3.1 runs it in pipeline mode when libpq has it); pipeline mode itself,
with prepared statements, in a transaction, and with an error that aborts the rest of the
pipeline up to its Sync; prepared statements that fail, in autocommit and in a transaction;
named (server-side) cursors fetched alternately by two clients; all clients at once from
their own threads; and the rows every passed part left. Then "backends=N" (how many server
connections the clients saw) and "ok" if every check passed; the exit status is 1
otherwise.
"""

import sys
import threading
import traceback

import psycopg

PORT, CLIENTS, ROUNDS = (int(a) for a in sys.argv[1:4])
BATCH = 25
THREAD_TRANSACTIONS = 30
ECHO = "select %s::int * 100 + %s::int, pg_backend_pid()"
INSERT = "insert into py_rows values (%s, %s, %s, %s)"
COUNT = "select count(*) from py_rows where client = %s and kind = %s"

backends = set()
# Rows per client of each kind, set by a check once it has passed.
expected = {}
failed = []


def connect(client):
    # Half the clients over TLS (the pooler offers it; require does not verify).
    ssl = "require" if client % 2 else "disable"
    return psycopg.connect(
        f"host=127.0.0.1 port={PORT} user=app password=pencil dbname=app "
        f"sslmode={ssl} connect_timeout=10 application_name=psycopg-{client}",
        autocommit=True,
    )


def check(ok, what):
    if not ok:
        raise AssertionError(what)


def echo(conn, a, b, prepare=True):
    value, pid = conn.execute(ECHO, (a, b), prepare=prepare).fetchone()
    check(value == a * 100 + b, f"echo {a} {b}: {value}")
    backends.add(pid)


def count(conn, client, kind):
    return conn.execute(COUNT, (client, kind), prepare=True).fetchone()[0]


def part(name, conns, body):
    """Runs one check on `conns`; returns the connections the next check uses."""
    try:
        body(conns)
        print(f"PASS {name}", flush=True)
        return conns
    except Exception as e:
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc()
        sys.stderr.flush()
        failed.append(name)
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass
        return [connect(c) for c in range(CLIENTS)]


def prepared(conns):
    for c, conn in enumerate(conns):
        check(conn.pgconn.ssl_in_use == (c % 2 == 1), f"client {c}: TLS {conn.pgconn.ssl_in_use}")
    for r in range(ROUNDS):
        for c, conn in enumerate(conns):
            echo(conn, r, c)
            conn.execute(INSERT, (c, r, "auto", r), prepare=True)
            check(count(conn, c, "auto") == r + 1, f"client {c} round {r}: its rows")
    expected["auto"] = ROUNDS


def prepared_on_server(conns):
    # In one transaction the server connection is fixed: the prepared insert is there, under
    # whatever name the pooler gives it.
    for c, conn in enumerate(conns):
        with conn.transaction():
            conn.execute(INSERT, (c, -1, "server", 0), prepare=True)
            n = conn.execute(
                "select count(*) from pg_prepared_statements where statement = %s",
                ("insert into py_rows values ($1, $2, $3, $4)",),
            ).fetchone()[0]
            check(n >= 1, f"client {c}: the insert is not prepared on its connection")
    expected["server"] = 1


def transactions(conns):
    committed = 0
    for r in range(ROUNDS):
        rollback = r % 3 == 2
        # Pairs: as many open transactions as the pool has connections.
        for a in range(0, CLIENTS - 1, 2):
            b = a + 1
            ca, cb = conns[a], conns[b]
            with ca.transaction() as ta:
                with cb.transaction() as tb:
                    ca.execute(INSERT, (a, r, "tx", 1), prepare=True)
                    cb.execute(INSERT, (b, r, "tx", 1), prepare=True)
                    check(count(ca, a, "tx") == committed + 1, "a sees its uncommitted row")
                    check(count(ca, b, "tx") == committed, "a sees b's uncommitted row")
                    check(count(cb, b, "tx") == committed + 1, "b sees its uncommitted row")
                    check(count(cb, a, "tx") == committed, "b sees a's uncommitted row")
                    if rollback:
                        raise psycopg.Rollback(tb)
                if rollback:
                    raise psycopg.Rollback(ta)
        if not rollback:
            committed += 1
    for c, conn in enumerate(conns):
        check(count(conn, c, "tx") == committed, f"client {c}: committed transactions' rows")
    expected["tx"] = committed


def executemany(conns):
    for c, conn in enumerate(conns):
        with conn.cursor() as cur:
            cur.executemany(INSERT, [(c, i, "many", i) for i in range(BATCH)])
            with conn.transaction():
                cur.executemany(INSERT, [(c, i, "many", i) for i in range(BATCH)])
        check(count(conn, c, "many") == 2 * BATCH, f"client {c}: executemany rows")
    expected["many"] = 2 * BATCH


def pipeline(conns):
    check(psycopg.Pipeline.is_supported(), "libpq has no pipeline mode")
    for r in range(3):
        for c, conn in enumerate(conns):
            with conn.pipeline() as p:
                inserted = [conn.execute(INSERT, (c, i, "pipe", r), prepare=True) for i in range(4)]
                echoed = conn.execute(ECHO, (r, c), prepare=True)
                p.sync()
                value, pid = echoed.fetchone()
                check(value == r * 100 + c, f"pipelined echo {value}")
                backends.add(pid)
                check(all(cur.rowcount == 1 for cur in inserted), "pipelined inserts")
            # In a transaction, with results fetched before the pipeline's end (psycopg
            # sends a Flush, not a Sync).
            with conn.pipeline(), conn.transaction():
                conn.execute(INSERT, (c, 100 + r, "pipe", r), prepare=True)
                n = conn.execute(COUNT, (c, "pipe"), prepare=True).fetchone()[0]
                check(n == 5 * (r + 1), f"client {c} sees {n} pipelined rows")
    expected["pipe"] = 15


def pipeline_error(conns):
    for c, conn in enumerate(conns):
        try:
            with conn.pipeline():
                conn.execute(INSERT, (c, 0, "lost", 0), prepare=True)
                conn.execute("select 1 / 0")
                conn.execute(INSERT, (c, 1, "lost", 0), prepare=True)
            raise AssertionError("no error from the pipeline")
        except psycopg.errors.DivisionByZero:
            pass
        # The pipeline ran as one implicit transaction: nothing of it stays, and the
        # connection goes on.
        check(count(conn, c, "lost") == 0, f"client {c}: rows of an aborted pipeline")
        echo(conn, 7, c)
    expected["lost"] = 0


def prepared_error(conns):
    # A server-prepared statement that fails now and then, in autocommit (the server skips
    # to the Sync) and in a transaction (rolled back); the client goes on.
    divide = "select 1000 / %s::int"
    for i in range(12):
        for c, conn in enumerate(conns):
            zero = i % 4 == 3
            try:
                value = conn.execute(divide, (0 if zero else i + 1,), prepare=True).fetchone()[0]
                check(not zero, "no error dividing by zero")
                check(value == 1000 // (i + 1), f"a quotient {value}")
            except psycopg.errors.DivisionByZero:
                check(zero, "an error dividing by a number")
    for c, conn in enumerate(conns):
        try:
            with conn.transaction():
                conn.execute(INSERT, (c, 0, "failed", 0), prepare=True)
                conn.execute(divide, (0,), prepare=True)
            raise AssertionError("no error dividing by zero in a transaction")
        except psycopg.errors.DivisionByZero:
            pass
        check(count(conn, c, "failed") == 0, f"client {c}: the failed transaction's row")
        check(conn.execute(divide, (8,), prepare=True).fetchone()[0] == 125, "after the error")
    expected["failed"] = 0


def server_cursor(conns):
    # Named cursors (DECLARE, FETCH in a transaction), two clients at once, their fetches
    # alternating. A cursor is session state, which the pooler discards before the
    # connection serves another client, and that drops the connection's prepared
    # statements: the clients' own are prepared again wherever they run next.
    for r in range(3):
        for a in range(0, CLIENTS - 1, 2):
            pair = [conns[a], conns[a + 1]]
            with pair[0].transaction(), pair[1].transaction():
                cursors = [conn.cursor(name=f"big{a + k}") for k, conn in enumerate(pair)]
                for k, cur in enumerate(cursors):
                    cur.execute("select g from generate_series(1, %s) g", (100 * (k + 1),))
                got = [[], []]
                more = True
                while more:
                    more = False
                    for k, cur in enumerate(cursors):
                        rows = cur.fetchmany(7)
                        got[k].extend(g for (g,) in rows)
                        more = more or bool(rows)
                for k, cur in enumerate(cursors):
                    check(got[k] == list(range(1, 100 * (k + 1) + 1)), f"cursor {k}: {got[k][:9]}")
                    cur.close()
            for k, conn in enumerate(pair):
                echo(conn, r, a + k)
                check(count(conn, a + k, "none") == 0, "a prepared count after a cursor")


def threads(conns):
    errors = []

    def client(c):
        conn = conns[c]
        try:
            for t in range(THREAD_TRANSACTIONS):
                with conn.transaction():
                    conn.execute(INSERT, (c, t, "thread", t), prepare=True)
                    check(count(conn, c, "thread") == t + 1, f"client {c}: its thread's rows")
                    echo(conn, t, c)
        except Exception as e:
            traceback.print_exc()
            errors.append(f"client {c}: {type(e).__name__}: {e}")

    running = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in running:
        t.start()
    for t in running:
        t.join()
    check(not errors, "; ".join(errors))
    expected["thread"] = THREAD_TRANSACTIONS


def totals(conns):
    rows = conns[0].execute(
        "select client, kind, count(*) from py_rows group by client, kind"
    ).fetchall()
    have = {(c, k): n for c, k, n in rows}
    for c in range(CLIENTS):
        for kind, n in expected.items():
            got = have.get((c, kind), 0)
            check(got == n, f"client {c} has {got} rows of kind {kind}, expected {n}")


def main():
    conns = [connect(c) for c in range(CLIENTS)]
    conns[0].execute("drop table if exists py_rows")
    conns[0].execute("create table py_rows (client int, round int, kind text, v int)")
    for name, body in [
        ("prepared", prepared),
        ("prepared_on_server", prepared_on_server),
        ("transactions", transactions),
        ("executemany", executemany),
        ("pipeline", pipeline),
        ("pipeline_error", pipeline_error),
        ("prepared_error", prepared_error),
        ("server_cursor", server_cursor),
        ("threads", threads),
        ("totals", totals),
    ]:
        conns = part(name, conns, body)
    for conn in conns:
        conn.close()
    print(f"backends={len(backends)}")
    if failed:
        print(f"failed: {' '.join(failed)}")
        sys.exit(1)
    print("ok")


main()
