//! The environment parser: the product's variables, the feature-flag file and the secret files,
//! each problem reported as one [`ConfigError`] naming the variable. Every bound and cross-field
//! rule is [`Config::validate`]'s; the parser checks what a value must be to be read at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::*;
use crate::secret::{SecretName, SecretSource, Secrets};

impl Config {
    /// Reads the process environment (secrets from files only; see [`Config::load_process_env`]).
    pub fn from_process_env() -> Result<Config, ConfigError> {
        Config::from_env(&process_env()?)
    }

    /// Reads the process environment and fetches the secrets from their source (files, or
    /// Vault with `HYPERION_SECRETS=vault`).
    pub async fn load_process_env() -> Result<Config, ConfigError> {
        Config::load(&process_env()?).await
    }

    /// Builds a configuration from variables, fetching the secrets from their source.
    pub async fn load(env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let source = security::secret_source(&Vars(env))?;
        let secrets = source.fetch_all().await.map_err(secret_error)?;
        Config::from_env_and_secrets(env, source, secrets)
    }

    /// Builds a configuration from variables (name → value), reading secrets from their files.
    /// Empty values count as unset. Secrets from Vault need [`Config::load`].
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let source = security::secret_source(&Vars(env))?;
        if !source.is_files() {
            return Err(ConfigError::new(
                "HYPERION_SECRETS",
                "vault secrets are fetched over the network at start (Config::load)",
            ));
        }
        let secrets = source.read_files().map_err(secret_error)?;
        Config::from_env_and_secrets(env, source, secrets)
    }

    /// Builds a configuration from variables and the secrets fetched from `source`.
    pub fn from_env_and_secrets(
        env: &BTreeMap<String, String>,
        source: SecretSource,
        secrets: Secrets,
    ) -> Result<Config, ConfigError> {
        let vars = Vars(env);
        let listen_addr: SocketAddr = vars
            .parse("HYPERION_LISTEN_ADDR", "an address like 127.0.0.1:7000")?
            .unwrap_or_else(|| {
                DEFAULT_LISTEN_ADDR
                    .parse()
                    .expect("the default listen address parses")
            });
        let node_id = vars.get("HYPERION_NODE_ID").unwrap_or("node1").to_string();
        if !node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || node_id.len() > 64
        {
            return Err(ConfigError::new(
                "HYPERION_NODE_ID",
                format!("`{node_id}` must be 1-64 characters of [A-Za-z0-9._-]"),
            ));
        }
        let data_dir = vars
            .get("HYPERION_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));

        let cluster_nodes = match vars.get("HYPERION_CLUSTER_NODES") {
            None => vec![ClusterNode {
                name: node_id.clone(),
                addr: listen_addr.to_string(),
            }],
            Some(list) => parse_cluster_nodes(list)?,
        };
        let node_index = match cluster_nodes.iter().position(|n| n.name == node_id) {
            Some(index) => index,
            None if cluster_nodes.len() == 1 && vars.get("HYPERION_NODE_ID").is_none() => 0,
            None => {
                let names: Vec<&str> = cluster_nodes.iter().map(|n| n.name.as_str()).collect();
                return Err(ConfigError::new(
                    "HYPERION_NODE_ID",
                    format!(
                        "`{node_id}` is not in HYPERION_CLUSTER_NODES (names: {})",
                        names.join(", ")
                    ),
                ));
            }
        };
        let node_id = cluster_nodes[node_index].name.clone();
        let replication_factor = vars
            .positive("HYPERION_REPLICATION_FACTOR", 1, CLUSTER_NODES_MAX as u64)?
            .map(|n| n as usize)
            .unwrap_or(cluster_nodes.len());
        if replication_factor != cluster_nodes.len() {
            return Err(ConfigError::new(
                "HYPERION_REPLICATION_FACTOR",
                format!(
                    "must equal the number of voters in HYPERION_CLUSTER_NODES ({}), got {replication_factor}",
                    cluster_nodes.len()
                ),
            ));
        }

        let database_dsn = vars.get("COCKROACH_DSN").map(|dsn| dsn.to_string());
        if let Some(dsn) = &database_dsn {
            if !(dsn.starts_with("postgresql://") || dsn.starts_with("postgres://")) {
                return Err(ConfigError::new(
                    "COCKROACH_DSN",
                    "must be a postgresql:// URL".to_string(),
                ));
            }
        }

        let cache_size_mb = vars
            .positive("HYPERION_CACHE_SIZE_MB", 1, CACHE_SIZE_MB_MAX)?
            .unwrap_or(DEFAULT_CACHE_SIZE_MB);
        let eviction_batch_size = vars
            .positive(
                "HYPERION_EVICTION_BATCH_SIZE",
                1,
                EVICTION_BATCH_SIZE_MAX as u64,
            )?
            .map(|n| n as usize)
            .unwrap_or(DEFAULT_EVICTION_BATCH_SIZE);

        let heartbeat_ms = vars
            .positive("HYPERION_RAFT_HEARTBEAT_MS", 1, TIMING_MS_MAX)?
            .unwrap_or(DEFAULT_HEARTBEAT_MS);
        let election_timeout_ms = vars
            .positive("HYPERION_RAFT_ELECTION_TIMEOUT_MS", 1, TIMING_MS_MAX)?
            .unwrap_or_else(|| hyperion_raft::default_election_timeout_ms(heartbeat_ms));
        if election_timeout_ms < 2 * heartbeat_ms {
            return Err(ConfigError::new(
                "HYPERION_RAFT_ELECTION_TIMEOUT_MS",
                format!(
                    "{election_timeout_ms} ms is less than 2x the heartbeat ({heartbeat_ms} ms); \
                     the product default is 10x"
                ),
            ));
        }
        let lease_duration_ms = vars
            .positive("HYPERION_RAFT_LEASE_MS", 1, TIMING_MS_MAX)?
            .unwrap_or_else(|| hyperion_raft::default_lease_ms(election_timeout_ms));
        if lease_duration_ms >= election_timeout_ms {
            return Err(ConfigError::new(
                "HYPERION_RAFT_LEASE_MS",
                format!(
                    "{lease_duration_ms} ms must be below the election timeout \
                     ({election_timeout_ms} ms), or two leaders could both hold a lease"
                ),
            ));
        }

        let snapshot_entries = vars
            .positive(
                "HYPERION_RAFT_SNAPSHOT_ENTRIES",
                SNAPSHOT_ENTRIES_MIN,
                SNAPSHOT_ENTRIES_MAX,
            )?
            .unwrap_or(DEFAULT_SNAPSHOT_ENTRIES);
        let log_memory_mb = vars
            .positive(
                "HYPERION_RAFT_LOG_MEMORY_MB",
                LOG_MEMORY_MB_MIN,
                LOG_MEMORY_MB_MAX,
            )?
            .unwrap_or(DEFAULT_LOG_MEMORY_MB);
        let raft = RaftTiming {
            heartbeat_ms,
            election_timeout_ms,
            lease_duration_ms,
            snapshot_entries,
            log_memory_mb,
        };
        if let Err(error) = raft.core_config().validate() {
            let variable = match error.field {
                "heartbeat_ms" | "tick_interval_ms" => "HYPERION_RAFT_HEARTBEAT_MS",
                "election_timeout_ms" => "HYPERION_RAFT_ELECTION_TIMEOUT_MS",
                _ => "HYPERION_RAFT_LEASE_MS",
            };
            return Err(ConfigError::new(variable, error.reason));
        }
        let wal_sync = match vars
            .get("HYPERION_WAL_SYNC")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("everysec") => SyncPolicy::EverySec,
            Some("always") => SyncPolicy::Always,
            Some(other) => {
                return Err(ConfigError::new(
                    "HYPERION_WAL_SYNC",
                    format!("expected everysec or always, got `{other}`"),
                ))
            }
        };

        let log_level = vars.get("LOG_LEVEL").unwrap_or("info").to_string();
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(ConfigError::new(
                "LOG_LEVEL",
                format!(
                    "`{log_level}` is not a valid filter (e.g. info, debug, hyperion=debug): {e}"
                ),
            ));
        }
        let otlp_endpoint = vars.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(str::to_string);
        if let Some(endpoint) = &otlp_endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(ConfigError::new(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("`{endpoint}` must be an http:// or https:// URL"),
                ));
            }
        }
        let otlp_ca_pem = match (&otlp_endpoint, vars.get("OTEL_EXPORTER_OTLP_CERTIFICATE")) {
            (_, Some(path)) => Some(
                read_bounded(Path::new(path), OTLP_CA_FILE_BYTES_MAX).map_err(|e| {
                    ConfigError::new(
                        "OTEL_EXPORTER_OTLP_CERTIFICATE",
                        format!("cannot read `{path}`: {e}"),
                    )
                })?,
            ),
            (Some(endpoint), None) if endpoint.starts_with("https://") => {
                return Err(ConfigError::new(
                    "OTEL_EXPORTER_OTLP_CERTIFICATE",
                    "an https:// OTEL_EXPORTER_OTLP_ENDPOINT needs the PEM file of the CA \
                     certificates the collector's certificate chains to"
                        .to_string(),
                ));
            }
            (_, None) => None,
        };

        let ops = OpsConfig::from_vars(&vars)?;

        let flags = match vars.get("HYPERION_FEATURE_FLAGS") {
            None => FeatureFlags::default(),
            Some(path) => load_flags(Path::new(path))?,
        };

        let hmac_key = secrets.get(SecretName::HmacKey);
        let dev_mode = vars
            .boolean("HYPERION_DEV_MODE")?
            .unwrap_or(hmac_key.is_none());
        let (shadow_addr, shadow_ca_pem) = shadow_settings(&vars, dev_mode)?;
        let (hmac_key, hmac_key_source) = match hmac_key {
            Some(key) => (check_hmac_key(key, &source)?, hmac_key_source(&source)),
            None if dev_mode => (
                Secret::new(DEVELOPMENT_HMAC_KEY.to_vec()),
                HmacKeySource::Development,
            ),
            None if source.is_files() => {
                return Err(ConfigError::new(
                    "HYPERION_HMAC_KEY_FILE",
                    "is required outside development mode (HYPERION_DEV_MODE=false)".to_string(),
                ))
            }
            None => {
                return Err(ConfigError::new(
                    "HYPERION_SECRETS=vault (hmac-key)",
                    "the integrity key is required outside development mode \
                     (HYPERION_DEV_MODE=false), and Vault has none at this path"
                        .to_string(),
                ))
            }
        };
        let stagger_ttl = vars.boolean("HYPERION_TTL_STAGGER")?.unwrap_or(false);
        let join_existing_cluster = vars
            .boolean("HYPERION_JOIN_EXISTING_CLUSTER")?
            .unwrap_or(false);
        let stale_grace_ms = match vars.get("HYPERION_STALE_GRACE_MS") {
            Some("0") => 0,
            _ => vars
                .positive("HYPERION_STALE_GRACE_MS", 1, STALE_GRACE_MS_MAX)?
                .unwrap_or(DEFAULT_STALE_GRACE_MS),
        };
        let tracking_max_keys = vars
            .positive("HYPERION_TRACKING_MAX_KEYS", 1, TRACKING_MAX_KEYS_MAX)?
            .unwrap_or(DEFAULT_TRACKING_MAX_KEYS);
        let disk_reserve_mb = vars
            .positive("HYPERION_DISK_RESERVE_MB", 0, DISK_RESERVE_MB_MAX)?
            .unwrap_or(DEFAULT_DISK_RESERVE_MB);
        let watch_queue_events = vars
            .positive("HYPERION_WATCH_QUEUE_EVENTS", 1, WATCH_QUEUE_EVENTS_MAX)?
            .unwrap_or(crate::watch::QUEUE_EVENTS_DEFAULT as u64);
        let watch_history_events = vars
            .positive("HYPERION_WATCH_HISTORY_EVENTS", 0, WATCH_HISTORY_EVENTS_MAX)?
            .unwrap_or(crate::watch::HISTORY_EVENTS_DEFAULT as u64);

        let mut database = DatabaseConfig::from_vars(&vars)?;
        database.password = secrets.get(SecretName::DbPassword).cloned();
        let security = SecurityConfig::from_vars(&vars, &secrets)?;

        let config = Config {
            node_id,
            listen_addr,
            data_dir,
            cluster_nodes,
            node_index,
            replication_factor,
            database_dsn: database_dsn.map(|dsn| Secret::new(dsn.into_bytes())),
            cache_size_mb,
            eviction_batch_size,
            raft,
            wal_sync,
            log_level,
            otlp_endpoint,
            otlp_ca_pem,
            shadow_addr,
            shadow_ca_pem,
            ops,
            flags,
            hmac_key,
            hmac_key_source,
            dev_mode,
            stagger_ttl,
            stale_grace_ms,
            tracking_max_keys,
            disk_reserve_mb,
            watch_queue_events,
            watch_history_events,
            database,
            join_existing_cluster,
            secrets: source,
            security,
            faults: FaultInjection::default(),
        };
        config.validate()?;
        Ok(config)
    }
}

