//! Real client drivers through the pooled port in transaction mode, with fewer server
//! connections (pool_size 2) than clients (4, half of them over TLS), so that the clients'
//! transactions share them: PostgreSQL's JDBC driver (named server-side statements past
//! prepareThreshold, explicit transactions, batches) and psycopg 3 (prepare=True,
//! executemany, transaction blocks, pipeline mode), each a program under `tests/drivers/`
//! that checks its own results and that these tests check again against the primary; and
//! garbage where a login's SASL messages belong, refused with a FATAL while other clients
//! go on. A missing driver skips its test locally and fails it when `CI=true`
//! (`scripts/prereqs.sh` installs them).

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::pooler::{
    app_client_async, app_cluster, frame, raw_startup, read_message, text, through,
};
use common::{eventually, needs, require_postgres, TestCluster};

/// Transaction pooling on two server connections for the drivers' four clients.
const SETTINGS: &str = "pool_mode = \"transaction\"\npool_size = 2\n\
                        query_wait_timeout = \"20s\"\nauth_timeout = \"5s\"";
const POOL_SIZE: usize = 2;
const CLIENTS: usize = 4;
/// Rounds of interleaved statements: more than the JDBC driver's prepareThreshold (5).
const ROUNDS: usize = 12;
/// How long a driver program may run (the JDK compiles the JDBC program first).
const DRIVER: Duration = Duration::from_secs(240);

const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";
/// Debian's interpreter, which has Debian's python3-psycopg (a `python3` earlier on PATH
/// may be another one).
const PYTHON: &str = "/usr/bin/python3";

fn driver_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/drivers")
        .join(name)
}

/// Whether the JDK (with its compiler, for the source launcher) and Debian's JDBC driver
/// are installed.
fn jdbc_available() -> Result<(), String> {
    if !Path::new(JDBC_JAR).is_file() {
        return Err(format!(
            "{JDBC_JAR} is missing (apt-get install libpostgresql-jdbc-java)"
        ));
    }
    let modules = Command::new("java").arg("--list-modules").output();
    match modules {
        Ok(out) if text(&out.stdout).contains("jdk.compiler") => Ok(()),
        _ => Err(concat!(
            "no java with the jdk.compiler module (Java >= 11, for the source launcher): ",
            "apt-get install openjdk-17-jdk-headless"
        )
        .into()),
    }
}

