//! [`CacheEntry`], its zeroize-on-drop value buffer, flags, the per-entry memory overhead and
//! the integrity tag.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

/// Fixed per-entry memory charged on top of key and stored value bytes. Where it goes (64-bit):
/// the slab slot (`CacheEntry` ≈ 80 B, HMAC tag 32 B, LRU links and LRU-K history 32 B) ≈ 150 B;
/// the hash-table slot (8 B index + 1 control byte, at 7/8 load) ≈ 10 B; one B-tree item in the
/// expiry index and one in the LRU-K order (24 B each plus node slack) ≈ 60 B; allocator headers of
/// the key and value allocations ≈ 32 B. Rounded up to 256; a unit test pins the slot size below it.
pub const ENTRY_OVERHEAD_BYTES: u64 = 256;

/// Length of the HMAC-SHA256 tag stored with every entry.
pub const INTEGRITY_TAG_BYTES: usize = 32;

/// Domain separation for the HMAC input, versioned so a future layout can't be confused with this.
const INTEGRITY_DOMAIN: &[u8] = b"hyperion.cache-entry.v1";

pub(crate) type HmacSha256 = Hmac<Sha256>;
pub(crate) type IntegrityTag = [u8; INTEGRITY_TAG_BYTES];

/// Entry flag bits (the engineering memory's "compression, encryption bits").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryFlags(u8);

impl EntryFlags {
    /// The stored value is LZ4 block data with a `u32` size prefix (lz4_flex
    /// `compress_prepend_size`).
    pub const COMPRESSED: EntryFlags = EntryFlags(0b01);
    /// An HMAC-SHA256 tag over the entry is present (always set by this store).
    pub const INTEGRITY: EntryFlags = EntryFlags(0b10);

    /// No flags.
    pub const fn empty() -> Self {
        EntryFlags(0)
    }

    /// Flags from raw bits; `None` if an unknown bit is set.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits & !(Self::COMPRESSED.0 | Self::INTEGRITY.0) == 0 {
            Some(EntryFlags(bits))
        } else {
            None
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: EntryFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with `other`'s bits added.
    #[must_use]
    pub const fn with(self, other: EntryFlags) -> Self {
        EntryFlags(self.0 | other.0)
    }
}

/// Owned value bytes that are overwritten with zeros when dropped, so freed cache values
/// (delete, eviction, expiry, overwrite, integrity failure, store drop) don't linger in freed
/// memory. Deliberately not `Clone`: the 2024-11-22 incident was a clone on the read path.
pub struct ValueBuf(Box<[u8]>);

impl ValueBuf {
    /// Copies `bytes` into an exactly-sized allocation.
    pub(crate) fn copy_from(bytes: &[u8]) -> Self {
        ValueBuf(bytes.into())
    }

    /// Takes `bytes` into an exactly-sized allocation, zeroizing the source buffer (a plain
    /// `into_boxed_slice` could reallocate and free the old copy unzeroized).
    pub(crate) fn take_zeroizing(mut bytes: Vec<u8>) -> Self {
        let buf = ValueBuf::copy_from(&bytes);
        bytes.zeroize();
        buf
    }

    /// The stored bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Number of stored bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no bytes are stored.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[doc(hidden)]
    pub(crate) fn as_mut_bytes_for_test(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for ValueBuf {
    fn drop(&mut self) {
        self.0.zeroize();
        #[cfg(test)]
        zeroize_probe::record(&self.0);
    }
}

impl fmt::Debug for ValueBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueBuf(<{} bytes>)", self.0.len())
    }
}

/// Test probe: every dropped [`ValueBuf`] reports here after zeroizing, so tests can observe that
/// a freed value was wiped (and that it really is all zeros). Per thread, so parallel tests don't
/// interfere.
#[cfg(test)]
pub(crate) mod zeroize_probe {
    use std::cell::Cell;

    thread_local! {
        static WIPED_BUFFERS: Cell<u64> = const { Cell::new(0) };
        static WIPED_BYTES: Cell<u64> = const { Cell::new(0) };
    }

