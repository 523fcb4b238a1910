//! Typed errors: [`ConfigError`] for a bad [`crate::StoreConfig`], [`StoreError`] for a write the
//! caller must handle (the gRPC layer maps validation errors to `INVALID_ARGUMENT` and
//! [`StoreError::VersionMismatch`] to `FAILED_PRECONDITION`).

use thiserror::Error;

/// A [`crate::StoreConfig`] field holds a value the store cannot run with. Every variant names
/// the field so the server can point at the environment variable or flag behind it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A size or count that must be positive is zero.
    #[error("store config: `{field}` must be greater than zero")]
    Zero {
        /// The offending field.
        field: &'static str,
    },
    /// A field exceeds the ceiling the store supports.
    #[error("store config: `{field}` is {value}, above the supported maximum {max}")]
    AboveMaximum {
        /// The offending field.
        field: &'static str,
        /// The configured value.
        value: u64,
        /// The supported maximum.
        max: u64,
    },
    /// The capacity cannot hold one entry of the largest allowed key and value, so valid writes
    /// would be refused.
    #[error(
        "store config: `capacity_bytes` is {capacity_bytes}, below {min_bytes} bytes needed for \
         one entry of `max_key_bytes` + `max_value_bytes` + per-entry overhead"
    )]
    CapacityBelowOneEntry {
        /// The configured capacity.
        capacity_bytes: u64,
        /// The smallest capacity that holds one largest entry.
        min_bytes: u64,
    },
    /// The HMAC key is too short to be a secret.
    #[error("store config: `integrity_key` is {len} bytes, at least {min} are required")]
    IntegrityKeyTooShort {
        /// The key's length.
        len: usize,
        /// The required minimum ([`crate::INTEGRITY_KEY_MIN_BYTES`]).
        min: usize,
    },
}

/// Why a write was refused. A refused write changes nothing in the store.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// Keys must be at least one byte long.
    #[error("key must not be empty")]
    EmptyKey,
    /// The key is longer than `max_key_bytes`.
    #[error("key is {len} bytes, the limit is {max} bytes")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The value is longer than `max_value_bytes` (`max_value_size_kb` × 1024).
    #[error("value is {len} bytes, the limit is {max} bytes ({} KiB)", max / 1024)]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// Compare-and-set failed: `expected_version` is not the key's current version. An absent or
    /// expired key has current version 0.
    #[error("version mismatch: expected {expected}, current version is {current}")]
    VersionMismatch {
        /// The version the caller expected.
        expected: u64,
        /// The key's current version (0 when absent or expired).
        current: u64,
    },
}
