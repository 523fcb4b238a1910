//! The replicated state machine: the cache engine plus the write-behind state, changed only by
//! applying committed log commands in order. Synchronous and pure (time arrives inside commands,
//! stamped by the leader), so every replica that applies the same log holds the same state, and it
//! is unit-testable without a runtime.
//!
//! Contract: [`Machine::apply`] decides everything a command does — versions, compare-and-set,
//! evictions, expirations, fills, the write-behind backlog — from the machine's state and the
//! command alone; [`Machine::export`] / [`Machine::import`] round-trip the whole state (snapshots).

use hyperion_store::{Lookup, Store, StoreConfig, StoreError, StoreStats};
use prost::Message as _;

use super::types::{ClusterSettings, ReadAnswer, ReadOutcome, WriteOutcome};
use super::wire::{settings_from_wire, settings_to_wire, Command};
use super::write_behind::{WriteBehind, WriteBehindError};
use crate::db::{Mutation, StoredEntry};
use crate::watch::{Change, Reason};

/// `MachineSnapshot.store`'s field number (`proto/raft.proto`), which [`Machine::export`] writes
/// by hand.
const MACHINE_SNAPSHOT_STORE_FIELD: u32 = 1;

/// Why a snapshot could not be loaded into the state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotLoadError {
    #[error("the snapshot does not decode: {0}")]
    Decode(String),
    #[error("the snapshot's write-behind state is invalid: {0}")]
    WriteBehind(#[from] WriteBehindError),
    #[error("the snapshot's cache does not load: {0}")]
    Store(#[from] hyperion_store::SnapshotError),
}

/// A snapshot decoded by [`Machine::load`], ready for [`Machine::install`].
pub struct LoadedSnapshot {
    store: Store,
    settings: Option<ClusterSettings>,
    write_behind: WriteBehind,
}

/// Whether reads carry the client-caching TTL hint (`enable_client_caching`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlHint {
    Off,
    On,
    /// Fault injection (`zero_ttl_hint_at_expiry`, the pre-fix behaviour): in an entry's last
    /// millisecond the hint is 0, which says "never expires".
    ZeroInLastMillisecond,
}

/// The state machine of one replica.
pub struct Machine {
    pub(super) store: Store,
    /// The store configuration of this node (its integrity key, and the settings it proposes as
    /// leader).
    local: StoreConfig,
    /// The cluster's settings, from the log (`None` until the first `Settings` command: the
    /// product defaults, the same on every replica).
    pub(super) settings: Option<ClusterSettings>,
    /// Fault injection: apply writes with this node's own settings (the pre-fix behaviour).
    local_settings: bool,
    /// The largest stamp applied; cluster time never goes behind it.
    pub(super) applied_stamp_ms: u64,
    /// The log index of the last entry applied to `store`.
    pub(super) applied_index: u64,
    /// Replicated write-behind state (maintained only with a system of record).
    pub(super) write_behind: WriteBehind,
    pub(super) write_behind_enabled: bool,
    /// What the commands applied since the last [`Machine::take_changes`] changed, in order.
    changes: Vec<Change>,
}

impl Machine {
    /// An empty machine over a store with `store_config`; `write_behind_enabled` when the
    /// cluster has a system of record (every replica must agree).
    pub fn new(
        mut store_config: StoreConfig,
        write_behind_enabled: bool,
        local_settings: bool,
    ) -> Result<Machine, hyperion_store::ConfigError> {
        store_config.validate()?;
        // A replica changes only through the log: an entry that fails its integrity check is
        // kept (never served) until the removal the leader proposes applies here.
        store_config.drop_corrupt_on_read = false;
        let applied = if local_settings {
            store_config.clone()
        } else {
            // Until the cluster's settings arrive through the log: the product defaults, which
            // every replica has, whatever its own configuration.
            store_config.with_apply_settings(
                StoreConfig::with_defaults(store_config.integrity_key.clone()).apply_settings(),
            )
        };
        Ok(Machine {
            store: Store::new(applied)?,
            local: store_config,
            settings: None,
            local_settings,
            applied_stamp_ms: 0,
            applied_index: 0,
            write_behind: WriteBehind::default(),
            write_behind_enabled,
            changes: Vec::new(),
        })
    }

    /// The next version: the log index, or higher when fills or the version floor raised the
    /// counter (versions only grow).
    fn next_version(&self, index: u64) -> u64 {
        index.max(self.store.last_version() + 1)
    }

