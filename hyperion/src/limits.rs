//! The product's limits, in one place: request bounds (timeouts, batch and key sizes, the write
//! deadline) and the per-client rate limits (the product's table), enforced by token buckets keyed
//! by client IP and endpoint. Bounds that belong to the engine (key and value sizes) are the
//! store's, re-exported here.
//!
//! Rate limits are implemented in the request handlers rather than as a tower layer, because madsim-tonic ignores
//! layers: the same limits run in simulation and production. Time is passed in (runtime time).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::runtime::Instant;

/// `timeout_ms` of 0 means this (the product's default).
pub const DEFAULT_TIMEOUT_MS: u32 = 100;
/// Largest accepted `timeout_ms`: a minute. Longer waits hold server resources for nothing.
pub const TIMEOUT_MS_MAX: u32 = 60_000;
/// Most keys in one BatchGet (the product's limit; the client library splits larger lists).
pub const BATCH_KEYS_MAX: usize = 100;
/// Most bytes of a key (enforced by the engine too; here so BatchGet can name the bad index).
pub const KEY_BYTES_MAX: usize = hyperion_store::DEFAULT_MAX_KEY_BYTES;
/// How long a write may wait for its entry to commit and apply. Past it the answer is
/// `DEADLINE_EXCEEDED` and the write's outcome is unknown (it may still apply).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The default value size limit (`max_value_size_kb`), from the store: 512 KiB.
pub const DEFAULT_MAX_VALUE_SIZE_KB: u32 = (hyperion_store::DEFAULT_MAX_VALUE_BYTES / 1024) as u32;

/// The endpoint classes that have their own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Get,
    Set,
    BatchGet,
    /// The admin HTTP port, limited per API key rather than per client IP.
    Admin,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Get => "Get",
            Endpoint::Set => "Set",
            Endpoint::BatchGet => "BatchGet",
            Endpoint::Admin => "admin",
        }
    }
}

/// The RPCs of `CacheService`, as metrics and traces name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    Get,
    Set,
    Delete,
    BatchGet,
}

impl Rpc {
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Get => "Get",
            Rpc::Set => "Set",
            Rpc::Delete => "Delete",
            Rpc::BatchGet => "BatchGet",
        }
    }

    /// The gRPC method path, as traces name it (`hyperion.v1.CacheService/Get`).
    pub fn full_name(self) -> &'static str {
        match self {
            Rpc::Get => "hyperion.v1.CacheService/Get",
            Rpc::Set => "hyperion.v1.CacheService/Set",
            Rpc::Delete => "hyperion.v1.CacheService/Delete",
            Rpc::BatchGet => "hyperion.v1.CacheService/BatchGet",
        }
    }
}

/// Requests per second per client IP (per API key for the admin port), the product's table by
/// default (`HYPERION_RATE_LIMIT_GET`, `_SET`, `_BATCH_GET`, `_ADMIN`). `Delete` shares the `Set`
/// budget: both are writes through the log. 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub get_per_sec: u32,
    pub set_per_sec: u32,
    pub batch_get_per_sec: u32,
    pub admin_per_sec: u32,
}

/// The product's table: Get 10,000/s, Set 1,000/s, BatchGet 100/s per client IP; admin 10/s per
/// API key.
pub const DEFAULT_RATE_LIMITS: RateLimits = RateLimits {
    get_per_sec: 10_000,
    set_per_sec: 1_000,
    batch_get_per_sec: 100,
    admin_per_sec: 10,
};

/// Largest configurable limit: a million requests per second per client is "unlimited" in all but
/// name; larger values are typos (0 says unlimited).
pub const RATE_LIMIT_PER_SEC_MAX: u32 = 1_000_000;

impl Default for RateLimits {
    fn default() -> Self {
        DEFAULT_RATE_LIMITS
    }
}

impl RateLimits {
    /// No limit on any endpoint.
    pub const UNLIMITED: RateLimits = RateLimits {
        get_per_sec: 0,
        set_per_sec: 0,
        batch_get_per_sec: 0,
        admin_per_sec: 0,
    };

    /// The limit of `endpoint`; 0 is unlimited.
    pub fn per_sec(&self, endpoint: Endpoint) -> u32 {
        match endpoint {
            Endpoint::Get => self.get_per_sec,
            Endpoint::Set => self.set_per_sec,
            Endpoint::BatchGet => self.batch_get_per_sec,
            Endpoint::Admin => self.admin_per_sec,
        }
    }
}

/// Who a bucket belongs to: a client address (gRPC), or an admin API key's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Ip(IpAddr),
    ApiKey(String),
}

/// Most clients tracked at once. Beyond it, idle (fully refilled) buckets are dropped first; if
/// none is idle, the oldest bucket is dropped. Bounds the limiter's memory under address churn.
pub const TRACKED_CLIENTS_MAX: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// The verdict for one request that was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub endpoint: Endpoint,
    pub limit_per_sec: u32,
    /// When one token will be available again.
    pub retry_after: Duration,
}

