//! Tests of the configuration: the environment parser, validation, flags and database settings.

mod env_tests {
    use super::super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn error_for(pairs: &[(&str, &str)]) -> ConfigError {
        Config::from_env(&env(pairs)).expect_err("configuration must be rejected")
    }

    #[test]
    fn shadow_and_watch_settings_are_validated_naming_the_variable() {
        let config = Config::from_env(&env(&[("HYPERION_SHADOW_ADDR", "127.0.0.1:7100")]))
            .expect("plaintext to loopback in development mode");
        assert_eq!(config.shadow_addr.as_deref(), Some("127.0.0.1:7100"));
        assert_eq!(config.watch_queue_events, 10_000);
        assert_eq!(config.watch_history_events, 100_000);
        let bad = error_for(&[("HYPERION_SHADOW_ADDR", "shadow-without-port")]);
        assert_eq!(bad.variable, "HYPERION_SHADOW_ADDR");
        let remote = error_for(&[("HYPERION_SHADOW_ADDR", "10.1.2.3:7000")]);
        assert_eq!(remote.variable, "HYPERION_SHADOW_CA_FILE");
        assert!(remote.to_string().contains("needs TLS"), "{remote}");
        let queue = error_for(&[("HYPERION_WATCH_QUEUE_EVENTS", "0")]);
        assert_eq!(queue.variable, "HYPERION_WATCH_QUEUE_EVENTS");
        let history = Config::from_env(&env(&[("HYPERION_WATCH_HISTORY_EVENTS", "0")])).unwrap();
        assert_eq!(
            history.watch_history_events, 0,
            "no history: every resume resyncs"
        );
    }

    #[test]
    fn empty_environment_is_the_embedded_development_node() {
        let config = Config::development();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:7000");
        assert_eq!(
            config.cluster_nodes,
            vec![ClusterNode {
                name: "node1".to_string(),
                addr: "127.0.0.1:7000".to_string()
            }]
        );
        assert_eq!(config.node_index, 0);
        assert_eq!(config.wal_sync, SyncPolicy::EverySec);
        assert_eq!(config.replication_factor, 1);
        assert!(config.dev_mode);
        assert_eq!(config.hmac_key_source, HmacKeySource::Development);
        assert_eq!(config.cache_size_mb, 4096);
        assert_eq!(config.eviction_batch_size, 1000);
        assert_eq!(config.raft, RaftTiming::default());
        assert_eq!(config.raft.election_timeout_ms, 1500);
        assert_eq!(config.log_level, "info");
        assert!(config.database_dsn.is_none());
        assert_eq!(config.flags, FeatureFlags::default());
        assert_eq!(config.flags.max_value_bytes(), 512 * 1024);
    }

    #[test]
    fn election_timeout_defaults_to_ten_heartbeats() {
        let config = Config::from_env(&env(&[("HYPERION_RAFT_HEARTBEAT_MS", "100")])).unwrap();
        assert_eq!(config.raft.election_timeout_ms, 1000);
        assert_eq!(config.raft.lease_duration_ms, 666);
    }