/// The configuration variables of the process environment.
fn process_env() -> Result<BTreeMap<String, String>, ConfigError> {
    let mut env = BTreeMap::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().map(str::to_owned) else {
            continue;
        };
        if !is_config_variable(&name) {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| ConfigError::new(&name, "value is not valid UTF-8".to_string()))?;
        env.insert(name, value);
    }
    Ok(env)
}

/// True for the variables [`Config::from_process_env`] reads.
fn is_config_variable(name: &str) -> bool {
    name.starts_with("HYPERION_")
        || matches!(
            name,
            "COCKROACH_DSN"
                | "LOG_LEVEL"
                | "LOG_FORMAT"
                | "OTEL_EXPORTER_OTLP_ENDPOINT"
                | "OTEL_EXPORTER_OTLP_CERTIFICATE"
                | "VAULT_ADDR"
                | "VAULT_TOKEN_FILE"
                | "VAULT_TOKEN"
                | "VAULT_CACERT"
        )
}

fn secret_error(error: crate::secret::SecretError) -> ConfigError {
    ConfigError::new(error.origin, error.problem)
}

/// Typed access to the variables, with errors naming the variable.
pub(super) struct Vars<'a>(&'a BTreeMap<String, String>);

impl Vars<'_> {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    pub(super) fn parse<T: std::str::FromStr>(
        &self,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => raw
                .parse()
                .map(Some)
                .map_err(|_| ConfigError::new(name, format!("expected {expected}, got `{raw}`"))),
        }
    }

    pub(super) fn positive(
        &self,
        name: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, ConfigError> {
        let expected = format!("an integer in {min}..={max}");
        let value: Option<u64> = self.parse(name, &expected)?;
        match value {
            Some(v) if !(min..=max).contains(&v) => Err(ConfigError::new(
                name,
                format!("expected {expected}, got {v}"),
            )),
            other => Ok(other),
        }
    }

    pub(super) fn boolean(&self, name: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(None),
            Some("1" | "true" | "yes" | "on") => Ok(Some(true)),
            Some("0" | "false" | "no" | "off") => Ok(Some(false)),
            Some(other) => Err(ConfigError::new(
                name,
                format!("expected true or false, got `{other}`"),
            )),
        }
    }
}

