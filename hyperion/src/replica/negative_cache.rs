//! The leader's negative cache: keys the system of record has no row for, remembered briefly so
//! repeated misses (the 2024-10-15 pattern) do not each query it.

use std::collections::HashMap;

use crate::runtime::{self, Instant};

/// Most keys the leader's negative cache remembers.
pub const NEGATIVE_CACHE_KEYS_MAX: usize = 100_000;

/// The leader's memory of keys the database has no row for, so repeated misses (the
/// 2024-10-15 pattern) do not each query it. Leader-local, bounded, short-lived.
#[derive(Debug, Default)]
pub struct NegativeCache {
    until: HashMap<Vec<u8>, Instant>,
}

impl NegativeCache {
    pub fn remembers(&mut self, key: &[u8], now: Instant) -> bool {
        match self.until.get(key) {
            Some(&until) if until > now => true,
            Some(_) => {
                self.until.remove(key);
                false
            }
            None => false,
        }
    }

    pub fn remember(&mut self, key: &[u8], until: Instant) {
        if self.until.len() >= NEGATIVE_CACHE_KEYS_MAX {
            let now = runtime::now();
            self.until.retain(|_, until| *until > now);
            if self.until.len() >= NEGATIVE_CACHE_KEYS_MAX {
                self.until.clear();
            }
        }
        self.until.insert(key.to_vec(), until);
    }
}
