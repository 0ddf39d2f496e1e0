//! Issuance and identity round trips, and real TLS handshakes over loopback TCP.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::extensions::GeneralName;

use super::*;
use crate::secret::Secret;

const CLUSTER: &str = "3f2a9c01";

/// A member identity for `node_id`, issued by `ca` the way a join would do it.
fn member(ca: &ClusterCa, node_id: u64) -> NodeIdentity {
    let key = NodeKey::generate().unwrap();
    let csr = key.csr_pem(&format!("host{node_id}")).unwrap();
    let extra = ["127.0.0.1".to_owned(), "db1.example.com".to_owned()];
    let cert = ca.issue_node(node_id, CLUSTER, &csr, &extra).unwrap();
    NodeIdentity::new(ca.cert_pem().to_owned(), cert, key.key_pem())
}

fn first_der(pem: &str) -> CertificateDer<'static> {
    cert::parse_certs(pem, "test").unwrap().remove(0)
}

#[test]
fn issued_certificate_names_the_node_only_in_its_own_cluster() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let id = member(&ca, 7);
    let der = first_der(id.cert_pem());
    assert_eq!(node_id_from_cert_der(&der, CLUSTER), Some(7));
    assert_eq!(node_id_from_cert_der(&der, "3f2a9c02"), None);
    assert_eq!(id.node_id(CLUSTER), Some(7));
    assert_eq!(node_id_from_cert_der(b"not a certificate", CLUSTER), None);
}

#[test]
fn issued_certificate_has_the_fields_the_ca_chose_and_is_signed_by_it() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let ca_der = first_der(ca.cert_pem());
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca_cert.is_ca());
    assert_eq!(
        ca_cert.subject().to_string(),
        format!("CN=pgquorum cluster {CLUSTER} CA")
    );
    let bc = ca_cert.basic_constraints().unwrap().unwrap().value;
    assert_eq!(bc.path_len_constraint, Some(0));
    let ca_years = (ca_cert.validity().not_after.timestamp()
        - ca_cert.validity().not_before.timestamp())
        / (365 * 86_400);
    assert_eq!(ca_years, 20);

    let id = member(&ca, 7);
    let der = first_der(id.cert_pem());
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert_eq!(cert.issuer(), ca_cert.subject());
    assert_eq!(cert.subject().to_string(), "CN=node-7");
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let sans = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(
        sans,
        &vec![
            GeneralName::DNSName("node-7.3f2a9c01"),
            GeneralName::IPAddress(&[127, 0, 0, 1]),
            GeneralName::DNSName("db1.example.com"),
        ]
    );
}

#[test]
fn csr_with_a_broken_signature_is_rejected() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let csr = NodeKey::generate().unwrap().csr_pem("host").unwrap();
    // Change one base64 character inside the signature's last integer (near the end of the
    // body, before any padding): the structure still parses, the signature no longer verifies.
    let end = csr.find("-----END").unwrap();
    let body_end = csr[..end].trim_end().trim_end_matches('=').len();
    let pos = body_end - 10;
    let mut tampered = csr.clone().into_bytes();
    tampered[pos] = if tampered[pos] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();

    let err = ca.issue_node(3, CLUSTER, &tampered, &[]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidCsr {
                node_id: 3,
                source: rcgen::Error::InvalidCertificationRequestSignature
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("node 3"), "{err}");

    let err = ca.issue_node(3, CLUSTER, "garbage", &[]).unwrap_err();
    assert!(matches!(err, Error::InvalidCsr { .. }), "{err:?}");
}

#[test]
fn extra_san_that_is_neither_ip_nor_dns_name_is_rejected() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let csr = NodeKey::generate().unwrap().csr_pem("host").unwrap();
    let err = ca
        .issue_node(3, CLUSTER, &csr, &["not a name!".to_owned()])
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidSan { node_id: 3, .. }),
        "{err:?}"
    );
}

#[test]
fn ca_reloads_from_pem_with_the_same_pin_and_rejects_a_foreign_key() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let pin = ca.sha256_hex();
    assert_eq!(pin.len(), 64);
    assert_eq!(ca_sha256_hex(ca.cert_pem()).unwrap(), pin);

    let reloaded = ClusterCa::from_pem(ca.cert_pem().to_owned(), ca.key_pem().clone()).unwrap();
    assert_eq!(reloaded.sha256_hex(), pin);
    let id = member(&reloaded, 9);
    assert_eq!(id.node_id(CLUSTER), Some(9));

    let other = ClusterCa::generate(CLUSTER).unwrap();
    assert_ne!(other.sha256_hex(), pin);
    let err = ClusterCa::from_pem(ca.cert_pem().to_owned(), other.key_pem().clone()).unwrap_err();
    assert!(matches!(err, Error::InvalidCa { .. }), "{err:?}");
    assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
}