fn parse_cluster_nodes(list: &str) -> Result<Vec<ClusterNode>, ConfigError> {
    const NAME: &str = "HYPERION_CLUSTER_NODES";
    let entries: Vec<&str> = list.split(',').map(str::trim).collect();
    if entries.len() > CLUSTER_NODES_MAX {
        return Err(ConfigError::new(
            NAME,
            format!("at most {CLUSTER_NODES_MAX} nodes, got {}", entries.len()),
        ));
    }
    let mut nodes = Vec::with_capacity(entries.len());
    for entry in entries {
        let (name, addr) = match entry.split_once('=') {
            Some((name, addr)) => (name.trim(), addr.trim()),
            None => (
                entry.rsplit_once(':').map_or(entry, |(host, _)| host),
                entry,
            ),
        };
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Err(ConfigError::new(
                NAME,
                format!("`{entry}` must be host:port or name=host:port (e.g. node1:7000)"),
            ));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(ConfigError::new(
                NAME,
                format!("`{entry}` must be host:port with a port in 1..=65535"),
            ));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(ConfigError::new(
                NAME,
                format!("`{entry}`: node name `{name}` must be [A-Za-z0-9._-]"),
            ));
        }
        nodes.push(ClusterNode {
            name: name.to_string(),
            addr: addr.to_string(),
        });
    }
    for (i, node) in nodes.iter().enumerate() {
        if nodes[..i].iter().any(|other| other.name == node.name) {
            return Err(ConfigError::new(
                NAME,
                format!(
                    "names node `{}` twice; when hosts repeat, name entries as name=host:port",
                    node.name
                ),
            ));
        }
        if nodes[..i].iter().any(|other| other.addr == node.addr) {
            return Err(ConfigError::new(
                NAME,
                format!("lists address {} twice", node.addr),
            ));
        }
    }
    Ok(nodes)
}

