//! The state's helpers, the wire format, rejection messages and the dynamic configuration.

use super::*;

#[test]
fn state_helpers_answer_from_the_state() {
    let s = state().with_member(2).with_lease(2, 1, 0);
    assert!(s.is_bootstrapped() && !ClusterState::default().is_bootstrapped());
    assert_eq!(s.member(NodeId(2)), Some(&member(2)));
    assert_eq!(s.member_by_name("node1").map(|m| m.id), Some(NodeId(1)));
    assert_eq!(s.member_by_name("nobody"), None);
    assert_eq!(s.lease_holder(), Some(NodeId(2)));
    assert_eq!(ClusterState::default().next_node_id, 1);
}

#[test]
fn state_and_commands_round_trip_through_json() {
    let s = state()
        .with_member(2)
        .with_lease(2, 3, 4)
        .with_switchover(2, Some(1));
    assert_eq!(serde_json::from_str::<ClusterState>(&json(&s)).unwrap(), s);
    let command: Command = serde_json::from_str(
        r#"{"type":"acquire_lease","candidate":2,"expected":{"epoch":3,"seq":4}}"#,
    )
    .unwrap();
    assert_eq!(command, acquire(2, at(3, 4)));
    let result = rejected(Rejection::InvalidConfig("x".into()));
    let text = serde_json::to_string(&result).unwrap();
    assert_eq!(
        serde_json::from_str::<CommandResult>(&text).unwrap(),
        result
    );
    let tags: Tags = serde_json::from_str("{}").unwrap();
    assert_eq!(tags.failover_priority, 1);
}

#[test]
fn rejections_say_what_and_how_to_fix() {
    let cases = [
        (
            Rejection::LeaseHeld {
                lease: lease(2, 3, 4),
            },
            "lease is held by node 2 (epoch 3, renewal 4)",
        ),
        (
            Rejection::TokenUsedUp { id: "t".into() },
            "join token t has no uses left; create a new one with `pgquorum token create`",
        ),
        (
            Rejection::TokenRefused { id: "t".into() },
            "join token refused: this cluster has no token with that id and secret; copy the \
             whole token again, or create one with `pgquorum token create`",
        ),
        (
            Rejection::NameInUse {
                name: "db1".into(),
                id: NodeId(1),
            },
            "member name db1 is already used by node 1; remove it first with \
             `pgquorum node remove db1` or choose another name",
        ),
        (
            Rejection::LeaseNotHeld { current: None },
            "lease is not held by that node in that epoch (it is free); see `pgquorum list` for \
             the current primary",
        ),
    ];
    for (rejection, message) in cases {
        assert_eq!(rejection.to_string(), message);
    }
}

// ---- dynamic configuration ---------------------------------------------------------------