#[test]
fn identity_saves_with_a_private_key_file_and_loads_back() {
    let dir = std::env::temp_dir().join(format!("pgquorum-tls-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let id = member(&ca, 4);
    id.save(&dir).unwrap();
    // Saving twice overwrites in place.
    id.save(&dir).unwrap();

    let key_mode = std::fs::metadata(dir.join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let loaded = NodeIdentity::load(&dir).unwrap();
    assert_eq!(loaded.ca_pem(), id.ca_pem());
    assert_eq!(loaded.cert_pem(), id.cert_pem());
    assert_eq!(loaded.key_pem().expose(), id.key_pem().expose());
    assert!(!format!("{loaded:?}").contains("PRIVATE KEY"));

    std::fs::remove_file(dir.join("node.pem")).unwrap();
    let err = NodeIdentity::load(&dir).unwrap_err();
    assert!(err.to_string().contains("node.pem"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pinned_client_config_rejects_a_malformed_pin() {
    let err = pinned_client_config("abc").unwrap_err();
    assert!(matches!(err, Error::InvalidPin { .. }), "{err:?}");
}

/// What each side of one handshake saw.
struct Outcome {
    /// The server's accept result: the client's certificates, if any.
    server: io::Result<Option<Vec<CertificateDer<'static>>>>,
    /// The client's result: the server's certificates, once the server's first byte arrived.
    client: io::Result<Vec<CertificateDer<'static>>>,
}

/// Runs one TLS handshake over loopback TCP. The server writes one byte after accepting and
/// the client reads it, so a client certificate the server rejects fails the client too
/// (in TLS 1.3 the client finishes before the server has checked its certificate).
async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, name: &str) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = TlsAcceptor::from(server).accept(tcp).await?;
        let certs = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
        tls.write_all(b"!").await?;
        tls.shutdown().await?;
        Ok(certs)
    });
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let client = async move {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        Ok(tls
            .get_ref()
            .1
            .peer_certificates()
            .unwrap_or_default()
            .to_vec())
    };
    let patience = Duration::from_secs(20);
    let client = tokio::time::timeout(patience, client)
        .await
        .expect("client timed out");
    let server = tokio::time::timeout(patience, server_task)
        .await
        .expect("server timed out")
        .unwrap();
    Outcome { server, client }
}

#[tokio::test]
async fn members_authenticate_each_other_by_node_id() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let (server_id, client_id) = (member(&ca, 1), member(&ca, 2));
    let out = handshake(
        server(&server_id).unwrap(),
        client(&client_id, CLUSTER, KeyPins::default()).unwrap(),
        &node_server_name(1, CLUSTER),
    )
    .await;
    let client_certs = out.server.unwrap();
    assert_eq!(peer_node_id(client_certs.as_deref(), CLUSTER), Some(2));
    let server_certs = out.client.unwrap();
    assert_eq!(server_certs.len(), 2, "server presents [node, CA]");
    assert_eq!(peer_node_id(Some(&server_certs), CLUSTER), Some(1));
    assert_eq!(peer_node_id(None, CLUSTER), None);
}

#[tokio::test]
async fn joiner_with_the_right_pin_connects_and_with_a_wrong_pin_is_refused() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let server = server(&member(&ca, 1)).unwrap();

    // Any server name: the pin is the trust anchor.
    let out = handshake(
        server.clone(),
        pinned_client_config(&ca.sha256_hex()).unwrap(),
        "127.0.0.1",
    )
    .await;
    out.client.unwrap();
    assert_eq!(out.server.unwrap(), None, "the joiner has no certificate");

    let foreign = ClusterCa::generate("0badc0de").unwrap();
    let out = handshake(
        server,
        pinned_client_config(&foreign.sha256_hex()).unwrap(),
        "seed",
    )
    .await;
    let err = out.client.unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    assert!(err.contains(&foreign.sha256_hex()), "{err}");
    assert!(out.server.is_err());
}