/// Largest CA bundle read from `OTEL_EXPORTER_OTLP_CERTIFICATE`.
const OTLP_CA_FILE_BYTES_MAX: u64 = 1 << 20;

/// `HYPERION_SHADOW_ADDR` and `HYPERION_SHADOW_CA_FILE`: every address host:port (at most the
/// largest cluster); plaintext only to loopback in development mode.
fn shadow_settings(
    vars: &Vars<'_>,
    dev_mode: bool,
) -> Result<(Option<String>, Option<Vec<u8>>), ConfigError> {
    const NAME: &str = "HYPERION_SHADOW_ADDR";
    let ca_pem = match vars.get("HYPERION_SHADOW_CA_FILE") {
        Some(path) => Some(
            read_bounded(Path::new(path), OTLP_CA_FILE_BYTES_MAX).map_err(|e| {
                ConfigError::new(
                    "HYPERION_SHADOW_CA_FILE",
                    format!("cannot read `{path}`: {e}"),
                )
            })?,
        ),
        None => None,
    };
    let Some(list) = vars.get(NAME).map(str::trim).filter(|l| !l.is_empty()) else {
        return Ok((None, ca_pem));
    };
    let addrs: Vec<&str> = list.split(',').map(str::trim).collect();
    if addrs.len() > CLUSTER_NODES_MAX {
        return Err(ConfigError::new(
            NAME,
            format!("at most {CLUSTER_NODES_MAX} addresses, got {}", addrs.len()),
        ));
    }
    for addr in &addrs {
        let bare = addr
            .strip_prefix("https://")
            .or_else(|| addr.strip_prefix("http://"))
            .unwrap_or(addr);
        let Some((host, port)) = bare.rsplit_once(':') else {
            return Err(ConfigError::new(
                NAME,
                format!("`{addr}` must be host:port"),
            ));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(ConfigError::new(
                NAME,
                format!("`{addr}` must be host:port with a port in 1..=65535"),
            ));
        }
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if ca_pem.is_none() && !(dev_mode && loopback) {
            return Err(ConfigError::new(
                "HYPERION_SHADOW_CA_FILE",
                format!(
                    "mirroring to `{addr}` needs TLS: set the CA file of the shadow cluster                      (plaintext is for development mode on loopback only)"
                ),
            ));
        }
    }
    Ok((Some(list.to_string()), ca_pem))
}