/// Token buckets per (client IP, endpoint): capacity = one second of the limit, refilled
/// continuously.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(ClientKey, Endpoint), Bucket>>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens for `client` at `endpoint`, or says how long to wait. Requests without
    /// a known peer address (in-process callers) are not limited.
    pub fn check(
        &self,
        client: Option<IpAddr>,
        endpoint: Endpoint,
        cost: u32,
        now: Instant,
    ) -> Result<(), Throttled> {
        match client {
            Some(ip) => self.check_key(ClientKey::Ip(ip), endpoint, cost, now),
            None => Ok(()),
        }
    }

    /// [`RateLimiter::check`] for any bucket owner (an admin API key's name).
    pub fn check_key(
        &self,
        client: ClientKey,
        endpoint: Endpoint,
        cost: u32,
        now: Instant,
    ) -> Result<(), Throttled> {
        let per_sec = self.limits.per_sec(endpoint);
        if per_sec == 0 {
            return Ok(());
        }
        let rate = f64::from(per_sec);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket_key = (client, endpoint);
        if buckets.len() >= TRACKED_CLIENTS_MAX && !buckets.contains_key(&bucket_key) {
            prune(&mut buckets, now, &self.limits);
        }
        let bucket = buckets.entry(bucket_key).or_insert(Bucket {
            tokens: rate,
            refilled_at: now,
        });
        let elapsed = now
            .saturating_duration_since(bucket.refilled_at)
            .as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.refilled_at = now;
        let cost = f64::from(cost);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            return Ok(());
        }
        let missing = cost - bucket.tokens;
        Err(Throttled {
            endpoint,
            limit_per_sec: self.limits.per_sec(endpoint),
            retry_after: Duration::from_secs_f64(missing / rate),
        })
    }
}

fn prune(buckets: &mut HashMap<(ClientKey, Endpoint), Bucket>, now: Instant, limits: &RateLimits) {
    buckets.retain(|(_, endpoint), bucket| {
        let rate = f64::from(limits.per_sec(*endpoint));
        let elapsed = now
            .saturating_duration_since(bucket.refilled_at)
            .as_secs_f64();
        bucket.tokens + elapsed * rate < rate
    });
    if buckets.len() >= TRACKED_CLIENTS_MAX {
        if let Some(oldest) = buckets
            .iter()
            .min_by_key(|(_, bucket)| bucket.refilled_at)
            .map(|(key, _)| key.clone())
        {
            buckets.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refuses_over_the_limit_and_refills() {
        let limiter = RateLimiter::new(RateLimits {
            get_per_sec: 10,
            set_per_sec: 1,
            batch_get_per_sec: 1,
            admin_per_sec: 2,
        });
        let start = crate::runtime::now();
        let client = Some("10.0.0.1".parse().unwrap());
        for _ in 0..10 {
            limiter.check(client, Endpoint::Get, 1, start).unwrap();
        }
        let throttled = limiter.check(client, Endpoint::Get, 1, start).unwrap_err();
        assert_eq!(throttled.limit_per_sec, 10);
        assert_eq!(throttled.endpoint, Endpoint::Get);
        assert!(throttled.retry_after <= Duration::from_millis(100));
        // Another client and another endpoint have their own buckets.
        let other = Some("10.0.0.2".parse().unwrap());
        limiter.check(other, Endpoint::Get, 1, start).unwrap();
        limiter.check(client, Endpoint::Set, 1, start).unwrap();
        let later = start + Duration::from_millis(100);
        limiter.check(client, Endpoint::Get, 1, later).unwrap();
        assert!(limiter.check(client, Endpoint::Get, 1, later).is_err());
        // A batch costs one token per call, and cannot exceed a second's budget.
        assert!(limiter.check(client, Endpoint::BatchGet, 2, later).is_err());
        // In-process callers have no address and are not limited.
        for _ in 0..100 {
            limiter.check(None, Endpoint::Set, 1, later).unwrap();
        }
        // Admin requests are counted per API key.
        let ops = || ClientKey::ApiKey("ops".to_string());
        limiter.check_key(ops(), Endpoint::Admin, 1, later).unwrap();
        limiter.check_key(ops(), Endpoint::Admin, 1, later).unwrap();
        let admin = limiter.check_key(ops(), Endpoint::Admin, 1, later);
        assert_eq!(admin.unwrap_err().limit_per_sec, 2);
        let other_key = ClientKey::ApiKey("oncall".to_string());
        limiter
            .check_key(other_key, Endpoint::Admin, 1, later)
            .unwrap();
    }

    #[test]
    fn zero_is_unlimited() {
        let limiter = RateLimiter::new(RateLimits {
            get_per_sec: 0,
            ..RateLimits::default()
        });
        let now = crate::runtime::now();
        let client = Some("10.0.0.1".parse().unwrap());
        for _ in 0..50_000 {
            limiter.check(client, Endpoint::Get, 1, now).unwrap();
        }
        // The other limits still hold.
        for _ in 0..100 {
            limiter.check(client, Endpoint::BatchGet, 1, now).unwrap();
        }
        assert!(limiter.check(client, Endpoint::BatchGet, 1, now).is_err());
    }

    #[test]
    fn tracked_clients_stay_bounded() {
        let limiter = RateLimiter::new(RateLimits::default());
        let now = crate::runtime::now();
        for i in 0..(TRACKED_CLIENTS_MAX as u32 + 10) {
            let ip = IpAddr::from(i.to_be_bytes());
            limiter.check(Some(ip), Endpoint::BatchGet, 1, now).unwrap();
        }
        let tracked = limiter.buckets.lock().unwrap().len();
        assert!(tracked <= TRACKED_CLIENTS_MAX, "{tracked} buckets");
    }
}
