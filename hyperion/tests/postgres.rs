//! Integration tests of the database layer against a real PostgreSQL (`ci/postgres start`).
//!
//! The DSN comes from `HYPERION_TEST_DATABASE_URL` (password from
//! `HYPERION_TEST_DATABASE_PASSWORD_FILE`, test CA from `HYPERION_TEST_DATABASE_CA_FILE`). Without
//! it the tests print a loud skip message and pass, unless `HYPERION_REQUIRE_DATABASE=1`, when they
//! fail. Tests share one database and run in parallel: each uses its own key prefix.
//! The warm-up failure tests need no database and always run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperion::config::Secret;
use hyperion::db::{
    apply_mutation, Database, DbClient, DbClientConfig, DbError, Mutation, PgDatabase, PgSettings,
    StoredEntry, WRITE_BATCH_MAX,
};
use hyperion::resilience::{BreakerConfig, BreakerState, Jitter, RetryPolicy};
use hyperion::runtime;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::net::{TcpListener, TcpStream};

fn database_url(test: &str) -> Option<String> {
    match std::env::var("HYPERION_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("HYPERION_REQUIRE_DATABASE").as_deref() == Ok("1") => {
            panic!("{test}: HYPERION_REQUIRE_DATABASE=1 but HYPERION_TEST_DATABASE_URL is unset (run `eval \"$(ci/postgres start)\"`)")
        }
        _ => {
            eprintln!(
                "\n!!!!! SKIPPED {test}: HYPERION_TEST_DATABASE_URL is unset; no PostgreSQL to test \
                 against. Run `eval \"$(ci/postgres start)\"` first. !!!!!\n"
            );
            None
        }
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn settings(url: &str) -> PgSettings {
    PgSettings {
        dsn: Secret::new(url.as_bytes().to_vec()),
        password_file: env_path("HYPERION_TEST_DATABASE_PASSWORD_FILE"),
        password: None,
        ca_file: None,
        pool_size: 4,
        connect_timeout: Duration::from_secs(2),
    }
}

fn client_config() -> DbClientConfig {
    DbClientConfig {
        max_concurrent_queries: 4,
        query_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            max_total: Duration::from_secs(1),
            jitter: Jitter::Full,
        },
        breaker: BreakerConfig {
            failure_percent: 50,
            window: Duration::from_secs(10),
            min_calls: 4,
            open_for: Duration::from_millis(300),
            half_open_probes: 1,
        },
        warmup_timeout: Duration::from_secs(5),
        coalesce_loads: true,
        join_rule: hyperion::single_flight::JoinRule::CoveringReadPoint,
    }
}

/// A key prefix no other test (or earlier run) uses.
fn prefix(test: &str) -> String {
    format!(
        "{test}/{}/{:x}/",
        std::process::id(),
        runtime::entropy_seed()
    )
}

fn entry(key: &str, version: u64, value: &str) -> StoredEntry {
    StoredEntry {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        version,
        ttl_ms: 60_000,
        created_at_ms: 1_700_000_000_000 + version,
    }
}

fn upsert(key: &str, version: u64, value: &str) -> Mutation {
    Mutation::Upsert(entry(key, version, value))
}

fn delete(key: &str, version: u64) -> Mutation {
    Mutation::Delete {
        key: key.as_bytes().to_vec(),
        version,
    }
}

async fn migrated(url: &str) -> PgDatabase {
    let db = PgDatabase::new(&settings(url)).expect("settings");
    db.migrate().await.expect("migrate");
    db
}

#[tokio::test]
async fn migration_runs_twice_and_concurrently() {
    let Some(url) = database_url("migration_runs_twice_and_concurrently") else {
        return;
    };
    let db = PgDatabase::new(&settings(&url)).unwrap();
    db.migrate().await.unwrap();
    db.migrate().await.unwrap();
    let (a, b, c) = (
        PgDatabase::new(&settings(&url)).unwrap(),
        PgDatabase::new(&settings(&url)).unwrap(),
        PgDatabase::new(&settings(&url)).unwrap(),
    );
    let (ra, rb, rc) = tokio::join!(a.migrate(), b.migrate(), c.migrate());
    assert_eq!((ra, rb, rc), (Ok(()), Ok(()), Ok(())));
    db.ping().await.unwrap();
}