pub fn load_flags(path: &Path) -> Result<FeatureFlags, ConfigError> {
    let origin = format!("HYPERION_FEATURE_FLAGS ({})", path.display());
    let text = read_bounded(path, FLAGS_FILE_BYTES_MAX)
        .map_err(|e| ConfigError::new(&origin, format!("cannot read: {e}")))?;
    let text = String::from_utf8(text)
        .map_err(|_| ConfigError::new(&origin, "is not UTF-8 JSON".to_string()))?;
    FeatureFlags::from_json(&text, &origin)
}

fn hmac_key_source(source: &SecretSource) -> HmacKeySource {
    match source.file(SecretName::HmacKey) {
        Some(path) => HmacKeySource::File(path.to_path_buf()),
        None => HmacKeySource::Vault,
    }
}

fn check_hmac_key(key: &Secret, source: &SecretSource) -> Result<Secret, ConfigError> {
    let origin = match source.file(SecretName::HmacKey) {
        Some(path) => format!("HYPERION_HMAC_KEY_FILE ({})", path.display()),
        None => "HYPERION_SECRETS=vault (hmac-key)".to_string(),
    };
    let len = key.expose().len();
    if !(HMAC_KEY_BYTES_MIN..=HMAC_KEY_BYTES_MAX).contains(&len) {
        return Err(ConfigError::new(
            &origin,
            format!("key must be {HMAC_KEY_BYTES_MIN}-{HMAC_KEY_BYTES_MAX} bytes, got {len}"),
        ));
    }
    Ok(key.clone())
}

/// Reads at most `max` bytes of a file: configuration files are small, and a wrong path pointing
/// at a huge file must not exhaust memory.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}