#[tokio::test]
async fn client_certificate_from_a_foreign_ca_is_rejected_by_the_server() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    // Same cluster id, hence the same CA name: only the signature tells them apart.
    let foreign = ClusterCa::generate(CLUSTER).unwrap();
    // Trusts our CA (so it accepts the server) but presents a certificate from another CA.
    let impostor = member(&foreign, 2);
    let impostor = NodeIdentity::new(
        ca.cert_pem().to_owned(),
        impostor.cert_pem().to_owned(),
        Secret::new(impostor.key_pem().expose().clone()),
    );
    let out = handshake(
        server(&member(&ca, 1)).unwrap(),
        client(&impostor, CLUSTER, KeyPins::default()).unwrap(),
        &node_server_name(1, CLUSTER),
    )
    .await;
    let err = out.server.unwrap_err().to_string();
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn member_client_refuses_a_server_that_is_not_the_intended_node() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let out = handshake(
        server(&member(&ca, 1)).unwrap(),
        client(&member(&ca, 2), CLUSTER, KeyPins::default()).unwrap(),
        &node_server_name(3, CLUSTER),
    )
    .await;
    let err = out.client.unwrap_err().to_string();
    assert!(err.contains("not valid for name"), "{err}");
    assert!(out.server.is_err());
}

#[tokio::test]
async fn member_client_refuses_a_server_whose_key_is_not_the_pinned_one() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let genuine = member(&ca, 1);
    // Signed by the cluster CA for node 1's id, but for another key.
    let minted = member(&ca, 1);
    let pins = KeyPins::default();
    pins.replace(
        [(1, vec![key_sha256_of_cert_pem(genuine.cert_pem()).unwrap()])]
            .into_iter()
            .collect(),
    );
    let client = client(&member(&ca, 2), CLUSTER, pins.clone()).unwrap();
    let name = node_server_name(1, CLUSTER);

    let out = handshake(server(&genuine).unwrap(), client.clone(), &name).await;
    out.client.expect("the pinned key is accepted");

    let out = handshake(server(&minted).unwrap(), client.clone(), &name).await;
    let err = out.client.unwrap_err().to_string();
    assert!(
        err.contains("is not for the key the cluster recorded"),
        "{err}"
    );

    // During a rotation both keys are accepted, each from the same slot in turn.
    let rotated = member(&ca, 1);
    pins.replace(
        [(
            1,
            [&genuine, &rotated]
                .map(|id| key_sha256_of_cert_pem(id.cert_pem()).unwrap())
                .to_vec(),
        )]
        .into_iter()
        .collect(),
    );
    let slot = node_chain_slot(&genuine).unwrap();
    let rotating = server_config(&Trust::new(genuine.ca_pem()).unwrap(), slot.clone()).unwrap();
    let out = handshake(rotating.clone(), client.clone(), &name).await;
    out.client.expect("the old key, while the rotation lasts");
    slot.replace(&node_chain(&rotated), rotated.key_pem())
        .unwrap();
    let out = handshake(rotating.clone(), client.clone(), &name).await;
    out.client
        .expect("the next key, from the same server config");
    let out = handshake(server(&minted).unwrap(), client.clone(), &name).await;
    assert!(out.client.is_err(), "a third key is still refused");

    // A member without a pin (one that joined before pins existed) is checked as before.
    pins.replace(BTreeMap::new());
    let out = handshake(server(&minted).unwrap(), client, &name).await;
    out.client
        .expect("no pin: the CA signature and name suffice");
}