#[tokio::test]
async fn write_then_load_and_versions_never_regress() {
    let Some(url) = database_url("write_then_load_and_versions_never_regress") else {
        return;
    };
    let db = migrated(&url).await;
    let k = format!("{}k", prefix("versions"));
    let load = |db: &PgDatabase, k: &str| {
        let (db, k) = (db.clone(), k.to_string());
        async move {
            db.load(k.as_bytes())
                .await
                .unwrap()
                .map(|e| (e.version, String::from_utf8(e.value).unwrap()))
        }
    };
    assert_eq!(load(&db, &k).await, None);
    db.write_batch(&[upsert(&k, 5, "five")]).await.unwrap();
    let stored = db.load(k.as_bytes()).await.unwrap().unwrap();
    assert_eq!(stored, entry(&k, 5, "five"), "every field round-trips");
    db.write_batch(&[upsert(&k, 4, "four")]).await.unwrap();
    assert_eq!(
        load(&db, &k).await,
        Some((5, "five".into())),
        "older upsert ignored"
    );
    db.write_batch(&[upsert(&k, 5, "replay")]).await.unwrap();
    assert_eq!(
        load(&db, &k).await,
        Some((5, "five".into())),
        "replay ignored"
    );
    db.write_batch(&[delete(&k, 3)]).await.unwrap();
    assert_eq!(
        load(&db, &k).await,
        Some((5, "five".into())),
        "older delete ignored"
    );
    db.write_batch(&[delete(&k, 7)]).await.unwrap();
    assert_eq!(load(&db, &k).await, None, "deleted");
    db.write_batch(&[upsert(&k, 6, "late")]).await.unwrap();
    assert_eq!(
        load(&db, &k).await,
        None,
        "the tombstone blocks an older upsert"
    );
    db.write_batch(&[upsert(&k, 8, "eight")]).await.unwrap();
    assert_eq!(load(&db, &k).await, Some((8, "eight".into())));
    // One batch touching a key several times: the highest version wins, whatever the order.
    db.write_batch(&[upsert(&k, 10, "ten"), upsert(&k, 9, "nine"), delete(&k, 8)])
        .await
        .unwrap();
    assert_eq!(load(&db, &k).await, Some((10, "ten".into())));
}

/// Property: random batches applied to PostgreSQL and to the reference rule
/// (`apply_mutation`, which the simulated database uses) leave the same visible entries.
#[tokio::test]
async fn postgres_agrees_with_the_reference_rule_on_random_batches() {
    let Some(url) = database_url("postgres_agrees_with_the_reference_rule_on_random_batches")
    else {
        return;
    };
    let db = migrated(&url).await;
    let p = prefix("model");
    let keys: Vec<String> = (0..6).map(|i| format!("{p}{i}")).collect();
    let mut model = BTreeMap::new();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for round in 0..30 {
        let batch: Vec<Mutation> = (0..rng.random_range(1..12))
            .map(|i| {
                let key = &keys[rng.random_range(0..keys.len())];
                let version = rng.random_range(1..40);
                if rng.random_bool(0.25) {
                    delete(key, version)
                } else {
                    upsert(key, version, &format!("r{round}m{i}"))
                }
            })
            .collect();
        for mutation in &batch {
            apply_mutation(&mut model, mutation);
        }
        db.write_batch(&batch).await.unwrap();
        for key in &keys {
            let expected = model
                .get(key.as_bytes())
                .and_then(|row| row.entry(key.as_bytes()));
            assert_eq!(
                db.load(key.as_bytes()).await.unwrap(),
                expected,
                "round {round} {key}"
            );
        }
    }
}

