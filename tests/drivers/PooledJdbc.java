// PostgreSQL's JDBC driver (Debian's libpostgresql-jdbc-java) through the pooled port in
// transaction mode, run by tests/pooler_drivers.rs with the JDK's source launcher:
//
//   java -cp /usr/share/java/postgresql.jar tests/drivers/PooledJdbc.java PORT CLIENTS ROUNDS
//
// CLIENTS connections (more than the pool has server connections) take turns, statement by
// statement, so that their transactions share server connections. Each runs
// PreparedStatements more often than prepareThreshold (5), after which the driver uses named
// server-side statements (S_1, S_2, ...) that must follow the client from connection to
// connection; in autocommit and in explicit transactions (committed and rolled back);
// batches; a statement closed and prepared again; statements that fail, in autocommit and
// in transactions; results fetched in chunks from named portals (setFetchSize); and last
// all clients at once from their own threads. It checks every result itself, prints what
// the test checks again ("key=value" lines, then "ok"), and exits 1 on the first failure.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.postgresql.PGStatement;

public class PooledJdbc {
    /** Transactions each client runs from its own thread at the end. */
    static final int THREAD_TRANSACTIONS = 30;
    /** Rows each client inserts in each of its two batches. */
    static final int BATCH = 25;

    static int step = 0;

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException("check failed: " + what);
        }
    }

    static Connection connect(int port, int client) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", "app");
        p.setProperty("password", "pencil");
        // Half the clients over TLS (the pooler offers it; require does not verify).
        p.setProperty("sslmode", client % 2 == 0 ? "disable" : "require");
        p.setProperty("connectTimeout", "10");
        // A pooler that stops answering fails the run instead of hanging it.
        p.setProperty("socketTimeout", "60");
        p.setProperty("ApplicationName", "jdbc-" + client);
        return DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + port + "/app", p);
    }

    /** The two ints of a one-row result. */
    static int[] row(PreparedStatement ps) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            check(rs.next(), "a row");
            int[] r = {rs.getInt(1), rs.getInt(2)};
            check(!rs.next(), "one row");
            return r;
        }
    }

    static int count(PreparedStatement count, int client, String kind) throws SQLException {
        count.setInt(1, client);
        count.setString(2, kind);
        return row(count)[0];
    }

    public static void main(String[] args) throws Exception {
        try {
            run(Integer.parseInt(args[0]), Integer.parseInt(args[1]), Integer.parseInt(args[2]));
        } catch (Throwable e) {
            System.out.println("failed at step " + step + ": " + e);
            e.printStackTrace();
            System.exit(1);
        }
    }

    static void run(int port, int clients, int rounds) throws Exception {
        Connection[] conns = new Connection[clients];
        for (int c = 0; c < clients; c++) {
            conns[c] = connect(port, c);
        }
        try (Statement s = conns[0].createStatement()) {
            s.execute("drop table if exists jdbc_rows");
            s.execute("create table jdbc_rows (client int, round int, kind text, v int)");
        }
        PreparedStatement[] echo = new PreparedStatement[clients];
        PreparedStatement[] insert = new PreparedStatement[clients];
        PreparedStatement[] count = new PreparedStatement[clients];
        for (int c = 0; c < clients; c++) {
            // The same texts on every connection: the pooler's server-side names for them
            // (derived from the text) are shared, the driver's S_n are per connection.
            echo[c] = conns[c].prepareStatement("select ?::int * 100 + ?::int, pg_backend_pid()");
            insert[c] = conns[c].prepareStatement("insert into jdbc_rows values (?, ?, ?, ?)");
            count[c] = conns[c].prepareStatement(
                    "select count(*)::int, 0 from jdbc_rows where client = ? and kind = ?");
        }
        Set<Integer> backends = new TreeSet<>();
        int committed = 0;

        // Interleaved: every client runs each statement in turn, in autocommit, then pairs
        // of clients (as many open transactions as the pool has connections) run explicit
        // transactions side by side; every third round they roll back.
        for (int r = 0; r < rounds; r++) {
            for (int c = 0; c < clients; c++) {
                step++;
                echo[c].setInt(1, r);
                echo[c].setInt(2, c);
                int[] got = row(echo[c]);
                check(got[0] == r * 100 + c, "client " + c + " round " + r + " echo " + got[0]);
                backends.add(got[1]);
                insert[c].setInt(1, c);
                insert[c].setInt(2, r);
                insert[c].setString(3, "auto");
                insert[c].setInt(4, r);
                check(insert[c].executeUpdate() == 1, "one autocommit row inserted");
                check(count(count[c], c, "auto") == r + 1, "client " + c + " sees its rows");
            }
            boolean rollback = r % 3 == 2;
            for (int a = 0; a + 1 < clients; a += 2) {
                step++;
                int b = a + 1;
                conns[a].setAutoCommit(false);
                conns[b].setAutoCommit(false);
                for (int c : new int[] {a, b}) {
                    insert[c].setInt(1, c);
                    insert[c].setInt(2, r);
                    insert[c].setString(3, "tx");
                    insert[c].setInt(4, 1);
                    check(insert[c].executeUpdate() == 1, "one row inserted in a transaction");
                }
                // Each sees its own uncommitted row and not the other's.
                check(count(count[a], a, "tx") == committed + 1, "a sees its uncommitted row");
                check(count(count[a], b, "tx") == committed, "a does not see b's uncommitted row");
                check(count(count[b], b, "tx") == committed + 1, "b sees its uncommitted row");
                check(count(count[b], a, "tx") == committed, "b does not see a's uncommitted row");
                if (r == rounds - 1) {
                    // Past prepareThreshold the insert runs as a named statement: the server
                    // connection of this transaction has it prepared, under whatever name.
                    String prepared = "select count(*)::int, 0 from pg_prepared_statements"
                            + " where statement = 'insert into jdbc_rows values ($1, $2, $3, $4)'";
                    try (PreparedStatement ps = conns[a].prepareStatement(prepared)) {
                        check(row(ps)[0] >= 1, "the insert is prepared on a's server connection");
                    }
                }
                for (int c : new int[] {a, b}) {
                    if (rollback) {
                        conns[c].rollback();
                    } else {
                        conns[c].commit();
                    }
                    conns[c].setAutoCommit(true);
                }
            }
            if (!rollback) {
                committed++;
            }
        }
        for (int c = 0; c < clients; c++) {
            // Past prepareThreshold the driver runs these as named server-side statements.
            for (PreparedStatement ps : new PreparedStatement[] {echo[c], insert[c], count[c]}) {
                check(ps.unwrap(PGStatement.class).isUseServerPrepare(), "server-prepared");
            }
            check(count(count[c], c, "tx") == committed, "committed transactions' rows");
        }

        // Batches: one in autocommit, one in a transaction, client after client.
        for (int c = 0; c < clients; c++) {
            step++;
            for (boolean autocommit : new boolean[] {true, false}) {
                conns[c].setAutoCommit(autocommit);
                for (int i = 0; i < BATCH; i++) {
                    insert[c].setInt(1, c);
                    insert[c].setInt(2, i);
                    insert[c].setString(3, "batch");
                    insert[c].setInt(4, i);
                    insert[c].addBatch();
                }
                int[] counts = insert[c].executeBatch();
                check(counts.length == BATCH, "batch update counts: " + counts.length);
                for (int n : counts) {
                    check(n == 1, "a batch row's update count: " + n);
                }
                if (!autocommit) {
                    conns[c].commit();
                    conns[c].setAutoCommit(true);
                }
            }
            check(count(count[c], c, "batch") == 2 * BATCH, "both batches' rows");
        }

        // A statement closed (the driver sends Close for S_n) and prepared again.
        for (int c = 0; c < clients; c++) {
            step++;
            echo[c].close();
            echo[c] = conns[c].prepareStatement("select ?::int * 100 + ?::int, pg_backend_pid()");
            for (int i = 0; i < 8; i++) {
                echo[c].setInt(1, i);
                echo[c].setInt(2, c);
                int[] got = row(echo[c]);
                check(got[0] == i * 100 + c, "a prepared-again statement's result " + got[0]);
                backends.add(got[1]);
            }
            check(echo[c].unwrap(PGStatement.class).isUseServerPrepare(), "prepared again");
        }

        // Errors: a server-prepared statement that fails now and then, in autocommit (the
        // server skips to the Sync) and in a transaction (rolled back); the client goes on.
        PreparedStatement[] divide = new PreparedStatement[clients];
        for (int c = 0; c < clients; c++) {
            divide[c] = conns[c].prepareStatement("select 1000 / ?::int, pg_backend_pid()");
        }
        for (int i = 0; i < 12; i++) {
            for (int c = 0; c < clients; c++) {
                step++;
                boolean zero = i % 4 == 3;
                divide[c].setInt(1, zero ? 0 : i + 1);
                try {
                    int[] got = row(divide[c]);
                    check(!zero, "no error dividing by zero");
                    check(got[0] == 1000 / (i + 1), "a quotient " + got[0]);
                } catch (SQLException e) {
                    check(zero && "22012".equals(e.getSQLState()), "an error " + e);
                }
            }
        }
        for (int c = 0; c < clients; c++) {
            step++;
            conns[c].setAutoCommit(false);
            insert[c].setInt(1, c);
            insert[c].setInt(2, 0);
            insert[c].setString(3, "failed");
            insert[c].setInt(4, 0);
            check(insert[c].executeUpdate() == 1, "a row in a transaction that fails");
            divide[c].setInt(1, 0);
            try {
                row(divide[c]);
                check(false, "no error dividing by zero in a transaction");
            } catch (SQLException e) {
                check("22012".equals(e.getSQLState()), "an error " + e);
            }
            try {
                count(count[c], c, "failed");
                check(false, "a statement ran in an aborted transaction");
            } catch (SQLException e) {
                check("25P02".equals(e.getSQLState()), "not in an aborted transaction: " + e);
            }
            conns[c].rollback();
            conns[c].setAutoCommit(true);
            check(count(count[c], c, "failed") == 0, "the failed transaction's row");
            divide[c].setInt(1, 8);
            check(row(divide[c])[0] == 125, "the statement after a failed transaction");
            check(divide[c].unwrap(PGStatement.class).isUseServerPrepare(), "server-prepared");
        }

        // Fetching in chunks (setFetchSize in a transaction: a named portal the driver runs
        // 7 rows at a time), two clients at once, their fetches alternating.
        for (int a = 0; a + 1 < clients; a += 2) {
            step++;
            PreparedStatement[] series = new PreparedStatement[2];
            ResultSet[] results = new ResultSet[2];
            for (int k = 0; k < 2; k++) {
                conns[a + k].setAutoCommit(false);
                series[k] = conns[a + k].prepareStatement("select g from generate_series(1, ?) g");
                series[k].setFetchSize(7);
                series[k].setInt(1, 100 * (k + 1));
                results[k] = series[k].executeQuery();
            }
            long[] sums = {0, 0};
            int[] rows = {0, 0};
            boolean more = true;
            while (more) {
                more = false;
                for (int k = 0; k < 2; k++) {
                    if (results[k].next()) {
                        sums[k] += results[k].getInt(1);
                        rows[k]++;
                        more = true;
                    }
                }
            }
            for (int k = 0; k < 2; k++) {
                check(rows[k] == 100 * (k + 1), "rows fetched in chunks: " + rows[k]);
                check(sums[k] == (long) rows[k] * (rows[k] + 1) / 2, "their sum: " + sums[k]);
                results[k].close();
                series[k].close();
                conns[a + k].commit();
                conns[a + k].setAutoCommit(true);
            }
        }

        // All clients at once, each from its own thread: they queue for the connections.
        step++;
        ExecutorService threads = Executors.newFixedThreadPool(clients);
        List<Future<Set<Integer>>> done = new ArrayList<>();
        for (int c = 0; c < clients; c++) {
            final int client = c;
            done.add(threads.submit(() -> {
                Set<Integer> seen = new TreeSet<>();
                Connection conn = conns[client];
                for (int t = 0; t < THREAD_TRANSACTIONS; t++) {
                    conn.setAutoCommit(false);
                    insert[client].setInt(1, client);
                    insert[client].setInt(2, t);
                    insert[client].setString(3, "thread");
                    insert[client].setInt(4, t);
                    check(insert[client].executeUpdate() == 1, "a thread's row");
                    check(count(count[client], client, "thread") == t + 1, "a thread's rows");
                    echo[client].setInt(1, t);
                    echo[client].setInt(2, client);
                    int[] got = row(echo[client]);
                    check(got[0] == t * 100 + client, "a thread's echo");
                    seen.add(got[1]);
                    conn.commit();
                }
                conn.setAutoCommit(true);
                return seen;
            }));
        }
        for (Future<Set<Integer>> f : done) {
            backends.addAll(f.get(120, TimeUnit.SECONDS));
        }
        threads.shutdown();

        // The totals, as one client sees them.
        step++;
        int expected = rounds + committed + 2 * BATCH + THREAD_TRANSACTIONS;
        try (Statement s = conns[0].createStatement();
                ResultSet rs = s.executeQuery(
                        "select client, count(*)::int from jdbc_rows group by client order by 1")) {
            int seen = 0;
            while (rs.next()) {
                check(rs.getInt(1) == seen, "rows of client " + seen);
                check(rs.getInt(2) == expected, "client " + seen + ": " + rs.getInt(2) + " rows");
                seen++;
            }
            check(seen == clients, "rows of every client");
        }
        for (Connection conn : conns) {
            conn.close();
        }
        System.out.println("clients=" + clients);
        System.out.println("committed_transactions=" + committed);
        System.out.println("rows_per_client=" + expected);
        System.out.println("backends=" + backends.size());
        System.out.println("ok");
    }
}