    /// Cluster time as this replica knows it: `node_now_ms` (the node clock), never behind the
    /// stamps it applied.
    pub fn cluster_now_ms(&self, node_now_ms: u64) -> u64 {
        node_now_ms.max(self.applied_stamp_ms)
    }

    /// The log index of the last command applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Counters and gauges of the store.
    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// Reads `key` at cluster time `now_ms`. `hint` says whether fresh hits carry the TTL hint
    /// (`ttl_remaining_ms`, 0 = never expires: an expiring entry's hint is at least 1 ms, even in
    /// its last millisecond, so a client never takes it for one that never expires).
    pub fn read(
        &mut self,
        key: &[u8],
        now_ms: u64,
        allow_stale: bool,
        hint: TtlHint,
    ) -> ReadAnswer {
        let expires_at_ms = self.store.expires_at_ms(key);
        let outcome = match self.store.get(key, now_ms, allow_stale) {
            Lookup::Hit {
                value,
                version,
                is_stale,
            } => ReadOutcome::Hit {
                value: value.into_owned(),
                version,
                is_stale,
                ttl_remaining_ms: match hint {
                    _ if is_stale => 0,
                    TtlHint::Off => 0,
                    TtlHint::On => expires_at_ms.map_or(0, |at| at.saturating_sub(now_ms).max(1)),
                    TtlHint::ZeroInLastMillisecond => {
                        expires_at_ms.map_or(0, |at| at.saturating_sub(now_ms))
                    }
                },
            },
            Lookup::Miss => ReadOutcome::Miss,
            Lookup::Corrupt => ReadOutcome::Corrupt {
                version: self.store.entry_version(key).unwrap_or(0),
            },
        };
        ReadAnswer {
            outcome,
            note: None,
        }
    }

