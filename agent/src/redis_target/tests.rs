use super::*;

fn flags(url: &str) -> TargetFlags<'_> {
    TargetFlags {
        url,
        ..TargetFlags::default()
    }
}

#[test]
fn standalone_with_acl_user_and_tls() {
    let spec = RedisTargetSpec::parse(TargetFlags {
        ca_pem: Some(b"pem".to_vec()),
        ..flags("rediss://agent:s3cret@redis.internal:6380/2")
    })
    .unwrap();
    assert!(spec.tls);
    assert_eq!(spec.username.as_deref(), Some("agent"));
    assert_eq!(spec.password.as_deref(), Some("s3cret"));
    assert_eq!(spec.db, 2);
    assert_eq!(spec.identity(), "rediss://redis.internal:6380/2");
    assert!(!format!("{spec:?}").contains("s3cret"));
}

#[test]
fn sentinel_set_and_master() {
    let spec = RedisTargetSpec::parse(TargetFlags {
        sentinels: Some("10.0.0.1:26379, 10.0.0.2 ,[fd00::3]:26380"),
        sentinel_master: Some("mymaster"),
        sentinel_password: Some("sp"),
        ..flags("redis://:pw@ignored:1")
    })
    .unwrap();
    assert_eq!(
        spec.identity(),
        "sentinel://10.0.0.1:26379,10.0.0.2:26379,[fd00::3]:26380/mymaster/0"
    );
    let Topology::Sentinel {
        sentinel_password, ..
    } = &spec.topology
    else {
        panic!("not sentinel: {spec:?}");
    };
    assert_eq!(sentinel_password.as_deref(), Some("sp"));
    assert_eq!(spec.password.as_deref(), Some("pw"));
}

#[test]
fn cluster_seeds() {
    let spec = RedisTargetSpec::parse(TargetFlags {
        cluster: Some("a:7000,b:7001"),
        ..flags("redis://127.0.0.1:6379")
    })
    .unwrap();
    assert!(spec.is_cluster());
    assert_eq!(spec.identity(), "cluster://a:7000,b:7001");
}

#[test]
fn refuses_contradictions_and_bad_lists() {
    let err = |f: TargetFlags<'_>| RedisTargetSpec::parse(f).unwrap_err();
    assert_eq!(
        err(TargetFlags {
            sentinels: Some("a:1"),
            cluster: Some("b:2"),
            sentinel_master: Some("m"),
            ..flags("redis://x")
        }),
        TargetError::SentinelAndCluster
    );
    assert_eq!(
        err(TargetFlags {
            sentinels: Some("a:1"),
            ..flags("redis://x")
        }),
        TargetError::NoMaster
    );
    assert_eq!(
        err(TargetFlags {
            sentinel_master: Some("m"),
            ..flags("redis://x")
        }),
        TargetError::MasterWithoutSentinels
    );
    assert_eq!(
        err(TargetFlags {
            cluster: Some("a:1"),
            ..flags("redis://x/3")
        }),
        TargetError::ClusterDb(3)
    );
    assert_eq!(
        err(TargetFlags {
            ca_pem: Some(Vec::new()),
            ..flags("redis://x")
        }),
        TargetError::CaWithoutTls
    );
    for list in [
        "a:1,,b:2",
        "a:0",
        "a:99999",
        "fd00::1:5",
        "[fd00::1",
        "a:1/x",
        "a:b",
    ] {
        assert!(
            matches!(
                err(TargetFlags {
                    cluster: Some(list),
                    ..flags("redis://x")
                }),
                TargetError::Nodes { .. }
            ),
            "{list}"
        );
    }
    for url in ["http://x", "not a url", "redis+unix:///tmp/r.sock"] {
        assert!(matches!(err(flags(url)), TargetError::Url { .. }), "{url}");
    }
    // The password never shows in the error.
    let e = err(flags("mongodb://u:hunter2@x")).to_string();
    assert!(!e.contains("hunter2"), "{e}");
}