/// Whether Debian's python3 can import psycopg 3.
fn psycopg_available() -> Result<(), String> {
    let out = Command::new(PYTHON)
        .args(["-c", "import psycopg"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err(format!(
            "{PYTHON} cannot import psycopg (apt-get install python3-psycopg)"
        )),
    }
}

/// A driver program running with its stdout and stderr in files next to the node logs.
/// Dropped, it is killed if still running, and during a panic its output is printed
/// (before the nodes' log tails, as the cluster is dropped after it).
struct Driver {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    started: Instant,
}

/// How a driver program ended.
struct Ran {
    status: ExitStatus,
    stdout: String,
    took: Duration,
}

impl Driver {
    fn spawn(name: &str, mut command: Command, cluster: &TestCluster) -> Driver {
        let dir = cluster.node(1).log_path.parent().unwrap().to_path_buf();
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Driver {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    /// Waits until the program exits (at most [`DRIVER`]).
    fn wait(&mut self) -> Ran {
        let what = format!("{} exits", self.name);
        let status = eventually(DRIVER, &what, || {
            self.child.try_wait().ok().flatten().ok_or("still running")
        });
        let took = self.started.elapsed();
        eprintln!("{} ran {took:.1?} and exited {status}", self.name);
        Ran {
            status,
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            took,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            for (which, path) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
                let said = std::fs::read_to_string(path).unwrap_or_default();
                eprintln!(
                    "----- {} {which} ({}) -----\n{}\n----- end of {} {which} -----",
                    self.name,
                    path.display(),
                    said.trim_end(),
                    self.name
                );
            }
        }
    }
}

/// The `key=value` lines a driver printed.
fn values(stdout: &str) -> BTreeMap<&str, &str> {
    stdout.lines().filter_map(|l| l.split_once('=')).collect()
}

/// How many server connections the pooler holds to database app on the primary.
fn server_connections(cluster: &TestCluster, primary: usize) -> usize {
    let n = cluster
        .node(primary)
        .sql("select count(*) from pg_stat_activity where usename = 'app' and datname = 'app'")
        .unwrap();
    n.parse().unwrap()
}

/// Rows per client and kind in `table` of database app, read on the primary.
fn rows_by_client(cluster: &TestCluster, primary: usize, table: &str) -> String {
    cluster
        .node(primary)
        .sql_in(
            "app",
            &format!("select client, kind, count(*) from {table} group by 1, 2 order by 1, 2"),
        )
        .unwrap()
}

/// The `client|kind|count` lines every client should have, for kinds with a count.
fn expected_rows(kinds: &[(&str, usize)]) -> String {
    let mut sorted = kinds.to_vec();
    sorted.sort();
    let mut lines = Vec::new();
    for client in 0..CLIENTS {
        for (kind, n) in &sorted {
            if *n > 0 {
                lines.push(format!("{client}|{kind}|{n}"));
            }
        }
    }
    lines.join("\n")
}

/// Transactions of the interleaved rounds that commit (every third rolls back).
fn committed_rounds() -> usize {
    (0..ROUNDS).filter(|r| r % 3 != 2).count()
}

/// The checks every driver run ends with: it exited 0 having printed `ok`, its clients saw
/// at most pool_size server connections between them, and the pooler holds no more.
fn assert_ran_on_the_pool(ran: &Ran, name: &str, cluster: &TestCluster, primary: usize) {
    assert!(
        ran.status.success() && ran.stdout.lines().last() == Some("ok"),
        "{name} failed ({}); its output is below",
        ran.status
    );
    let backends: usize = values(&ran.stdout)["backends"].parse().unwrap();
    assert!(
        (1..=POOL_SIZE).contains(&backends),
        "{name}'s {CLIENTS} clients saw {backends} server connections, pool_size {POOL_SIZE}"
    );
    let held = server_connections(cluster, primary);
    assert!(
        (1..=POOL_SIZE).contains(&held),
        "the pooler holds {held} server connections to app, pool_size {POOL_SIZE}"
    );
}

#[test]
fn jdbc_prepared_statements_transactions_and_batches_share_two_server_connections() {
    if !require_postgres() || !needs(jdbc_available()) {
        return;
    }
    let started = Instant::now();
    let (cluster, primary, port) = app_cluster(SETTINGS);
    eprintln!("cluster ready after {:.1?}", started.elapsed());

    let mut java = Command::new("java");
    // A quick start on a small machine: this program runs briefly.
    java.args([
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        "-cp",
        JDBC_JAR,
    ])
    .arg(driver_file("PooledJdbc.java"))
    .args([port.to_string(), CLIENTS.to_string(), ROUNDS.to_string()]);
    let mut jdbc = Driver::spawn("jdbc", java, &cluster);
    let ran = jdbc.wait();
    assert_ran_on_the_pool(&ran, "the JDBC program", &cluster, primary);

    // What the program says it did, and what the primary has: per client, every autocommit
    // row, the rows of committed transactions only, both batches, every thread's
    // transaction, and none of the transactions that failed.
    let committed = committed_rounds();
    let said = values(&ran.stdout);
    assert_eq!(said["clients"], CLIENTS.to_string());
    assert_eq!(said["committed_transactions"], committed.to_string());
    assert_eq!(
        rows_by_client(&cluster, primary, "jdbc_rows"),
        expected_rows(&[
            ("auto", ROUNDS),
            ("tx", committed),
            ("batch", 50),
            ("thread", 30)
        ]),
        "rows per client and kind on the primary"
    );
    eprintln!(
        "JDBC test done after {:.1?} (program {:.1?})",
        started.elapsed(),
        ran.took
    );
}

/// The psycopg program's checks, in its order; pipeline mode is in `executemany` (psycopg
/// 3.1 pipelines it when libpq can), `pipeline` and `pipeline_error`.
const PSYCOPG_CHECKS: &[&str] = &[
    "prepared",
    "prepared_on_server",
    "transactions",
    "executemany",
    "pipeline",
    "pipeline_error",
    "prepared_error",
    "server_cursor",
    "threads",
    "totals",
];

#[test]
fn psycopg_prepared_statements_transactions_and_pipelines_share_two_server_connections() {
    if !require_postgres() || !needs(psycopg_available()) {
        return;
    }
    let started = Instant::now();
    let (cluster, primary, port) = app_cluster(SETTINGS);
    eprintln!("cluster ready after {:.1?}", started.elapsed());

    let mut python = Command::new(PYTHON);
    python.arg(driver_file("pooled_psycopg.py")).args([
        port.to_string(),
        CLIENTS.to_string(),
        ROUNDS.to_string(),
    ]);
    let mut psycopg = Driver::spawn("psycopg", python, &cluster);
    let ran = psycopg.wait();
    // Each check by name first, so that a failure says which (the program goes on after
    // one, on fresh connections).
    let failed: Vec<&str> = PSYCOPG_CHECKS
        .iter()
        .copied()
        .filter(|name| !ran.stdout.lines().any(|l| l == format!("PASS {name}")))
        .collect();
    assert!(
        failed.is_empty(),
        "psycopg checks that did not pass: {failed:?}; the program's output is below"
    );
    assert_ran_on_the_pool(&ran, "the psycopg program", &cluster, primary);
    assert_eq!(
        rows_by_client(&cluster, primary, "py_rows"),
        expected_rows(&[
            ("auto", ROUNDS),
            ("server", 1),
            ("tx", committed_rounds()),
            ("many", 50),
            ("pipe", 15),
            ("thread", 30),
        ]),
        "rows per client and kind on the primary (none of an aborted pipeline)"
    );
    eprintln!(
        "psycopg test done after {:.1?} (program {:.1?})",
        started.elapsed(),
        ran.took
    );
}

/// A backend message: its type byte and body.
type Message = (u8, Vec<u8>);

/// Splits `bytes` into backend messages; a partial message at the end is returned whole
/// as the last one's body, with type 0.
fn messages(mut bytes: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        if len < 4 || bytes.len() < 1 + len {
            break;
        }
        out.push((bytes[0], bytes[5..1 + len].to_vec()));
        bytes = &bytes[1 + len..];
    }
    if !bytes.is_empty() {
        out.push((0, bytes.to_vec()));
    }
    out
}

/// The fields of an ErrorResponse body, by their code (`S`, `C`, `M`, ...).
fn error_fields(body: &[u8]) -> BTreeMap<char, String> {
    body.split(|b| *b == 0)
        .filter_map(|f| f.split_first())
        .map(|(code, value)| (char::from(*code), text(value)))
        .collect()
}

/// What a client reads until the pooler closes: the messages, and whether it closed (EOF,
/// or a reset after its answer) rather than leaving the client waiting for 20 s.
fn read_to_close(stream: &mut TcpStream) -> (Vec<Message>, Result<(), String>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let closed = match stream.read_to_end(&mut answer) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Err(format!("reset by the pooler: {e}"))
        }
        Err(e) => Err(format!("not closed: {e}")),
    };
    (messages(&answer), closed)
}