    /// Applies the committed command at `index` (see the module docs). An `Err` is the command's
    /// refusal (a compare-and-set mismatch, a limit): the state is unchanged, as on every replica.
    pub fn apply(&mut self, index: u64, command: Command) -> Result<WriteOutcome, StoreError> {
        assert!(
            index > self.applied_index,
            "entry {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
        let outcome = self.apply_command(index, command);
        crate::sometimes!(
            "cas_conflict",
            matches!(outcome, Err(StoreError::VersionMismatch { .. }))
        );
        outcome
    }

    /// Takes what the commands applied since the last call changed (invalidation events).
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    fn changed(&mut self, index: u64, reason: Reason, keys: &[Vec<u8>]) {
        self.changes.extend(keys.iter().map(|key| Change {
            key: key.clone(),
            version: 0,
            reason,
            index,
        }));
    }

    fn changed_to(&mut self, index: u64, key: &[u8], version: u64) {
        self.changes.push(Change {
            key: key.to_vec(),
            version,
            reason: Reason::Set,
            index,
        });
    }

    /// Marks `index` applied without a command (a Raft no-op).
    pub fn apply_noop(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "entry {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
    }

    fn apply_command(&mut self, index: u64, command: Command) -> Result<WriteOutcome, StoreError> {
        self.applied_stamp_ms = self.applied_stamp_ms.max(command.stamp_ms());
        match command {
            Command::Set {
                key,
                value,
                ttl_ms,
                expected_version,
                created_at_ms,
            } => {
                let version = self.next_version(index);
                let outcome = self.store.apply_set(
                    &key,
                    &value,
                    ttl_ms,
                    expected_version,
                    version,
                    created_at_ms,
                )?;
                self.changed(index, Reason::Evict, &outcome.evicted_keys);
                self.changed_to(index, &key, outcome.version);
                if self.write_behind_enabled {
                    self.write_behind.note_removed(&outcome.evicted_keys, index);
                    self.write_behind.record(
                        index,
                        Mutation::Upsert(StoredEntry {
                            key,
                            value,
                            version,
                            ttl_ms,
                            created_at_ms,
                        }),
                    );
                }
                Ok(WriteOutcome::Set {
                    version: outcome.version,
                    ttl_ms,
                })
            }
            Command::Delete {
                key,
                expected_version,
                created_at_ms,
            } => {
                let version = self.next_version(index);
                let outcome =
                    self.store
                        .apply_delete(&key, expected_version, version, created_at_ms)?;
                if outcome.existed {
                    self.changed(index, Reason::Delete, std::slice::from_ref(&key));
                }
                if self.write_behind_enabled {
                    self.write_behind
                        .record(index, Mutation::Delete { key, version });
                }
                Ok(WriteOutcome::Deleted {
                    existed: outcome.existed,
                    version: outcome.version,
                })
            }
            Command::Expire { now_ms, keys } => {
                // Expiry ends the cached copy only; the system of record keeps the entry (a
                // later miss reads it through with a fresh TTL).
                let mut removed = Vec::new();
                for (key, entry_version) in keys {
                    if self.store.remove_expired(&key, entry_version, now_ms) {
                        removed.push(key);
                    }
                }
                self.changed(index, Reason::Expire, &removed);
                if self.write_behind_enabled {
                    self.write_behind.note_removed(&removed, index);
                }
                Ok(WriteOutcome::Done)
            }
            Command::Fill {
                entry,
                read_at_index,
            } => {
                self.applied_stamp_ms = self.applied_stamp_ms.max(entry.created_at_ms);
                if !self.write_behind.fill_allowed(&entry.key, read_at_index) {
                    return Ok(WriteOutcome::Filled { stored: false });
                }
                let outcome = self.store.apply_fill(
                    &entry.key,
                    &entry.value,
                    entry.ttl_ms,
                    entry.version,
                    entry.created_at_ms,
                )?;
                if let Some(outcome) = &outcome {
                    self.write_behind.note_removed(&outcome.evicted_keys, index);
                    self.changed(index, Reason::Evict, &outcome.evicted_keys);
                    self.changed_to(index, &entry.key, outcome.version);
                }
                Ok(WriteOutcome::Filled {
                    stored: outcome.is_some(),
                })
            }
            Command::Flushed {
                written,
                fill_horizon,
            } => {
                self.write_behind.flushed(&written);
                self.write_behind.advance_fill_horizon(fill_horizon);
                Ok(WriteOutcome::Done)
            }
            Command::VersionFloor { version } => {
                self.store.raise_version_floor(version);
                self.write_behind.set_version_floor_known();
                Ok(WriteOutcome::Done)
            }
            Command::Remove { key, version } => {
                // The system of record keeps its copy: a later miss reads it through again.
                if self.store.remove_version(&key, version) {
                    let key = [key];
                    self.changed(index, Reason::Evict, &key);
                    if self.write_behind_enabled {
                        self.write_behind.note_removed(&key, index);
                    }
                }
                Ok(WriteOutcome::Done)
            }
            Command::Evict { count } => {
                // `count` was bounded when the command was checked; the store evicts in its
                // replicated order, so every replica removes the same entries.
                let count = usize::try_from(count).unwrap_or(usize::MAX);
                let evicted = self.store.evict(count);
                let evicted_count = evicted.len() as u64;
                self.changed(index, Reason::Evict, &evicted);
                if self.write_behind_enabled {
                    self.write_behind.note_removed(&evicted, index);
                }
                Ok(WriteOutcome::Evicted {
                    count: evicted_count,
                })
            }
            Command::Settings(settings) => {
                if self.local_settings {
                    return Ok(WriteOutcome::Done);
                }
                // Validated by the leader that proposed them; the check is pure, so a refusal
                // here would be the same on every replica.
                if let Ok(evicted) = self.store.reconfigure(settings.store) {
                    self.changed(index, Reason::Evict, &evicted);
                    if self.write_behind_enabled {
                        self.write_behind.note_removed(&evicted, index);
                    }
                    self.settings = Some(settings);
                }
                Ok(WriteOutcome::Done)
            }
        }
    }

    /// The settings writes apply with now (the cluster's, or the defaults before the first
    /// `Settings` command).
    /// The largest value a write may carry, as the log last set it.
    pub fn max_value_bytes(&self) -> usize {
        self.store.config().max_value_bytes
    }

    pub fn applied_settings(&self) -> ClusterSettings {
        ClusterSettings {
            store: self.store.config().apply_settings(),
            ..ClusterSettings::of(&self.local)
        }
    }

    /// The settings this node proposes as leader (its own configuration).
    /// Replaces this node's own apply settings (reloaded feature flags). They reach the store
    /// only through the log: the leader proposes them, and every replica applies them at the
    /// same index.
    pub fn set_local_apply_settings(&mut self, settings: hyperion_store::ApplySettings) {
        self.local = self.local.with_apply_settings(settings);
    }

    pub fn local_settings(&self) -> ClusterSettings {
        ClusterSettings::of(&self.local)
    }

    /// The replica's snapshot: the store's bytes plus the write-behind state.
    ///
    /// Written once, into the buffer it is returned in: the store's bytes go straight into the
    /// message's `store` field (framed by their length, known beforehand), followed by the other
    /// fields (protobuf reads fields in any order). Peak memory is one copy of the cache, not the
    /// three an export, a copy and an encoding would make.
    pub fn export(&self) -> Vec<u8> {
        use prost::encoding::{encode_key, encode_varint, WireType};
        let rest = crate::raft_proto::MachineSnapshot {
            store: Vec::new(),
            write_behind: self.write_behind.encode(),
            settings: self.settings.as_ref().map(settings_to_wire),
        }
        .encode_to_vec();
        let store_len = self.store.snapshot_len();
        let mut out = Vec::with_capacity(1 + 10 + store_len + rest.len());
        encode_key(
            MACHINE_SNAPSHOT_STORE_FIELD,
            WireType::LengthDelimited,
            &mut out,
        );
        encode_varint(store_len as u64, &mut out);
        let framed = out.len();
        self.store.export_snapshot_into(&mut out);
        debug_assert_eq!(
            out.len() - framed,
            store_len,
            "Store::snapshot_len is exact"
        );
        out.extend_from_slice(&rest);
        out
    }

    /// Replaces the state with a snapshot taken at log index `index`; on error nothing changed.
    pub fn import(&mut self, data: &[u8], index: u64) -> Result<(), SnapshotLoadError> {
        let loaded = self.load(data)?;
        self.install(loaded, index);
        Ok(())
    }

    /// Decodes a snapshot completely without changing anything: what [`Machine::install`] then
    /// puts in place. A snapshot from a peer is loaded before the Raft core sees it, so data that
    /// does not load is refused and never persisted.
    pub fn load(&self, data: &[u8]) -> Result<LoadedSnapshot, SnapshotLoadError> {
        let snapshot = crate::raft_proto::MachineSnapshot::decode(data)
            .map_err(|e| SnapshotLoadError::Decode(e.to_string()))?;
        let write_behind = WriteBehind::decode(&snapshot.write_behind)?;
        let settings = snapshot
            .settings
            .map(settings_from_wire)
            .transpose()
            .map_err(|e| SnapshotLoadError::Decode(e.to_string()))?;
        if let Some(settings) = &settings {
            Command::Settings(settings.clone())
                .check()
                .map_err(|e| SnapshotLoadError::Decode(e.to_string()))?;
        }
        // The snapshot's entries were stored under the cluster's settings as of the snapshot
        // (its capacity, not this node's): load them into a store configured so.
        let config = match (&settings, self.local_settings) {
            (Some(settings), false) => self.store.config().with_apply_settings(settings.store),
            _ => self.store.config().clone(),
        };
        let mut store = Store::new(config).map_err(|e| SnapshotLoadError::Decode(e.to_string()))?;
        store.import_snapshot(&snapshot.store)?;
        Ok(LoadedSnapshot {
            store,
            settings,
            write_behind,
        })
    }

    /// Puts a loaded snapshot taken at log index `index` in place of the state.
    pub fn install(&mut self, loaded: LoadedSnapshot, index: u64) {
        let LoadedSnapshot {
            store,
            settings,
            write_behind,
        } = loaded;
        self.store = store;
        if !self.local_settings {
            self.settings = settings;
        }
        self.write_behind = write_behind;
        self.applied_stamp_ms = self.applied_stamp_ms.max(self.store.max_created_at_ms());
        self.applied_index = index;
    }

    /// A digest of the whole state (SipHash with fixed keys: deterministic across processes and
    /// simulation runs). Replicas at the same applied index must have the same digest. Stored
    /// value bytes enter through their integrity tags (see [`Store::digest`]), so an entry damaged
    /// on one replica after it was written (quarantined: never served, removed through the log)
    /// does not make the replicas differ.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        self.store.digest(&mut hasher);
        self.write_behind.encode().hash(&mut hasher);
        self.settings
            .as_ref()
            .map(|settings| settings_to_wire(settings).encode_to_vec())
            .hash(&mut hasher);
        hasher.finish()
    }
}

#[cfg(test)]
mod tests;
