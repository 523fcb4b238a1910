//! The system-of-record client's settings (`HYPERION_DB_*`, used when `COCKROACH_DSN` is set).

use std::path::PathBuf;

use super::{ConfigError, Secret, Vars};

/// Default database pool size: connections per node, also the cap on its concurrent queries.
pub const DEFAULT_DB_POOL_SIZE: usize = 16;
/// Largest pool per node: every node's pool counts against the database's connection limit.
pub const DB_POOL_SIZE_MAX: u64 = 1024;
/// Default bound on one database call (waiting for a connection plus the query).
pub const DEFAULT_DB_QUERY_TIMEOUT_MS: u64 = 2_000;
/// Default bound on opening one connection (TCP, TLS, authentication).
pub const DEFAULT_DB_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default bound on the start-up warm-up (prove a connection, migrate the schema).
pub const DEFAULT_DB_WARMUP_TIMEOUT_MS: u64 = 10_000;
/// Upper bound for the database timeouts: ten minutes.
const DB_TIMEOUT_MS_MAX: u64 = 600_000;

/// The system-of-record client's settings (used when `COCKROACH_DSN` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `HYPERION_DB_POOL_SIZE`: connections per node and cap on concurrent queries.
    pub pool_size: usize,
    /// `HYPERION_DB_PASSWORD_FILE`: the password, from a file (never from an env value).
    pub password_file: Option<PathBuf>,
    /// The password as fetched from the secret source (the file above, or Vault's
    /// `db-password`).
    pub password: Option<Secret>,
    /// `HYPERION_DB_CA_FILE`: PEM CA certificates for `sslmode=verify-full`.
    pub ca_file: Option<PathBuf>,
    /// `HYPERION_DB_QUERY_TIMEOUT_MS`: bound on one call.
    pub query_timeout_ms: u64,
    /// `HYPERION_DB_CONNECT_TIMEOUT_MS`: bound on opening one connection.
    pub connect_timeout_ms: u64,
    /// `HYPERION_DB_WARMUP_TIMEOUT_MS`: bound on the start-up warm-up.
    pub warmup_timeout_ms: u64,
    /// `HYPERION_DB_START_MODE`: `require` (default: exit if the database is unreachable at
    /// start) or `degraded` (serve cache-only, report it in health, keep trying).
    pub start_mode: crate::db::DbStartMode,
    /// `HYPERION_DB_NEGATIVE_CACHE_MS`: how long the leader remembers that the database has no
    /// row for a key, so repeated misses do not query it again (0 = never remember).
    pub negative_cache_ms: u64,
    /// `HYPERION_DB_BACKLOG_MB`: most unwritten mutations (keys + values) the cluster holds for
    /// the database; beyond it writes are refused until the database catches up.
    pub backlog_mb: u64,
}

/// Default negative-cache lifetime.
pub const DEFAULT_DB_NEGATIVE_CACHE_MS: u64 = 1_000;
/// Default write-behind backlog bound.
pub const DEFAULT_DB_BACKLOG_MB: u64 = 256;

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            pool_size: DEFAULT_DB_POOL_SIZE,
            password_file: None,
            password: None,
            ca_file: None,
            query_timeout_ms: DEFAULT_DB_QUERY_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_DB_CONNECT_TIMEOUT_MS,
            warmup_timeout_ms: DEFAULT_DB_WARMUP_TIMEOUT_MS,
            start_mode: crate::db::DbStartMode::Require,
            negative_cache_ms: DEFAULT_DB_NEGATIVE_CACHE_MS,
            backlog_mb: DEFAULT_DB_BACKLOG_MB,
        }
    }
}

