//! Parsing and validating the configuration file.

use super::*;

fn parse(text: &str) -> Result<NodeConfig, String> {
    NodeConfig::parse(Path::new("test.toml"), text).map_err(|e| e.to_string())
}

const MINIMAL: &str = r#"
    [node]
    name = "n1"
    state_dir = "/tmp/pgq"
    [peer]
    listen = "127.0.0.1:7400"
    [api]
    listen = "127.0.0.1:8008"
"#;

#[test]
fn minimal_file_gets_lan_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.name, "n1");
    assert_eq!(c.peer_advertise, "127.0.0.1:7400");
    assert_eq!(c.timings, Profile::Lan.timings());
    assert_eq!(c.log_format, LogFormat::Human);
    assert!(c.api_tls, "the API serves HTTPS by default");
    assert_eq!(c.api_verify_client, crate::tls::VerifyClient::None);
    assert_eq!(
        c.server_cert_lifetime,
        Duration::from_secs(90 * 24 * 60 * 60)
    );
    assert_eq!(c.node_cert_lifetime, crate::tls::NODE_VALIDITY);
}

#[test]
fn postgresql_section_gets_defaults_under_the_state_dir() {
    let c = parse(&format!(
        "{MINIMAL}\n[postgresql]\nlisten = \"127.0.0.1:5433\"\n"
    ))
    .unwrap();
    let pg = c.postgresql.unwrap();
    assert_eq!(pg.data_dir, PathBuf::from("/tmp/pgq/pgdata"));
    assert_eq!(pg.advertise, "127.0.0.1:5433");
    assert_eq!(pg.os_user, "postgres");
    assert!(pg.tls, "PostgreSQL TLS is on by default");
    assert!(parse(MINIMAL).unwrap().postgresql.is_none());
    let err = parse(&format!(
        "{MINIMAL}\n[postgresql]\nlisten = \"127.0.0.1:7400\"\n"
    ))
    .unwrap_err();
    assert!(err.contains("collides"), "{err}");
}

#[test]
fn wan_profile_and_overrides_apply() {
    let c = parse(&format!(
        "{MINIMAL}\n[raft]\nprofile = \"wan\"\nheartbeat_interval = \"400ms\"\n"
    ))
    .unwrap();
    assert_eq!(c.timings.heartbeat_interval, Duration::from_millis(400));
    assert_eq!(c.timings.election_timeout_min, Duration::from_millis(1500));
}

#[test]
fn the_packaged_example_parses_and_proxy_settings_apply() {
    let example = include_str!("../../packaging/pgquorum.toml.example");
    parse(example).expect("packaging/pgquorum.toml.example");
    let c = parse(&format!(
        "{MINIMAL}\n[proxy]\nreader_max_lag_time = \"3s\"\nreader_balance = \"round-robin\"\n\
         threads = 2\n"
    ))
    .unwrap();
    let proxy = c.proxy.expect("the proxy is on by default");
    assert_eq!(proxy.policy.max_delay, Duration::from_secs(3));
    assert_eq!(proxy.policy.balance, crate::proxy::Balance::RoundRobin);
    assert_eq!(proxy.threads, 2);
    assert_eq!(proxy.policy.max_lag, 16 * 1024 * 1024);
}

#[test]
fn bad_files_name_the_key_and_the_fix() {
    let cases: &[(&str, &str, &str)] = &[
        ("unknown key", "[node]\nnmae = \"x\"", "unknown field `nmae`"),
        ("bad duration", "[raft]\nheartbeat_interval = \"fast\"", "heartbeat_interval"),
        (
            "wildcard without advertise",
            "[node]\nname=\"a\"\nstate_dir=\"/x\"\n[peer]\nlisten=\"0.0.0.0:7400\"\n[api]\nlisten=\"127.0.0.1:8008\"",
            "set [peer] advertise",
        ),
        (
            "same port",
            "[node]\nname=\"a\"\nstate_dir=\"/x\"\n[peer]\nlisten=\"127.0.0.1:7400\"\n[api]\nlisten=\"127.0.0.1:7400\"",
            "collides",
        ),
        ("relative state dir", "[node]\nname=\"a\"\nstate_dir=\"x\"", "absolute path"),
        ("bad name", "[node]\nname=\"a b\"", "letters, digits"),
        ("unknown tag", "[tags]\nnofailver = true", "unknown field `nofailver`"),
        (
            "election too short",
            "[node]\nname=\"a\"\nstate_dir=\"/x\"\n[peer]\nlisten=\"127.0.0.1:1\"\n[api]\nlisten=\"127.0.0.1:2\"\n[raft]\nelection_timeout_min=\"150ms\"",
            "election_timeout_min",
        ),
        (
            "unknown reader balance",
            &format!("{MINIMAL}\n[proxy]\nreader_balance = \"random\""),
            "unknown variant `random`, expected `least-connections` or `round-robin`",
        ),
        (
            "no proxy threads",
            &format!("{MINIMAL}\n[proxy]\nthreads = 0"),
            "[proxy] threads = 0 is out of range",
        ),
        (
            "client certificates without TLS",
            "[node]\nname=\"a\"\nstate_dir=\"/x\"\n[peer]\nlisten=\"127.0.0.1:1\"\n[api]\nlisten=\"127.0.0.1:2\"\ntls=false\nverify_client=\"required\"",
            "[api] verify_client needs TLS",
        ),
        (
            "unknown verify_client",
            "[node]\nname=\"a\"\nstate_dir=\"/x\"\n[peer]\nlisten=\"127.0.0.1:1\"\n[api]\nlisten=\"127.0.0.1:2\"\nverify_client=\"always\"",
            "unknown variant `always`, expected one of `none`, `optional`, `required`",
        ),
        (
            "server certificates renewed too often",
            &format!("{MINIMAL}\n[tls]\nserver_certificate_lifetime = \"5s\""),
            "[tls] server_certificate_lifetime = 5s is too short",
        ),
        (
            "node certificates renewed too often",
            &format!("{MINIMAL}\n[tls]\nnode_certificate_lifetime = \"10s\""),
            "[tls] node_certificate_lifetime = 10s is too short",
        ),
        (
            "pooler without postgresql",
            &format!("{MINIMAL}\n[pooler]\nlisten = \"127.0.0.1:6432\""),
            "[pooler] needs this member's PostgreSQL",
        ),
        (
            "unknown pool mode",
            &format!("{MINIMAL}\n[pooler]\npool_mode = \"statement\""),
            "unknown variant `statement`, expected `session` or `transaction`",
        ),
        (
            "unknown pooler key",
            &format!("{MINIMAL}\n[pooler]\nlisten_port = 6432"),
            "unknown field `listen_port`",
        ),
        (
            "bad advertise",
            "[node]\nname=\"a\"\nstate_dir=\"/x\"\n[peer]\nlisten=\"127.0.0.1:1\"\nadvertise=\"nohost\"",
            "must be host:port",
        ),
    ];
    for (name, text, want) in cases {
        let err = parse(text).expect_err(name);
        assert!(
            err.contains(want),
            "{name}: {err:?} should mention {want:?}"
        );
        assert!(
            err.starts_with("test.toml"),
            "{name}: {err:?} should name the file"
        );
    }
}
