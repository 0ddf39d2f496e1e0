//! Clients of the pooled port for the pooler's tests: psql, tokio-postgres, and raw
//! protocol bytes.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::cluster::TestCluster;
use super::node::psql;
use super::pg::{replicas_streaming, FORMATION};
use super::ports::free_port;
use super::wait::eventually;

/// `psql -c sql` through the pooler on `port` as `user` with `password`.
pub fn through(port: u16, user: &str, password: &str, sql: &str) -> Output {
    Command::new(psql())
        .arg(format!(
            "host=127.0.0.1 port={port} user={user} dbname=postgres sslmode=prefer connect_timeout=5"
        ))
        .args(["-XAtqc", sql])
        .env("PGPASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .expect("running psql")
}

pub fn startup(user: &str) -> Vec<u8> {
    let body = format!("user\0{user}\0database\0postgres\0\0");
    let mut packet = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&196_608u32.to_be_bytes());
    packet.extend_from_slice(body.as_bytes());
    packet
}

/// A raw connection to the pooled port on `port` that sent app's startup message.
pub fn raw_startup(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(&startup("app")).unwrap();
    stream
}

/// The next message on `stream`: its type and body.
pub fn read_message(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
    let mut body = vec![0; len - 4];
    stream.read_exact(&mut body).unwrap();
    (head[0], body)
}

/// A message of type `kind` with `body`.
pub fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Restarts replica `replica` of `cluster` with a pooled port and `settings` under
/// `[pooler]`; returns the port.
pub fn with_pooler(cluster: &mut TestCluster, primary: usize, settings: &str) -> u16 {
    let replica = 1 + primary % 3;
    let port = free_port();
    let node = cluster.node_mut(replica);
    node.terminate();
    node.append_config(&format!(
        "\n[pooler]\nlisten = \"127.0.0.1:{port}\"\n{settings}\n"
    ));
    node.start();
    eventually(FORMATION, "the restarted replica streams again", || {
        replicas_streaming(cluster, primary)
    });
    eventually(FORMATION, "a login through the pooled port", || {
        let out = through(port, "app", "pencil", "select 1");
        out.status.success().then_some(()).ok_or(text(&out.stderr))
    });
    port
}

/// A healthy cluster with role app (password pencil) owning database app, and a replica
/// restarted with a pooled port and `settings`; returns it, the primary, and the port.
pub fn app_cluster(settings: &str) -> (TestCluster, usize, u16) {
    let (mut cluster, primary) = super::pg::healthy_cluster();
    let p = cluster.node(primary);
    p.sql("create role app login password 'pencil'").unwrap();
    p.sql("create database app owner app").unwrap();
    let port = with_pooler(&mut cluster, primary, settings);
    (cluster, primary, port)
}

pub async fn app_client_async(port: u16) -> tokio_postgres::Client {
    try_app_client(port)
        .await
        .expect("logging in through the pooler")
}

/// A tokio-postgres client logged in as app on database app through the pooler.
pub async fn try_app_client(port: u16) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("app")
        .password("pencil")
        .dbname("app")
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}
