//! A real HAProxy that routes to the member whose API answers `GET /primary` with 200, as
//! the seeds run it in front of Patroni: `option httpchk` with `check-ssl verify required
//! ca-file`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::cluster::TestCluster;
use super::ports::free_port;

/// A running `haproxy -db`; killed when dropped.
pub struct Haproxy {
    child: Child,
    socket: PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `server` lines for every member of `cluster`: PostgreSQL's port, checked on the
/// API's with TLS verified against the CA file `ca`.
pub fn servers(cluster: &TestCluster, ca: &Path) -> String {
    (1..=cluster.len())
        .map(|i| {
            let n = cluster.node(i);
            format!(
                "  server n{i} 127.0.0.1:{} check port {} check-ssl verify required ca-file {}\n",
                n.pg_port,
                n.api_port,
                ca.display()
            )
        })
        .collect()
}

impl Haproxy {
    /// Starts HAProxy in `dir` with one `listen` section per `(name, servers)`, each
    /// checking `GET /primary` every 300 ms; returns it and each section's port.
    pub fn start(dir: &Path, backends: &[(&str, String)]) -> (Haproxy, Vec<u16>) {
        let check = "option httpchk GET /primary\n  default-server inter 300ms fall 2 rise 1";
        Haproxy::start_checking(dir, backends, check)
    }

    /// As [`Haproxy::start`], with the checks of Patroni's documented HAProxy
    /// configuration (`OPTIONS /primary`, `inter 3s fall 3 rise 2 on-marked-down
    /// shutdown-sessions`).
    pub fn start_as_patroni(dir: &Path, backends: &[(&str, String)]) -> (Haproxy, Vec<u16>) {
        let check = "option httpchk OPTIONS /primary\n  http-check expect status 200\n  \
                     default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions";
        Haproxy::start_checking(dir, backends, check)
    }

    fn start_checking(dir: &Path, backends: &[(&str, String)], check: &str) -> (Haproxy, Vec<u16>) {
        let socket = dir.join("haproxy.sock");
        let mut cfg = format!(
            "global\n  stats socket {} mode 600 level admin\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n",
            socket.display()
        );
        let mut ports = Vec::new();
        for (name, servers) in backends {
            let port = free_port();
            ports.push(port);
            cfg.push_str(&format!(
                "listen {name}\n  bind 127.0.0.1:{port}\n  {check}\n{servers}"
            ));
        }
        let cfg_path = dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, &cfg).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&cfg_path)
            .arg("-db")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting haproxy");
        (Haproxy { child, socket }, ports)
    }

    /// `(server, "status check_desc")` of every server of `backend`, from the stats socket.
    pub fn status(&self, backend: &str) -> Result<Vec<(String, String)>, String> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| e.to_string())?;
        stream
            .write_all(b"show stat\n")
            .map_err(|e| e.to_string())?;
        let mut csv = String::new();
        stream.read_to_string(&mut csv).map_err(|e| e.to_string())?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .ok_or("no header")?
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |name: &str| header.iter().position(|h| *h == name).ok_or(csv.clone());
        let (px, sv, status, check) = (
            column("pxname")?,
            column("svname")?,
            column("status")?,
            column("check_desc")?,
        );
        Ok(lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| {
                f.len() > status && f[px] == backend && !matches!(f[sv], "BACKEND" | "FRONTEND")
            })
            .map(|f| (f[sv].to_string(), format!("{} {}", f[status], f[check])))
            .collect())
    }

    /// `Ok` when `only` is the one server of `backend` that is UP and every other is DOWN.
    pub fn only_up(&self, backend: &str, only: &str) -> Result<(), String> {
        let servers = self.status(backend)?;
        let up: Vec<&String> = (servers.iter())
            .filter(|(_, status)| status.starts_with("UP"))
            .map(|(name, _)| name)
            .collect();
        let down = (servers.iter())
            .filter(|(_, status)| status.starts_with("DOWN"))
            .count();
        (up == [only] && down == servers.len() - 1)
            .then_some(())
            .ok_or(format!("{servers:?}"))
    }
}