/// A raw connection that sent the startup message for app and read the pooler's
/// AuthenticationSASL (R, 10).
fn sasl_requested(port: u16) -> TcpStream {
    let mut stream = raw_startup(port);
    let (kind, body) = read_message(&mut stream);
    assert_eq!(kind, b'R', "the first answer to a startup: {}", text(&body));
    assert_eq!(&body[..4], &10u32.to_be_bytes(), "AuthenticationSASL");
    stream
}

/// Asserts the pooler answered `what` with one FATAL ErrorResponse with one of the
/// SQLSTATEs `codes`, nothing else, and closed; returns its SQLSTATE and message.
fn assert_fatal(what: &str, answer: &(Vec<Message>, Result<(), String>), codes: &[&str]) -> String {
    let (messages, closed) = answer;
    let shown: Vec<String> = messages
        .iter()
        .map(|(kind, body)| format!("{}:{}", char::from(*kind), text(body)))
        .collect();
    assert!(
        matches!(messages.as_slice(), [(b'E', _)]),
        "{what}: want one ErrorResponse (E), got {shown:?}"
    );
    let fields = error_fields(&messages[0].1);
    assert_eq!(
        fields.get(&'S').map(String::as_str),
        Some("FATAL"),
        "{what}: {fields:?}"
    );
    let code = fields.get(&'C').cloned().unwrap_or_default();
    assert!(
        codes.contains(&code.as_str()),
        "{what}: SQLSTATE {code}, want one of {codes:?}: {fields:?}"
    );
    assert_eq!(closed, &Ok(()), "{what}: the pooler closes after its FATAL");
    format!("{code} {}", fields.get(&'M').cloned().unwrap_or_default())
}

