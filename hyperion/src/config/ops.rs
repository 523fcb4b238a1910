//! The operations surface's settings: rate limits, the admin HTTP port and the log format
//! (`HYPERION_RATE_LIMIT_*`, `HYPERION_ADMIN_ADDR`, `HYPERION_METRICS`, `LOG_FORMAT`).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::env::Vars;
use super::ConfigError;
use crate::limits::{RateLimits, DEFAULT_RATE_LIMITS, RATE_LIMIT_PER_SEC_MAX};

/// The admin HTTP port's default address (the product's runbook: `localhost:9090`).
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9090";

/// How log lines are written to stderr (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The operations settings of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsConfig {
    /// Requests per second per client IP (per API key for admin); 0 = unlimited.
    pub rate_limits: RateLimits,
    /// The admin HTTP address (`HYPERION_ADMIN_ADDR`); `None` with `off`.
    pub admin_addr: Option<SocketAddr>,
    /// Record request metrics (`HYPERION_METRICS`, default true). The gauges read from the node's
    /// state are exported either way; off exists to measure what recording costs.
    pub metrics: bool,
    /// `LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// The feature-flag file (`HYPERION_FEATURE_FLAGS`), reloaded on SIGHUP, on change and by
    /// the admin endpoint.
    pub flags_file: Option<PathBuf>,
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig {
            rate_limits: DEFAULT_RATE_LIMITS,
            admin_addr: Some(
                DEFAULT_ADMIN_ADDR
                    .parse()
                    .unwrap_or_else(|_| unreachable!("a literal address")),
            ),
            metrics: true,
            log_format: LogFormat::Text,
            flags_file: None,
        }
    }
}

impl OpsConfig {
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<OpsConfig, ConfigError> {
        let limit = |name: &str, default: u32| -> Result<u32, ConfigError> {
            match vars.get(name) {
                Some("0") => Ok(0),
                _ => Ok(vars
                    .positive(name, 1, u64::from(RATE_LIMIT_PER_SEC_MAX))?
                    .map_or(default, |v| v as u32)),
            }
        };
        let rate_limits = RateLimits {
            get_per_sec: limit("HYPERION_RATE_LIMIT_GET", DEFAULT_RATE_LIMITS.get_per_sec)?,
            set_per_sec: limit("HYPERION_RATE_LIMIT_SET", DEFAULT_RATE_LIMITS.set_per_sec)?,
            batch_get_per_sec: limit(
                "HYPERION_RATE_LIMIT_BATCH_GET",
                DEFAULT_RATE_LIMITS.batch_get_per_sec,
            )?,
            admin_per_sec: limit(
                "HYPERION_RATE_LIMIT_ADMIN",
                DEFAULT_RATE_LIMITS.admin_per_sec,
            )?,
        };
        let admin_addr = match vars.get("HYPERION_ADMIN_ADDR") {
            Some("off") => None,
            _ => Some(
                vars.parse(
                    "HYPERION_ADMIN_ADDR",
                    "an address like 127.0.0.1:9090, or off",
                )?
                .unwrap_or(
                    OpsConfig::default()
                        .admin_addr
                        .unwrap_or_else(|| unreachable!("the default has an address")),
                ),
            ),
        };
        let metrics = vars.boolean("HYPERION_METRICS")?.unwrap_or(true);
        let log_format = match vars
            .get("LOG_FORMAT")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("expected text or json, got `{other}`"),
                ))
            }
        };
        Ok(OpsConfig {
            rate_limits,
            admin_addr,
            metrics,
            log_format,
            flags_file: vars.get("HYPERION_FEATURE_FLAGS").map(PathBuf::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Config;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rate_limits_default_to_the_product_table_and_zero_is_unlimited() {
        let config = Config::from_env(&env(&[])).unwrap();
        assert_eq!(config.ops.rate_limits, DEFAULT_RATE_LIMITS);
        assert_eq!(
            config.ops.admin_addr,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        let config = Config::from_env(&env(&[
            ("HYPERION_RATE_LIMIT_GET", "0"),
            ("HYPERION_RATE_LIMIT_SET", "50000"),
            ("HYPERION_RATE_LIMIT_BATCH_GET", "7"),
            ("HYPERION_RATE_LIMIT_ADMIN", "3"),
            ("HYPERION_ADMIN_ADDR", "off"),
            ("LOG_FORMAT", "JSON"),
        ]))
        .unwrap();
        assert_eq!(
            config.ops.rate_limits,
            RateLimits {
                get_per_sec: 0,
                set_per_sec: 50_000,
                batch_get_per_sec: 7,
                admin_per_sec: 3,
            }
        );
        assert_eq!(config.ops.admin_addr, None);
        assert_eq!(config.ops.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("HYPERION_RATE_LIMIT_GET", "-1"),
            ("HYPERION_RATE_LIMIT_SET", "lots"),
            ("HYPERION_RATE_LIMIT_ADMIN", "2000000"),
            ("HYPERION_ADMIN_ADDR", "localhost"),
            ("LOG_FORMAT", "xml"),
            ("HYPERION_METRICS", "maybe"),
        ] {
            let error = Config::from_env(&env(&[(name, value)])).unwrap_err();
            assert_eq!(error.variable, name, "{error}");
        }
    }
}