    pub(crate) fn record(bytes: &[u8]) {
        assert!(bytes.iter().all(|&b| b == 0), "value buffer not zeroized");
        WIPED_BUFFERS.with(|c| c.set(c.get() + 1));
        WIPED_BYTES.with(|c| c.set(c.get() + bytes.len() as u64));
    }

    /// (buffers, bytes) wiped on this thread so far.
    pub(crate) fn wiped() -> (u64, u64) {
        (WIPED_BUFFERS.with(Cell::get), WIPED_BYTES.with(Cell::get))
    }
}

/// One cached item (the engineering memory's struct). `value` holds the *stored* bytes: LZ4 data
/// when `flags` contains [`EntryFlags::COMPRESSED`].
#[derive(Debug)]
pub struct CacheEntry {
    /// The key as given by the client.
    pub key: Vec<u8>,
    /// Stored value bytes, zeroized on drop.
    pub value: ValueBuf,
    /// Time to live in ms; 0 = never expires.
    pub ttl_ms: u64,
    /// Cluster time (ms) of the write.
    pub created_at: u64,
    /// Version assigned by the caller (a counter, later the Raft log index).
    pub version: u64,
    /// Compression and integrity bits.
    pub flags: EntryFlags,
}

impl CacheEntry {
    /// Expired when `now_ms > created_at + ttl_ms`; never when `ttl_ms == 0`. `now_ms` is cluster
    /// time, injected by the caller.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        match self.expires_at_ms() {
            None => false,
            Some(expires_at_ms) => now_ms > expires_at_ms,
        }
    }

    /// The last instant at which the entry is still fresh, `None` for entries without TTL.
    /// Saturates instead of wrapping for absurd TTLs.
    pub fn expires_at_ms(&self) -> Option<u64> {
        (self.ttl_ms != 0).then(|| self.created_at.saturating_add(self.ttl_ms))
    }

    /// Bytes charged against capacity for this entry.
    pub fn accounted_bytes(&self) -> u64 {
        entry_bytes(self.key.len(), self.value.len())
    }
}

/// Bytes charged for an entry with this key and stored-value length.
pub fn entry_bytes(key_len: usize, stored_value_len: usize) -> u64 {
    key_len as u64 + stored_value_len as u64 + ENTRY_OVERHEAD_BYTES
}

/// HMAC-SHA256 over (domain, key, stored value, version, flags). Variable-length fields are
/// length-prefixed (u64 little-endian) so no two different field splits produce the same input.
pub(crate) fn integrity_tag(
    mac: &HmacSha256,
    key: &[u8],
    stored_value: &[u8],
    version: u64,
    flags: EntryFlags,
) -> IntegrityTag {
    let mut mac = mac.clone();
    feed(&mut mac, key, stored_value, version, flags);
    mac.finalize().into_bytes().into()
}

/// Constant-time check of `tag` (hmac's `verify_slice`).
pub(crate) fn integrity_ok(mac: &HmacSha256, entry: &CacheEntry, tag: &IntegrityTag) -> bool {
    let mut mac = mac.clone();
    feed(
        &mut mac,
        &entry.key,
        entry.value.as_bytes(),
        entry.version,
        entry.flags,
    );
    mac.verify_slice(tag).is_ok()
}

fn feed(mac: &mut HmacSha256, key: &[u8], stored_value: &[u8], version: u64, flags: EntryFlags) {
    mac.update(&(INTEGRITY_DOMAIN.len() as u64).to_le_bytes());
    mac.update(INTEGRITY_DOMAIN);
    mac.update(&(key.len() as u64).to_le_bytes());
    mac.update(key);
    mac.update(&(stored_value.len() as u64).to_le_bytes());
    mac.update(stored_value);
    mac.update(&version.to_le_bytes());
    mac.update(&[flags.bits()]);
}

/// Staggered TTL against synchronized expiry (the 2024-10-15 thundering herd):
/// `ttl_ms + uniform[0, ttl_ms / 10]`; 0 (no expiry) stays 0. The caller passes its seeded RNG.
pub fn stagger_ttl_ms(ttl_ms: u64, rng: &mut impl rand::Rng) -> u64 {
    if ttl_ms == 0 {
        return 0;
    }
    let jitter_max_ms = ttl_ms / 10;
    ttl_ms.saturating_add(rng.random_range(0..=jitter_max_ms))
}
