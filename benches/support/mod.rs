//! Shared helpers of the benchmarks: spawn a cluster of real `pgquorum` daemons on loopback,
//! talk to their REST API over plain HTTP/1.1 keep-alive connections, and measure them.
//!
//! Each bench includes this with `mod support;`; not every bench uses every helper.
#![allow(dead_code)]

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The daemon binary: `PGQUORUM_BIN`, or the one cargo built for this bench (cargo builds the
/// package's binaries, with the bench profile = release, before running a bench).
pub fn binary() -> PathBuf {
    match std::env::var_os("PGQUORUM_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_pgquorum")),
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One member: its config, state directory, addresses and (when running) its process.
pub struct Node {
    pub name: String,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub peer_addr: String,
    pub api_addr: String,
    pub id: Option<u64>,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    fn new(root: &Path, name: &str, raft_toml: &str) -> Node {
        let state_dir = root.join(name);
        let peer_addr = format!("127.0.0.1:{}", free_port());
        let api_addr = format!("127.0.0.1:{}", free_port());
        let config = root.join(format!("{name}.toml"));
        let text = format!(
            "[node]\nname = \"{name}\"\nstate_dir = \"{}\"\n\n[peer]\nlisten = \"{peer_addr}\"\n\n\
             [api]\nlisten = \"{api_addr}\"\n\n[proxy]\nwriter_listen = \"127.0.0.1:{}\"\n\
             reader_listen = \"127.0.0.1:{}\"\n\n[raft]\n{raft_toml}\n",
            state_dir.display(),
            free_port(),
            free_port()
        );
        fs::write(&config, text).expect("write config");
        Node {
            name: name.to_string(),
            log: root.join(format!("{name}.log")),
            config,
            state_dir,
            peer_addr,
            api_addr,
            id: None,
            child: None,
        }
    }

    /// Runs a one-shot CLI command for this node and returns its stdout.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run pgquorum");
        assert!(
            out.status.success(),
            "pgquorum {args:?} for {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Starts `pgquorum run`, logging to `<root>/<name>.log` (appended across restarts).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open node log");
        let child = Command::new(binary())
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn pgquorum run");
        self.child = Some(child);
    }

    /// SIGKILLs the daemon (std's `Child::kill` is SIGKILL on Unix) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn admin_token(&self) -> String {
        fs::read_to_string(self.state_dir.join("admin.token"))
            .expect("read admin.token")
            .trim()
            .to_string()
    }

    /// `GET /cluster`, or `None` if the daemon does not answer.
    pub fn cluster(&self) -> Option<Value> {
        let mut http = Http::new(&self.api_addr);
        match http.request("GET", "/cluster", None, None) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// VmRSS of the running daemon, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Bytes of all files under `state_dir/raft` (the sled store).
    pub fn raft_dir_bytes(&self) -> u64 {
        dir_size(&self.state_dir.join("raft"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A cluster of daemons in a temporary directory; dropping it kills them.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub root: TempDir,
}

impl Cluster {
    /// `init` + `run` on n1, then `node join` + `run` on n2..; returns once every node sees
    /// all `n` members as Raft voters under one leader. `raft_toml` goes into `[raft]`.
    pub fn start(n: usize, raft_toml: &str) -> Cluster {
        let root = TempDir::new().expect("temp dir");
        let mut nodes: Vec<Node> = (1..=n)
            .map(|i| Node::new(root.path(), &format!("n{i}"), raft_toml))
            .collect();
        let uses = (n.max(2) - 1).to_string();
        let out = nodes[0].cli(&["init", "--token-uses", &uses]);
        let token = out
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("pgq1."))
            .unwrap_or_else(|| panic!("no join token in `pgquorum init` output:\n{out}"))
            .to_string();
        nodes[0].start();
        let mut cluster = Cluster { nodes, root };
        cluster.wait_for(
            "n1 to lead a bootstrapped cluster",
            Duration::from_secs(30),
            |c| {
                c.nodes[0].cluster().is_some_and(|v| {
                    v["leader"].is_u64() && v["members"].as_array().is_some_and(|m| !m.is_empty())
                })
            },
        );
        for i in 1..n {
            let seed = cluster.nodes[0].peer_addr.clone();
            cluster.nodes[i].cli(&["node", "join", &seed, "--token", &token]);
            cluster.nodes[i].start();
            cluster.wait_for(
                &format!("n{} to become a voter", i + 1),
                Duration::from_secs(60),
                |c| c.voters_seen_by_all() == Some(i + 1),
            );
        }
        for node in &mut cluster.nodes {
            let view = node.cluster().expect("cluster view");
            node.id = view["members"]
                .as_array()
                .and_then(|ms| ms.iter().find(|m| m["name"] == node.name.as_str()))
                .and_then(|m| m["id"].as_u64());
        }
        cluster
    }

    /// Polls `done` every 20 ms until it holds; panics after `limit`, naming `what`.
    pub fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut(&Self) -> bool) {
        let started = Instant::now();
        while !done(self) {
            if started.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting for {what}; logs in {}",
                    self.root.path().display()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The number of voters (leader included) if every running node answers and agrees on
    /// one leader.
    pub fn voters_seen_by_all(&self) -> Option<usize> {
        let mut leader = None;
        let mut voters = None;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let view = node.cluster()?;
            let l = view["leader"].as_u64()?;
            if *leader.get_or_insert(l) != l {
                return None;
            }
            let v = view["members"]
                .as_array()?
                .iter()
                .filter(|m| m["raft_role"] == "leader" || m["raft_role"] == "voter")
                .count();
            if *voters.get_or_insert(v) != v {
                return None;
            }
        }
        voters
    }

    /// The index in `nodes` of the Raft leader, as reported by the first running node.
    pub fn leader_index(&self) -> Option<usize> {
        let view = self.nodes.iter().find(|n| n.is_running())?.cluster()?;
        let leader = view["leader"].as_u64()?;
        self.nodes.iter().position(|n| n.id == Some(leader))
    }

    pub fn name_of(&self, id: u64) -> String {
        self.nodes
            .iter()
            .find(|n| n.id == Some(id))
            .map_or_else(|| format!("id {id}"), |n| n.name.clone())
    }
}

/// A minimal HTTP/1.1 client on one keep-alive connection (reconnects when it was closed).
pub struct Http {
    addr: String,
    conn: Option<BufReader<TcpStream>>,
    pub timeout: Duration,
}

impl Http {
    pub fn new(addr: &str) -> Http {
        Http {
            addr: addr.to_string(),
            conn: None,
            timeout: Duration::from_secs(15),
        }
    }

    fn connect(&mut self) -> io::Result<&mut BufReader<TcpStream>> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.addr)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(self.timeout))?;
            stream.set_write_timeout(Some(self.timeout))?;
            self.conn = Some(BufReader::new(stream));
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Sends one request and reads the whole response: (status, body). On any IO error the
    /// connection is dropped, so the next request reconnects.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        json: Option<&str>,
    ) -> io::Result<(u16, String)> {
        let result = self.exchange(method, path, bearer, json);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        json: Option<&str>,
    ) -> io::Result<(u16, String)> {
        let addr = self.addr.clone();
        let conn = self.connect()?;
        let body = json.unwrap_or("");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
            body.len()
        );
        if json.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        if let Some(token) = bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(body);
        conn.get_mut().write_all(head.as_bytes())?;

        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                let mut chunk = vec![0; size + 2];
                conn.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            conn.read_exact(&mut body)?;
        } else {
            conn.read_to_end(&mut body)?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Machine facts for the tables: CPUs, memory, kernel, CPU model.
pub fn machine() -> String {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem_kb = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}), {:.1} GiB RAM, Linux {kernel}",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}

/// Bytes in MB (10^6 bytes), the unit of the goals.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