    #[test]
    fn the_log_memory_bound_reaches_the_raft_core() {
        let default = Config::from_env(&env(&[])).unwrap();
        assert_eq!(
            default.raft.core_config().compaction_threshold_bytes,
            hyperion_raft::DEFAULT_COMPACTION_THRESHOLD_BYTES
        );
        let config = Config::from_env(&env(&[("HYPERION_RAFT_LOG_MEMORY_MB", "8")])).unwrap();
        assert_eq!(
            config.raft.core_config().compaction_threshold_bytes,
            8 << 20
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[("HYPERION_TLS_HANDSHAKE_TIMEOUT_MS", "0")],
                "HYPERION_TLS_HANDSHAKE_TIMEOUT_MS",
                "got 0",
            ),
            (
                &[("HYPERION_CONNECTION_IDLE_TIMEOUT_MS", "86400001")],
                "HYPERION_CONNECTION_IDLE_TIMEOUT_MS",
                "got 86400001",
            ),
            (
                &[("HYPERION_RAFT_LOG_MEMORY_MB", "0")],
                "HYPERION_RAFT_LOG_MEMORY_MB",
                "got 0",
            ),
            (
                &[("HYPERION_CACHE_SIZE_MB", "lots")],
                "HYPERION_CACHE_SIZE_MB",
                "got `lots`",
            ),
            (
                &[("HYPERION_CACHE_SIZE_MB", "0")],
                "HYPERION_CACHE_SIZE_MB",
                "got 0",
            ),
            (
                &[("HYPERION_EVICTION_BATCH_SIZE", "-3")],
                "HYPERION_EVICTION_BATCH_SIZE",
                "`-3`",
            ),
            (
                &[
                    ("HYPERION_RAFT_HEARTBEAT_MS", "150"),
                    ("HYPERION_RAFT_ELECTION_TIMEOUT_MS", "200"),
                ],
                "HYPERION_RAFT_ELECTION_TIMEOUT_MS",
                "less than 2x",
            ),
            (
                &[("HYPERION_RAFT_LEASE_MS", "1500")],
                "HYPERION_RAFT_LEASE_MS",
                "below the election",
            ),
            (
                &[("LOG_LEVEL", "loud=[")],
                "LOG_LEVEL",
                "not a valid filter",
            ),
            (
                &[("HYPERION_LISTEN_ADDR", "nowhere")],
                "HYPERION_LISTEN_ADDR",
                "expected an address",
            ),
            (
                &[("HYPERION_LISTEN_ADDR", "0.0.0.0:7000")],
                "HYPERION_LISTEN_ADDR",
                "not a loopback",
            ),
            (
                &[("HYPERION_CLUSTER_NODES", "a:1,b")],
                "HYPERION_CLUSTER_NODES",
                "`b` must be host:port",
            ),
            (
                &[("HYPERION_CLUSTER_NODES", "a:1,a:1")],
                "HYPERION_CLUSTER_NODES",
                "twice",
            ),
            (
                &[
                    ("HYPERION_CLUSTER_NODES", "a:1,b:1,c:1"),
                    ("HYPERION_NODE_ID", "a"),
                    ("HYPERION_REPLICATION_FACTOR", "2"),
                ],
                "HYPERION_REPLICATION_FACTOR",
                "must equal the number of voters",
            ),
            (
                &[("COCKROACH_DSN", "mysql://x")],
                "COCKROACH_DSN",
                "postgresql://",
            ),
            (
                &[("HYPERION_DEV_MODE", "maybe")],
                "HYPERION_DEV_MODE",
                "true or false",
            ),
            (
                &[("HYPERION_DEV_MODE", "false")],
                "HYPERION_HMAC_KEY_FILE",
                "required outside",
            ),
            (
                &[("HYPERION_NODE_ID", "bad id!")],
                "HYPERION_NODE_ID",
                "must be",
            ),
            (
                &[("HYPERION_FEATURE_FLAGS", "/nonexistent/flags.json")],
                "HYPERION_FEATURE_FLAGS (/nonexistent/flags.json)",
                "cannot read",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://",
            ),
        ];
        for (pairs, variable, fragment) in cases {
            let error = error_for(pairs);
            assert_eq!(&error.variable, variable, "for {pairs:?}");
            assert!(
                error.problem.contains(fragment),
                "for {pairs:?}: `{}` lacks `{fragment}`",
                error.problem
            );
        }
    }

    #[test]
    fn feature_flags_take_defaults_and_reject_unknown_keys() {
        let flags = FeatureFlags::from_json(r#"{"enable_compression": false}"#, "flags").unwrap();
        assert!(!flags.enable_compression);
        assert!(flags.enable_batching);
        let product = r#"{
            "enable_compression": true, "enable_batching": true, "new_eviction_algorithm": false,
            "shadow_traffic_percent": 5, "enable_client_caching": true, "max_value_size_kb": 512
        }"#;
        assert_eq!(
            FeatureFlags::from_json(product, "flags")
                .unwrap()
                .shadow_traffic_percent,
            5
        );
        let unknown =
            FeatureFlags::from_json(r#"{"enable_compresion": true}"#, "flags").unwrap_err();
        assert!(
            unknown
                .problem
                .contains("unknown field `enable_compresion`"),
            "{unknown}"
        );
        let range =
            FeatureFlags::from_json(r#"{"shadow_traffic_percent": 101}"#, "flags").unwrap_err();
        assert!(range.problem.contains("0-100"), "{range}");
        let zero = FeatureFlags::from_json(r#"{"max_value_size_kb": 0}"#, "flags").unwrap_err();
        assert!(zero.problem.contains("max_value_size_kb"), "{zero}");
        let typed = FeatureFlags::from_json(r#"{"enable_batching": "yes"}"#, "flags").unwrap_err();
        assert!(typed.problem.contains("invalid type"), "{typed}");
    }

    #[test]
    fn key_file_configures_production_mode() {
        let dir = std::env::temp_dir().join(format!("hyperion-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("hmac.key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        let short = dir.join("short.key");
        std::fs::write(&short, [7u8; 8]).unwrap();
        // Production mode serves TLS only: a key file alone is not enough.
        let plaintext = error_for(&[("HYPERION_HMAC_KEY_FILE", key.to_str().unwrap())]);
        assert_eq!(plaintext.variable, "HYPERION_DEV_MODE", "{plaintext}");
        assert!(
            plaintext.problem.contains("HYPERION_TLS_CERT_FILE"),
            "{plaintext}"
        );
        let config = Config::from_env(&env(&[
            ("HYPERION_HMAC_KEY_FILE", key.to_str().unwrap()),
            ("HYPERION_DEV_MODE", "true"),
        ]))
        .unwrap();
        assert!(config.dev_mode);
        assert_eq!(
            config.hmac_key_source,
            HmacKeySource::File(key.clone()),
            "an explicit key file is used in development mode too"
        );
        assert_eq!(config.hmac_key.expose(), &[7u8; 32]);
        assert_eq!(
            format!("{:?}", config.hmac_key),
            "Secret(<32 bytes redacted>)"
        );
        let error = error_for(&[("HYPERION_HMAC_KEY_FILE", short.to_str().unwrap())]);
        assert!(error.variable.starts_with("HYPERION_HMAC_KEY_FILE"));
        assert!(error.problem.contains("got 8"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cluster_members_are_named_and_ordered() {
        let config = Config::from_env(&env(&[
            (
                "HYPERION_CLUSTER_NODES",
                "n1=127.0.0.1:7001, n2=127.0.0.1:7002,n3=127.0.0.1:7003",
            ),
            ("HYPERION_NODE_ID", "n2"),
            ("HYPERION_LISTEN_ADDR", "127.0.0.1:7002"),
        ]))
        .unwrap();
        assert_eq!(config.node_index, 1);
        assert_eq!(config.replication_factor, 3);
        assert_eq!(config.cluster_nodes[2].addr, "127.0.0.1:7003");
        // The product's form names each node by its host; hosts off loopback need TLS, which
        // the refusal names (the parse itself succeeded).
        let product = error_for(&[
            ("HYPERION_CLUSTER_NODES", "node1:7000,node2:7000,node3:7000"),
            ("HYPERION_NODE_ID", "node3"),
        ]);
        assert_eq!(product.variable, "HYPERION_CLUSTER_NODES");
        assert!(
            product
                .problem
                .starts_with("node `node1` at node1:7000 is not on loopback"),
            "{product}"
        );
    }

    #[test]
    fn unset_and_empty_are_the_same() {
        let config = Config::from_env(&env(&[("HYPERION_CACHE_SIZE_MB", "  ")])).unwrap();
        assert_eq!(config.cache_size_mb, DEFAULT_CACHE_SIZE_MB);
    }
}

mod database_tests {
    use super::super::*;
    use crate::db::DbStartMode;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(&env)
    }

    #[test]
    fn database_settings_default_and_parse() {
        let defaults = config(&[]).unwrap().database;
        assert_eq!(defaults, DatabaseConfig::default());
        assert_eq!(defaults.start_mode, DbStartMode::Require);
        let key = std::env::temp_dir().join(format!("hyperion-db-config-{}", std::process::id()));
        std::fs::write(&key, "password\n").unwrap();
        let path = key.to_str().unwrap();
        let db = config(&[
            (
                "COCKROACH_DSN",
                "postgresql://hyperion@roach:26257/hyperion?sslmode=verify-full",
            ),
            ("HYPERION_DB_POOL_SIZE", "8"),
            ("HYPERION_DB_PASSWORD_FILE", path),
            ("HYPERION_DB_CA_FILE", path),
            ("HYPERION_DB_QUERY_TIMEOUT_MS", "250"),
            ("HYPERION_DB_CONNECT_TIMEOUT_MS", "1000"),
            ("HYPERION_DB_WARMUP_TIMEOUT_MS", "3000"),
            ("HYPERION_DB_START_MODE", "Degraded"),
        ])
        .unwrap()
        .database;
        assert_eq!(db.pool_size, 8);
        assert_eq!(db.password_file.as_deref(), Some(key.as_path()));
        assert_eq!(db.start_mode, DbStartMode::Degraded);
        let client = db.client_config();
        assert_eq!(client.max_concurrent_queries, 8);
        assert_eq!(client.query_timeout, std::time::Duration::from_millis(250));
        let pg = db.pg_settings(&Secret::new(b"postgresql://x@y/z".to_vec()));
        assert_eq!(pg.connect_timeout, std::time::Duration::from_millis(1000));
        std::fs::remove_file(&key).unwrap();
    }

    #[test]
    fn bad_database_settings_name_the_variable() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "HYPERION_DB_POOL_SIZE",
                "0",
                "HYPERION_DB_POOL_SIZE",
                "1..=1024",
            ),
            (
                "HYPERION_DB_POOL_SIZE",
                "many",
                "HYPERION_DB_POOL_SIZE",
                "`many`",
            ),
            (
                "HYPERION_DB_PASSWORD_FILE",
                "/nonexistent/pw",
                "HYPERION_DB_PASSWORD_FILE",
                "cannot read",
            ),
            (
                "HYPERION_DB_CA_FILE",
                "/nonexistent/ca.pem",
                "HYPERION_DB_CA_FILE",
                "cannot read",
            ),
            (
                "HYPERION_DB_QUERY_TIMEOUT_MS",
                "0",
                "HYPERION_DB_QUERY_TIMEOUT_MS",
                "got 0",
            ),
            (
                "HYPERION_DB_WARMUP_TIMEOUT_MS",
                "10",
                "HYPERION_DB_WARMUP_TIMEOUT_MS",
                "shorter than one query",
            ),
            (
                "HYPERION_DB_START_MODE",
                "maybe",
                "HYPERION_DB_START_MODE",
                "require or degraded",
            ),
        ];
        for (name, value, variable, fragment) in cases {
            let error = config(&[(name, value)]).expect_err("must be rejected");
            assert_eq!(&error.variable, variable, "{name}={value}");
            assert!(error.problem.contains(fragment), "{name}={value}: {error}");
        }
        // A long query timeout raises the default warm-up budget with it.
        let db = config(&[("HYPERION_DB_QUERY_TIMEOUT_MS", "20000")])
            .unwrap()
            .database;
        assert_eq!(db.warmup_timeout_ms, 20_000);
    }
}