impl DatabaseConfig {
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<DatabaseConfig, ConfigError> {
        let defaults = DatabaseConfig::default();
        let pool_size = vars
            .positive("HYPERION_DB_POOL_SIZE", 1, DB_POOL_SIZE_MAX)?
            .map_or(defaults.pool_size, |n| n as usize);
        let readable_file = |name: &str| -> Result<Option<PathBuf>, ConfigError> {
            let Some(path) = vars.get(name).map(PathBuf::from) else {
                return Ok(None);
            };
            std::fs::File::open(&path).map_err(|e| {
                ConfigError::new(name, format!("cannot read {}: {e}", path.display()))
            })?;
            Ok(Some(path))
        };
        let password_file = readable_file("HYPERION_DB_PASSWORD_FILE")?;
        let ca_file = readable_file("HYPERION_DB_CA_FILE")?;
        let query_timeout_ms = vars
            .positive("HYPERION_DB_QUERY_TIMEOUT_MS", 1, DB_TIMEOUT_MS_MAX)?
            .unwrap_or(defaults.query_timeout_ms);
        let connect_timeout_ms = vars
            .positive("HYPERION_DB_CONNECT_TIMEOUT_MS", 1, DB_TIMEOUT_MS_MAX)?
            .unwrap_or(defaults.connect_timeout_ms);
        let warmup_timeout_ms = vars
            .positive("HYPERION_DB_WARMUP_TIMEOUT_MS", 1, DB_TIMEOUT_MS_MAX)?
            .unwrap_or(defaults.warmup_timeout_ms.max(query_timeout_ms));
        if warmup_timeout_ms < query_timeout_ms {
            return Err(ConfigError::new(
                "HYPERION_DB_WARMUP_TIMEOUT_MS",
                format!(
                    "{warmup_timeout_ms} ms is shorter than one query \
                     (HYPERION_DB_QUERY_TIMEOUT_MS = {query_timeout_ms} ms)"
                ),
            ));
        }
        let start_mode = match vars
            .get("HYPERION_DB_START_MODE")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("require") => crate::db::DbStartMode::Require,
            Some("degraded") => crate::db::DbStartMode::Degraded,
            Some(other) => {
                return Err(ConfigError::new(
                    "HYPERION_DB_START_MODE",
                    format!("expected require or degraded, got `{other}`"),
                ))
            }
        };
        let negative_cache_ms = match vars.get("HYPERION_DB_NEGATIVE_CACHE_MS") {
            Some("0") => 0,
            _ => vars
                .positive("HYPERION_DB_NEGATIVE_CACHE_MS", 1, DB_TIMEOUT_MS_MAX)?
                .unwrap_or(defaults.negative_cache_ms),
        };
        let backlog_mb = vars
            .positive("HYPERION_DB_BACKLOG_MB", 1, 1 << 20)?
            .unwrap_or(defaults.backlog_mb);
        Ok(DatabaseConfig {
            pool_size,
            password_file,
            password: None,
            ca_file,
            query_timeout_ms,
            connect_timeout_ms,
            warmup_timeout_ms,
            start_mode,
            negative_cache_ms,
            backlog_mb,
        })
    }

    /// Checks the bounds and the rules across the database settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=DB_POOL_SIZE_MAX).contains(&(self.pool_size as u64)) {
            return Err(ConfigError::new(
                "HYPERION_DB_POOL_SIZE",
                format!(
                    "expected an integer in 1..={DB_POOL_SIZE_MAX}, got {}",
                    self.pool_size
                ),
            ));
        }
        for (variable, value) in [
            ("HYPERION_DB_QUERY_TIMEOUT_MS", self.query_timeout_ms),
            ("HYPERION_DB_CONNECT_TIMEOUT_MS", self.connect_timeout_ms),
            ("HYPERION_DB_WARMUP_TIMEOUT_MS", self.warmup_timeout_ms),
        ] {
            if !(1..=DB_TIMEOUT_MS_MAX).contains(&value) {
                return Err(ConfigError::new(
                    variable,
                    format!("expected an integer in 1..={DB_TIMEOUT_MS_MAX}, got {value}"),
                ));
            }
        }
        if self.warmup_timeout_ms < self.query_timeout_ms {
            return Err(ConfigError::new(
                "HYPERION_DB_WARMUP_TIMEOUT_MS",
                format!(
                    "{} ms is shorter than one query (HYPERION_DB_QUERY_TIMEOUT_MS = {} ms)",
                    self.warmup_timeout_ms, self.query_timeout_ms
                ),
            ));
        }
        Ok(())
    }

    /// The client settings these values give (retry and breaker at the product's defaults).
    pub fn client_config(&self) -> crate::db::DbClientConfig {
        crate::db::DbClientConfig {
            max_concurrent_queries: self.pool_size,
            query_timeout: std::time::Duration::from_millis(self.query_timeout_ms),
            warmup_timeout: std::time::Duration::from_millis(self.warmup_timeout_ms),
            ..crate::db::DbClientConfig::default()
        }
    }

    /// How to reach the database at `dsn` (`COCKROACH_DSN`).
    pub fn pg_settings(&self, dsn: &Secret) -> crate::db::PgSettings {
        crate::db::PgSettings {
            dsn: dsn.clone(),
            password_file: self.password_file.clone(),
            password: self.password.clone(),
            ca_file: self.ca_file.clone(),
            pool_size: self.pool_size,
            connect_timeout: std::time::Duration::from_millis(self.connect_timeout_ms),
        }
    }
}