/// A raw connection through a real SCRAM client-first (SASLInitialResponse) and the
/// pooler's server-first, that then sends `instead(client-final)`; what it reads until
/// the pooler closes.
fn after_client_first(
    port: u16,
    instead: &dyn Fn(&[u8]) -> Vec<u8>,
) -> (Vec<Message>, Result<(), String>) {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    let mut raw = sasl_requested(port);
    let mut scram = ScramSha256::new(b"pencil", ChannelBinding::unsupported());
    let mut first = b"SCRAM-SHA-256\0".to_vec();
    first.extend_from_slice(&(scram.message().len() as i32).to_be_bytes());
    first.extend_from_slice(scram.message());
    raw.write_all(&frame(b'p', &first)).unwrap();
    let mut head = [0u8; 5];
    raw.read_exact(&mut head).unwrap();
    let mut body = vec![0; u32::from_be_bytes(head[1..].try_into().unwrap()) as usize - 4];
    raw.read_exact(&mut body).unwrap();
    assert_eq!(
        (head[0], &body[..4]),
        (b'R', &11u32.to_be_bytes()[..]),
        "AuthenticationSASLContinue: {}",
        text(&body)
    );
    scram.update(&body[4..]).unwrap();
    raw.write_all(&instead(scram.message())).unwrap();
    read_to_close(&mut raw)
}