#[tokio::test]
async fn batch_writes_up_to_the_limit_through_the_client() {
    let Some(url) = database_url("batch_writes_up_to_the_limit_through_the_client") else {
        return;
    };
    let db = PgDatabase::new(&settings(&url)).unwrap();
    let client = DbClient::connect_and_warm(db, client_config(), ChaCha8Rng::seed_from_u64(1))
        .await
        .unwrap();
    let p = prefix("batch");
    let batch: Vec<Mutation> = (0..WRITE_BATCH_MAX)
        .map(|i| upsert(&format!("{p}{i}"), 1, &format!("value {i}")))
        .collect();
    client.write_batch(&batch).await.unwrap();
    for i in [0, 1, 499, 999] {
        let loaded = client
            .load(format!("{p}{i}").as_bytes(), 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(loaded.value, format!("value {i}").into_bytes());
    }
    let too_big: Vec<Mutation> = (0..=WRITE_BATCH_MAX)
        .map(|i| delete(&format!("{p}{i}"), 2))
        .collect();
    assert!(matches!(
        client.write_batch(&too_big).await,
        Err(DbError::Invalid(_))
    ));
    // Concurrent loads of one key share a query; all see the same entry.
    let key = format!("{p}7");
    let loads = futures::future::join_all((0..20).map(|_| client.load(key.as_bytes(), 0))).await;
    assert!(loads
        .iter()
        .all(|l| l.as_ref().unwrap().as_ref().unwrap().version == 1));
    let metrics = client.metrics();
    assert_eq!(metrics.rows_written, WRITE_BATCH_MAX as u64);
    assert!(metrics.loads_coalesced > 0, "{metrics:?}");
}

/// A loopback TCP proxy in front of the real database, so a test can take the database away
/// (close the port and cut every open connection) and bring it back on the same address.
struct Outage {
    upstream: String,
    addr: std::net::SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Outage {
    async fn new(upstream: String) -> Outage {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let outage = Outage {
            upstream,
            addr,
            tasks: Arc::default(),
        };
        outage.serve(listener);
        outage
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, tasks) = (self.upstream.clone(), self.tasks.clone());
        let accept = runtime::spawn(async move {
            // Bounded: the test makes a handful of connections.
            for _ in 0..1_000 {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                let pipe = runtime::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(pipe);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// The database goes away: the port closes and open connections are cut.
    fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// The database comes back on the same address.
    async fn restart(&self) {
        for _ in 0..50 {
            if let Ok(listener) = TcpListener::bind(self.addr).await {
                self.serve(listener);
                return;
            }
            runtime::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot rebind {}", self.addr);
    }
}

#[tokio::test]
async fn breaker_opens_when_the_database_stops_and_closes_when_it_returns() {
    let Some(url) =
        database_url("breaker_opens_when_the_database_stops_and_closes_when_it_returns")
    else {
        return;
    };
    let parsed = hyperion::db::parse_dsn(&url).unwrap().0;
    let host = parsed.get_hosts().first().cloned().expect("a host");
    let host = match host {
        tokio_postgres::config::Host::Tcp(host) => host,
        other => panic!("the test DSN must use TCP, got {other:?}"),
    };
    let port = parsed.get_ports().first().copied().unwrap_or(5432);
    let proxy = Outage::new(format!("{host}:{port}")).await;
    let proxied = url.replacen(&format!("@{host}:{port}/"), &format!("@{}/", proxy.addr), 1);
    assert_ne!(
        proxied, url,
        "the DSN must be of the form user@host:port/db"
    );

    let db = PgDatabase::new(&settings(&proxied)).unwrap();
    let client = DbClient::connect_and_warm(db, client_config(), ChaCha8Rng::seed_from_u64(2))
        .await
        .unwrap();
    let k = format!("{}k", prefix("breaker"));
    client
        .write_batch(&[upsert(&k, 1, "before")])
        .await
        .unwrap();
    assert_eq!(client.breaker_state(), BreakerState::Closed);

    proxy.stop();
    let mut opened = false;
    for _ in 0..20 {
        match client.load(k.as_bytes(), 0).await {
            Err(DbError::CircuitOpen { .. }) => {
                opened = true;
                break;
            }
            Err(error) => assert!(error.is_health_failure(), "{error}"),
            Ok(_) => panic!("a load succeeded with the database gone"),
        }
    }
    assert!(opened, "the breaker opened: {:?}", client.metrics());
    assert_eq!(client.breaker_state(), BreakerState::Open);
    let started = runtime::now();
    assert!(matches!(
        client.load(k.as_bytes(), 0).await,
        Err(DbError::CircuitOpen { .. })
    ));
    assert!(
        runtime::now() - started < Duration::from_millis(50),
        "fails fast"
    );

    proxy.restart().await;
    let mut closed = false;
    for _ in 0..50 {
        runtime::sleep(Duration::from_millis(100)).await;
        if let Ok(Some(entry)) = client.load(k.as_bytes(), 0).await {
            assert_eq!(entry.value, b"before");
            closed = true;
            break;
        }
    }
    assert!(closed, "the database came back: {:?}", client.metrics());
    assert_eq!(client.breaker_state(), BreakerState::Closed);
    assert!(client.metrics().breaker_opened >= 1);
    proxy.stop();
}

#[tokio::test]
async fn tls_verify_full_accepts_the_test_ca_and_refuses_another() {
    let Some(url) = database_url("tls_verify_full_accepts_the_test_ca_and_refuses_another") else {
        return;
    };
    let (Some(ca), Some(wrong_ca)) = (
        env_path("HYPERION_TEST_DATABASE_CA_FILE"),
        env_path("HYPERION_TEST_DATABASE_WRONG_CA_FILE"),
    ) else {
        eprintln!("\n!!!!! SKIPPED the TLS test: no HYPERION_TEST_DATABASE_CA_FILE !!!!!\n");
        return;
    };
    let tls_url = url.replace("sslmode=disable", "sslmode=verify-full");
    assert!(
        tls_url.contains("verify-full"),
        "the test DSN carries sslmode=disable"
    );
    let mut good = settings(&tls_url);
    good.ca_file = Some(ca);
    PgDatabase::new(&good).unwrap().ping().await.unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let by_name = tls_url.replacen("@127.0.0.1:", &format!("@{host}:"), 1);
        PgDatabase::new(&PgSettings {
            dsn: Secret::new(by_name.into_bytes()),
            ..good.clone()
        })
        .unwrap()
        .ping()
        .await
        .unwrap();
    }
    // sslmode=require without a CA: encrypted, certificate not verified (libpq's meaning).
    let require_url = url.replace("sslmode=disable", "sslmode=require");
    PgDatabase::new(&settings(&require_url))
        .unwrap()
        .ping()
        .await
        .unwrap();
    let mut bad = settings(&tls_url);
    bad.ca_file = Some(wrong_ca);
    let error = PgDatabase::new(&bad).unwrap().ping().await.unwrap_err();
    assert!(matches!(error, DbError::Unavailable(_)), "{error}");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_and_not_retried() {
    let Some(url) = database_url("a_wrong_password_is_a_clear_error_and_not_retried") else {
        return;
    };
    let file = std::env::temp_dir().join(format!("hyperion-wrong-password-{}", std::process::id()));
    std::fs::write(&file, "not-the-password\n").unwrap();
    let mut wrong = settings(&url);
    wrong.password_file = Some(file.clone());
    let started = runtime::now();
    let error = DbClient::connect_and_warm(
        PgDatabase::new(&wrong).unwrap(),
        client_config(),
        ChaCha8Rng::seed_from_u64(4),
    )
    .await
    .err()
    .expect("authentication must fail");
    std::fs::remove_file(&file).unwrap();
    assert!(
        matches!(&error, DbError::Rejected { code, .. } if code == "28P01"),
        "{error}"
    );
    assert!(
        error.to_string().contains("password authentication failed"),
        "{error}"
    );
    assert!(
        runtime::now() - started < Duration::from_secs(1),
        "not retried"
    );
}

async fn assert_warm_up_fails_fast(url: String, what: &str) {
    let db = PgDatabase::new(&PgSettings {
        dsn: Secret::new(url.into_bytes()),
        password_file: None,
        password: None,
        ca_file: None,
        pool_size: 2,
        connect_timeout: Duration::from_millis(300),
    })
    .unwrap();
    let config = DbClientConfig {
        query_timeout: Duration::from_millis(500),
        warmup_timeout: Duration::from_millis(1500),
        ..client_config()
    };
    let started = runtime::now();
    let error = DbClient::connect_and_warm(db, config, ChaCha8Rng::seed_from_u64(3))
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: warm-up must fail"));
    let elapsed = runtime::now() - started;
    assert!(
        elapsed < Duration::from_millis(2500),
        "{what}: took {elapsed:?}"
    );
    assert!(matches!(error, DbError::Warmup { .. }), "{what}: {error}");
    let message = error.to_string();
    assert!(
        message.contains("unreachable at start"),
        "{what}: {message}"
    );
    eprintln!("{what}: {message}");
}

#[tokio::test]
async fn warm_up_fails_clearly_and_in_bounded_time_when_unreachable() {
    // Refused: a port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    assert_warm_up_fails_fast(
        format!("postgresql://hyperion@{closed_addr}/hyperion?sslmode=disable"),
        "refused",
    )
    .await;
    // Black hole: accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = runtime::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..64 {
            match silent.accept().await {
                Ok((socket, _)) => held.push(socket),
                Err(_) => return,
            }
        }
    });
    assert_warm_up_fails_fast(
        format!("postgresql://hyperion@{silent_addr}/hyperion?sslmode=disable"),
        "silent",
    )
    .await;
    held.abort();
}

/// The whole node against real PostgreSQL: writes go behind to the database, the node's data
/// directory is lost, and a fresh node reads every entry back through the database with its
/// version, then writes above the database's highest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_then_an_empty_node_reads_everything_back() {
    use hyperion::client::Client;
    use hyperion::proto::CacheStatus;
    use hyperion::server::Server;

    let Some(url) = database_url("write_behind_then_an_empty_node_reads_everything_back") else {
        return;
    };
    let data_dir = std::env::temp_dir().join(format!("hyperion-pg-node-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut config = hyperion::config::Config::development();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.ops.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    config.data_dir = data_dir.clone();
    config.database_dsn = Some(Secret::new(url.into_bytes()));
    config.database.password_file = env_path("HYPERION_TEST_DATABASE_PASSWORD_FILE");
    let keys: Vec<String> = (0..50)
        .map(|i| format!("{}-k{i}", prefix("node")))
        .collect();

    async fn start(
        config: &hyperion::config::Config,
    ) -> (
        Client,
        tokio::sync::oneshot::Sender<()>,
        hyperion::replica::Replica,
        tokio::task::JoinHandle<()>,
    ) {
        let server = Server::bind(config, hyperion::runtime::NodeClock::system())
            .await
            .expect("node starts with its database");
        let addr = server.local_addr();
        let replica = server.replica();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = runtime::spawn(async move {
            server
                .serve(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serves");
        });
        let client = Client::new(&addr.to_string()).unwrap();
        // A single node elects itself (then learns the database's version floor; the client
        // retries writes refused meanwhile).
        for _ in 0..400 {
            if replica.status().role == Some(hyperion_raft::Role::Leader) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        (client, stop, replica, served)
    }

    let (client, stop, replica, served) = start(&config).await;
    let mut versions = BTreeMap::new();
    for key in &keys {
        let written = client
            .set(key.as_bytes(), key.as_bytes(), 0, 0)
            .await
            .expect("write");
        versions.insert(key.clone(), written.version);
    }
    client.delete(keys[0].as_bytes(), 0).await.expect("delete");
    for _ in 0..400 {
        if replica.write_behind_backlog().0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        replica.write_behind_backlog().0,
        0,
        "everything written behind"
    );
    let record = replica.record().expect("a system of record");
    assert_eq!(
        record.breaker_state(),
        hyperion::resilience::BreakerState::Closed
    );
    assert!(record.metrics().rows_written >= keys.len() as u64);
    let _ = stop.send(());
    served.await.unwrap();

    // The node's disk is lost; a new node with an empty data directory starts.
    std::fs::remove_dir_all(&data_dir).unwrap();
    let (client, stop, _replica, served) = start(&config).await;
    let deleted = client.get(keys[0].as_bytes(), false).await.unwrap();
    assert_eq!(
        deleted.status,
        CacheStatus::Miss as i32,
        "the delete was written behind too"
    );
    for key in &keys[1..] {
        let read = client.get(key.as_bytes(), false).await.unwrap();
        assert_eq!(read.status, CacheStatus::Hit as i32, "{key} read through");
        assert_eq!(read.value, key.as_bytes());
        assert_eq!(read.version, versions[key], "{key} keeps its version");
    }
    let highest = versions.values().copied().max().unwrap();
    let newer = client
        .set(keys[1].as_bytes(), b"newer", 0, 0)
        .await
        .unwrap();
    assert!(
        newer.version > highest,
        "versions never regress: {} <= {highest}",
        newer.version
    );
    let _ = stop.send(());
    served.await.unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// The 2026-12-01 repro, as a user ran it against a real PostgreSQL: a key's cached copy expires,
/// another session locks the table so a miss's load waits, the Get gives up after its 100 ms, the
/// lock goes, the key is deleted (acknowledged and written behind), and the next Get must be a
/// MISS. Before the fix the next miss joined the abandoned load, which had read the row before the
/// delete, and answered HIT with the deleted value (5 keys out of 5). The pre-fix behaviour is
/// replayed first (`join_stale_loads`) to show that this test finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_load_never_answers_a_later_miss() {
    let Some(url) = database_url("an_abandoned_load_never_answers_a_later_miss") else {
        return;
    };
    let resurrected = abandoned_load_repro(&url, true).await;
    eprintln!("pre-fix replay: {resurrected} of 5 deleted keys answered HIT");
    assert!(
        resurrected > 0,
        "the pre-fix replay must resurrect a deleted key, or this test finds nothing"
    );
    let resurrected = abandoned_load_repro(&url, false).await;
    assert_eq!(
        resurrected, 0,
        "a deleted key was answered from an abandoned load"
    );
}

/// Runs the repro over 5 keys on a fresh node in a schema of its own (the table lock must not
/// stall other tests); returns how many deleted keys a later Get answered as HIT.
async fn abandoned_load_repro(url: &str, join_stale_loads: bool) -> usize {
    use hyperion::client::Client;
    use hyperion::proto::CacheStatus;
    use hyperion::server::Server;

    let schema = format!(
        "hyperion_repro_{}_{:x}",
        std::process::id(),
        runtime::entropy_seed() & 0xffff_ffff
    );
    let password = std::fs::read_to_string(
        env_path("HYPERION_TEST_DATABASE_PASSWORD_FILE").expect("password file"),
    )
    .expect("password")
    .trim_end()
    .to_string();
    let mut session_config: tokio_postgres::Config = url.parse().expect("url");
    session_config.password(password.as_bytes());
    let (locker, connection) = session_config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("a second session");
    runtime::spawn(connection);
    locker
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");

    let data_dir = std::env::temp_dir().join(format!("hyperion-pg-repro-{schema}"));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut config = hyperion::config::Config::development();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.ops.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    config.data_dir = data_dir.clone();
    let separator = if url.contains('?') { '&' } else { '?' };
    let node_url = format!("{url}{separator}options=-c%20search_path%3D{schema}");
    config.database_dsn = Some(Secret::new(node_url.into_bytes()));
    config.database.password_file = env_path("HYPERION_TEST_DATABASE_PASSWORD_FILE");
    config.stale_grace_ms = 50;
    config.faults.join_stale_loads = join_stale_loads;
    let server = Server::bind(&config, hyperion::runtime::NodeClock::system())
        .await
        .expect("node starts with its database");
    let addr = server.local_addr();
    let replica = server.replica();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = runtime::spawn(async move {
        server
            .serve(async move {
                let _ = stopped.await;
            })
            .await
            .expect("serves");
    });
    let client = Client::new(&addr.to_string()).unwrap();
    let once = Client::new(&addr.to_string())
        .unwrap()
        .with_retry(RetryPolicy {
            max_attempts: 1,
            ..hyperion::client::default_retry_policy()
        });
    for _ in 0..400 {
        if replica.status().role == Some(hyperion_raft::Role::Leader)
            && replica.status().applied_index >= 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let keys: Vec<String> = (0..5).map(|i| format!("repro-k{i}")).collect();
    let wait_until = |what: &'static str, done: Box<dyn Fn() -> bool + Send>| async move {
        for _ in 0..400 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting until {what}");
    };

    // 1. Set with a 300 ms TTL: written behind, then the cached copies expire and are reaped.
    for key in &keys {
        client
            .set(key.as_bytes(), b"the value", 300, 0)
            .await
            .expect("set");
    }
    let r = replica.clone();
    wait_until(
        "written behind and reaped",
        Box::new(move || r.write_behind_backlog().0 == 0 && r.stats().entries == 0),
    )
    .await;

    // 2. Another session locks the table, so a miss's load waits.
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {schema}.hyperion_entries IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .expect("lock");
    let locked_at = runtime::now();

    // 3. Each Get misses, starts the load and gives up after its 100 ms.
    for key in &keys {
        let error = once
            .get(key.as_bytes(), false)
            .await
            .expect_err("the load waits on the lock");
        assert_eq!(error.code(), tonic::Code::DeadlineExceeded, "{error}");
    }

    // 4. The lock goes after about a second; each Delete is acknowledged and written behind.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(locked_at.elapsed())).await;
    locker.batch_execute("COMMIT").await.expect("unlock");
    for key in &keys {
        client.delete(key.as_bytes(), 0).await.expect("delete");
    }
    let r = replica.clone();
    wait_until(
        "the deletes are written behind",
        Box::new(move || r.write_behind_backlog().0 == 0),
    )
    .await;

    // 5. A Get of each deleted key.
    let mut resurrected = 0;
    for key in &keys {
        let read = client.get(key.as_bytes(), false).await.expect("get");
        if read.status == CacheStatus::Hit as i32 {
            resurrected += 1;
        }
    }
    let _ = stop.send(());
    served.await.unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
    locker
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop schema");
    resurrected
}