#[test]
fn dynamic_config_reads_humantime_strings_and_defaults_the_rest() {
    let config: DynamicConfig = serde_json::from_str(
        r#"{"ttl":"30s","loop_wait":"10s","synchronous_mode":"quorum",
            "postgresql_parameters":{"work_mem":"64MB"}}"#,
    )
    .unwrap();
    assert_eq!(config.ttl, Duration::from_secs(30));
    assert_eq!(config.loop_wait, Duration::from_secs(10));
    assert_eq!(config.retry_timeout, Duration::from_secs(1));
    assert_eq!(config.synchronous_mode, SynchronousMode::Quorum);
    assert_eq!(config.maximum_lag_on_failover, 1_048_576);
    let text = serde_json::to_string(&config).unwrap();
    assert!(text.contains(r#""ttl":"30s""#), "{text}");
    assert_eq!(
        serde_json::from_str::<DynamicConfig>(&text).unwrap(),
        config
    );
    assert_eq!(
        serde_json::from_str::<DynamicConfig>("{}").unwrap(),
        DynamicConfig::default()
    );
    assert!(serde_json::from_str::<DynamicConfig>(r#"{"tll":"2s"}"#).is_err());
    assert_eq!(DynamicConfig::default().validate(), Ok(()));
}

#[test]
fn dynamic_config_validation_names_the_key_and_the_fix() {
    fn config(edit: fn(&mut DynamicConfig)) -> DynamicConfig {
        let mut config = DynamicConfig::default();
        edit(&mut config);
        config
    }
    fn param(name: &str) -> DynamicConfig {
        value(name, "1")
    }
    fn hba(rule: &str) -> DynamicConfig {
        DynamicConfig {
            pg_hba: vec![rule.to_string()],
            ..Default::default()
        }
    }
    fn value(name: &str, value: &str) -> DynamicConfig {
        let mut config = DynamicConfig::default();
        config
            .postgresql_parameters
            .insert(name.into(), value.into());
        config
    }
    let ms = Duration::from_millis;
    let cases = [
        (
            config(|c| c.ttl = Duration::from_millis(900)),
            "ttl (900ms) must be at least 1s",
        ),
        (
            config(|c| c.loop_wait = Duration::from_millis(50)),
            "loop_wait (50ms) must be at least",
        ),
        (
            config(|c| c.loop_wait = Duration::from_millis(700)),
            "loop_wait (700ms) must be at most",
        ),
        (
            config(|c| c.retry_timeout = Duration::from_secs(2)),
            "retry_timeout (2s) must be less",
        ),
        (
            config(|c| c.member_timeout = Duration::from_millis(2500)),
            "member_timeout (2s 500ms) must be less",
        ),
        (
            param(""),
            "postgresql_parameters key \"\" is not a parameter name",
        ),
        (
            param("Work_Mem"),
            "postgresql_parameters key \"Work_Mem\" is not a parameter name",
        ),
        (
            param("include"),
            "postgresql_parameters key \"include\" is not a parameter but a directive",
        ),
        (
            param("include_dir"),
            "postgresql_parameters key \"include_dir\" is not a parameter but a directive",
        ),
        (
            param("include_if_exists"),
            "postgresql_parameters key \"include_if_exists\" is not a parameter but a directive",
        ),
        (
            value("work_mem", "64MB\nshared_preload_libraries = 'evil'"),
            "postgresql_parameters value of \"work_mem\" holds a newline",
        ),
        (
            value("application_name", "a\rb"),
            "postgresql_parameters value of \"application_name\" holds a newline",
        ),
        (
            value("application_name", "nul\0"),
            "postgresql_parameters value of \"application_name\" holds a newline",
        ),
        (
            hba("hostssl all all 0.0.0.0/0 scram-sha-256\nhost all all 0.0.0.0/0 trust"),
            "pg_hba rule \"hostssl all all 0.0.0.0/0 scram-sha-256\\nhost all all 0.0.0.0/0 trust\" holds a newline",
        ),
        (
            hba("include_dir /etc"),
            "pg_hba rule \"include_dir /etc\" includes another file",
        ),
        (
            hba("all all 0.0.0.0/0 trust"),
            "pg_hba rule \"all all 0.0.0.0/0 trust\" does not start with a connection type",
        ),
        (
            hba("host all all scram-sha-256"),
            "pg_hba rule \"host all all scram-sha-256\" is incomplete",
        ),
    ];
    for (config, prefix) in cases {
        let message = config.validate().unwrap_err();
        assert!(
            message.starts_with(prefix),
            "{message:?} should start with {prefix:?}"
        );
    }
    assert_eq!(param("auto_explain.log_min_duration").validate(), Ok(()));
    assert_eq!(
        hba("hostssl all app 10.0.0.0/8 scram-sha-256").validate(),
        Ok(())
    );
    assert_eq!(hba("local all all peer").validate(), Ok(()));
    let edge = DynamicConfig {
        ttl: ms(1500),
        loop_wait: ms(500),
        ..Default::default()
    };
    assert_eq!(
        edge.validate(),
        Ok(()),
        "loop_wait of exactly a third of ttl is allowed"
    );
}