#[test]
fn garbage_instead_of_sasl_responses_is_refused_with_a_fatal_and_others_log_in() {
    use rand::{RngCore as _, SeedableRng as _};

    if !require_postgres() {
        return;
    }
    let started = Instant::now();
    let (_cluster, _primary, port) = app_cluster(SETTINGS);
    eprintln!("cluster ready after {:.1?}", started.elapsed());
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A session logged in before the garbage, which must not notice it.
    let before = rt.block_on(app_client_async(port));
    // What each refusal said: (the garbage, SQLSTATE and message).
    let mut refusals: Vec<(String, String)> = Vec::new();
    let mut refused = |what: &str, answer, codes: &[&str]| {
        let said = assert_fatal(what, &answer, codes);
        eprintln!("{what}: {said}");
        refusals.push((what.to_string(), said.clone()));
        said
    };

    // Instead of the SASLInitialResponse: a message type that does not exist, with a
    // length no message may have.
    let mut raw = sasl_requested(port);
    raw.write_all(b"\x01\x7f\xff\xff\xff").unwrap();
    refused(
        "a bogus type with a huge length",
        read_to_close(&mut raw),
        &["08P01"],
    );

    // A SASLInitialResponse ('p') claiming 2 GiB: a protocol violation, or (as PostgreSQL
    // answers it, having logged "invalid message length") a failed authentication.
    let mut raw = sasl_requested(port);
    raw.write_all(b"p\x7f\xff\xff\xff").unwrap();
    refused(
        "'p' with a huge length",
        read_to_close(&mut raw),
        &["08P01", "28P01"],
    );

    // A known type that is not a SASL response, with a body.
    let mut raw = sasl_requested(port);
    raw.write_all(&frame(b'Q', b"select 1\0")).unwrap();
    let said = refused("a Query", read_to_close(&mut raw), &["08P01"]);
    assert!(said.contains("expected SASL response"), "{said}");

    // Random bytes: more than the longest SASL message the pooler takes, so whatever length
    // they start with, the message is complete or too long and the answer does not wait
    // for auth_timeout; and well-framed messages of random bytes, as a 'p' and with a
    // random type. A protocol violation, or a SASL message that parsed but is not SCRAM's
    // (28000: its mechanism; 28P01: the exchange).
    for seed in 1..=8u64 {
        let mut garbage = vec![0u8; 5_000];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut garbage);
        let framed = [
            garbage.clone(),
            frame(b'p', &garbage[1..101]),
            frame(garbage[0], &garbage[1..101]),
        ];
        for (variant, bytes) in ["raw", "as a 'p'", "framed"].iter().zip(framed) {
            let mut raw = sasl_requested(port);
            raw.write_all(&bytes).unwrap();
            let what = format!(
                "random bytes of seed {seed} {variant} (first {:02x?})",
                &bytes[..5]
            );
            refused(&what, read_to_close(&mut raw), &["08P01", "28000", "28P01"]);
        }
    }

    // A real client-first, then instead of the client-final: a bogus type; a SASLResponse
    // of random bytes (PostgreSQL: "malformed SCRAM message", 08P01); a well-formed one with
    // a wrong proof.
    refused(
        "a bogus type after the client-first",
        after_client_first(port, &|_| b"\x01\x7f\xff\xff\xff".to_vec()),
        &["08P01"],
    );
    let mut noise = vec![0u8; 200];
    rand::rngs::StdRng::seed_from_u64(99).fill_bytes(&mut noise);
    refused(
        "random bytes as the client-final",
        after_client_first(port, &|_| frame(b'p', &noise)),
        &["08P01"],
    );
    let wrong_proof = |real: &[u8]| {
        // c=biws,r=...,p=<base64 proof>: change the proof's first character.
        let mut last = real.to_vec();
        let at = last.windows(2).position(|w| w == b"p=").unwrap() + 2;
        last[at] = if last[at] == b'A' { b'B' } else { b'A' };
        frame(b'p', &last)
    };
    let said = refused(
        "a client-final with a wrong proof",
        after_client_first(port, &wrong_proof),
        &["28P01"],
    );
    assert!(
        said.contains("password authentication failed for user \"app\""),
        "{said}"
    );

    // Another client logs in, and the session from before goes on.
    let out = through(port, "app", "pencil", "select 42");
    assert_eq!(text(&out.stdout).trim(), "42", "{}", text(&out.stderr));
    rt.block_on(async {
        let row = before.query_one("select 7", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 7);
    });

    eprintln!("garbage test checked after {:.1?}", started.elapsed());

    // Refusals after a good startup packet name what was wrong: a message of another type
    // than the SASL response, or a bad message length; never the startup packet.
    let misworded: Vec<_> = refusals
        .iter()
        .filter(|(_, said)| said.contains("startup packet"))
        .collect();
    assert!(
        misworded.is_empty(),
        "refusals after a good startup packet that blame the startup packet: {misworded:#?}"
    );
}