#[tokio::test]
async fn a_ca_rotation_changes_what_a_running_server_and_client_trust() {
    let old = ClusterCa::generate(CLUSTER).unwrap();
    let new = old.successor(CLUSTER).unwrap();
    assert_ne!(old.sha256_hex(), new.sha256_hex());
    let (on_old, on_new) = (member(&old, 1), member(&new, 2));
    // Member 1's server and client, built once, following its authority.
    let authority = Authority::new(old.clone(), None).unwrap();
    let slot = node_chain_slot(&on_old).unwrap();
    let server1 = server_config(authority.trust(), slot.clone()).unwrap();
    let client1 =
        member_client_config(authority.trust().clone(), slot, CLUSTER, KeyPins::default()).unwrap();
    let peer2 = |trust: &str| {
        let id = NodeIdentity::new(
            trust.into(),
            on_new.cert_pem().into(),
            on_new.key_pem().clone(),
        );
        (
            server(&id).unwrap(),
            client(&id, CLUSTER, KeyPins::default()).unwrap(),
        )
    };
    let both = format!("{}{}", old.cert_pem(), new.cert_pem());
    let (server2, client2) = peer2(&both);
    let (name1, name2) = (node_server_name(1, CLUSTER), node_server_name(2, CLUSTER));

    let out = handshake(server1.clone(), client2.clone(), &name1).await;
    assert!(
        out.client.is_err(),
        "before: a certificate of the new CA is refused"
    );
    authority.set(old.clone(), Some(new.clone())).unwrap();
    assert_eq!(authority.node_issuer().sha256_hex(), new.sha256_hex());
    assert_eq!(authority.current().sha256_hex(), old.sha256_hex());
    let out = handshake(server1.clone(), client2.clone(), &name1).await;
    out.client
        .expect("during: the same server accepts the new CA's certificate");
    let out = handshake(server2.clone(), client1.clone(), &name2).await;
    out.client
        .expect("during: the same client accepts a server of the new CA");

    assert!(authority.set(new.clone(), None).unwrap());
    assert!(
        !authority.set(new.clone(), None).unwrap(),
        "no change the second time"
    );
    assert_eq!(authority.bundle().matches("BEGIN CERTIFICATE").count(), 1);
    let (server_old, client_old) = (
        server(&on_old).unwrap(),
        client(&on_old, CLUSTER, KeyPins::default()).unwrap(),
    );
    let out = handshake(server1.clone(), client_old, &name1).await;
    assert!(
        out.client.is_err(),
        "after: a certificate of the old CA is refused"
    );
    let out = handshake(server_old, client1, &name1).await;
    assert!(
        out.client.is_err(),
        "after: a server of the old CA is refused"
    );
    let out = handshake(server1, client2, &name1).await;
    out.client
        .expect("after: the new CA's certificate is still accepted");
}

/// The member server of `id`, presenting from a slot of its own.
fn server(id: &NodeIdentity) -> Result<Arc<rustls::ServerConfig>, Error> {
    server_config(&Trust::new(id.ca_pem())?, node_chain_slot(id)?)
}

/// The member client of `id`.
fn client(
    id: &NodeIdentity,
    cluster_id: &str,
    pins: KeyPins,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    member_client_config(
        Trust::new(id.ca_pem())?,
        node_chain_slot(id)?,
        cluster_id,
        pins,
    )
}

#[test]
fn a_rotation_interrupted_anywhere_leaves_a_matching_pair() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let (old, new) = (member(&ca, 1), member(&ca, 1));
    let stage = |files: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        old.save(dir.path()).unwrap();
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        dir
    };
    let (new_cert, new_key) = (new.cert_pem(), new.key_pem().expose().as_str());
    // (crashed after, files on disk besides the old pair, the pair load must find)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a NodeIdentity);
    let cases: [Case; 4] = [
        ("nothing written", vec![], &old),
        (
            "both next files written",
            vec![("node.next.pem", new_cert), ("node.next.key", new_key)],
            &old,
        ),
        (
            "the key renamed into place",
            vec![("node.next.pem", new_cert), ("node.key", new_key)],
            &new,
        ),
        (
            "both renamed",
            vec![("node.pem", new_cert), ("node.key", new_key)],
            &new,
        ),
    ];
    for (case, files, expected) in cases {
        let dir = stage(&files);
        NodeIdentity::recover_rotation(dir.path()).unwrap();
        let loaded = NodeIdentity::load(dir.path()).unwrap();
        assert_eq!(
            loaded.cert_pem(),
            expected.cert_pem(),
            "{case}: certificate"
        );
        assert_eq!(
            loaded.key_pem().expose(),
            expected.key_pem().expose(),
            "{case}: key"
        );
        for next in ["node.next.pem", "node.next.key"] {
            assert!(!dir.path().join(next).exists(), "{case}: {next} is gone");
        }
    }
    // And the whole rotation, done.
    let dir = stage(&[]);
    new.save_rotated(dir.path()).unwrap();
    let loaded = NodeIdentity::load(dir.path()).unwrap();
    assert_eq!(loaded.cert_pem(), new.cert_pem());
    let mode = std::fs::metadata(dir.path().join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the new key is 0600");
}
