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
    pub fn export(&self) -> Vec<u8> {
        crate::raft_proto::MachineSnapshot {
            store: self.store.export_snapshot().to_vec(),
            write_behind: self.write_behind.encode(),
            settings: self.settings.as_ref().map(settings_to_wire),
        }
        .encode_to_vec()
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
mod tests {
    use super::*;
    use hyperion_store::IntegrityKey;

    fn machine(write_behind: bool, capacity_bytes: u64) -> Machine {
        let mut config = StoreConfig::with_defaults(IntegrityKey::new(vec![7; 32]));
        config.capacity_bytes = capacity_bytes;
        config.max_value_bytes = 4096;
        config.eviction_batch_size = 1;
        config.compression = false;
        config.reads_update_recency = false;
        // One replica alone: its own settings apply from the start (as if the cluster's settings,
        // the same, had been applied first).
        Machine::new(config, write_behind, true).unwrap()
    }

    fn set(key: &str, value: &[u8], expected_version: u64) -> Command {
        Command::Set {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            ttl_ms: 0,
            expected_version,
            created_at_ms: 1_000,
        }
    }

    #[test]
    fn versions_are_log_indexes_and_a_refused_write_changes_nothing() {
        let mut m = machine(false, 1 << 20);
        assert_eq!(
            m.apply(3, set("k", b"a", 0)).unwrap(),
            WriteOutcome::Set {
                version: 3,
                ttl_ms: 0
            }
        );
        let before = m.digest();
        let refused = m.apply(4, set("k", b"b", 2)).unwrap_err();
        assert!(
            matches!(refused, StoreError::VersionMismatch { current: 3, .. }),
            "{refused:?}"
        );
        assert_eq!(m.digest(), before, "a refused CAS changes nothing");
        assert_eq!(m.applied_index(), 4);
        let deleted = m
            .apply(
                5,
                Command::Delete {
                    key: b"k".to_vec(),
                    expected_version: 3,
                    created_at_ms: 1_001,
                },
            )
            .unwrap();
        assert_eq!(
            deleted,
            WriteOutcome::Deleted {
                existed: true,
                version: 3
            }
        );
        assert_eq!(
            m.read(b"k", 1_002, false, TtlHint::On).outcome,
            ReadOutcome::Miss
        );
    }

    #[test]
    fn an_expiring_entry_never_hints_that_it_never_expires() {
        let mut m = machine(false, 1 << 20);
        let command = Command::Set {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ttl_ms: 100,
            expected_version: 0,
            created_at_ms: 1_000,
        };
        m.apply(3, command).unwrap();
        let hint = |m: &mut Machine, now_ms, hint| match m.read(b"k", now_ms, false, hint).outcome {
            ReadOutcome::Hit {
                ttl_remaining_ms, ..
            } => Some(ttl_remaining_ms),
            _ => None,
        };
        assert_eq!(hint(&mut m, 1_040, TtlHint::On), Some(60));
        // The entry is served in its last millisecond: the hint says it expires, not "never".
        assert_eq!(hint(&mut m, 1_100, TtlHint::On), Some(1));
        assert_eq!(hint(&mut m, 1_100, TtlHint::ZeroInLastMillisecond), Some(0));
        assert_eq!(hint(&mut m, 1_040, TtlHint::Off), Some(0));
        assert_eq!(hint(&mut m, 1_101, TtlHint::On), None, "expired");
    }

    #[test]
    fn export_and_import_carry_the_whole_state() {
        let mut m = machine(true, 1 << 20);
        m.apply_noop(1);
        m.apply(2, set("a", b"1", 0)).unwrap();
        m.apply(3, set("b", b"2", 0)).unwrap();
        let mut copy = machine(true, 1 << 20);
        copy.import(&m.export(), 3).unwrap();
        assert_eq!(copy.digest(), m.digest());
        assert_eq!(copy.applied_index(), 3);
        assert_eq!(copy.write_behind.pending_count(), 2);
        let error = copy.import(b"\xff\xff", 9).unwrap_err();
        assert!(matches!(error, SnapshotLoadError::Decode(_)), "{error}");
        assert_eq!(copy.digest(), m.digest(), "a failed import changes nothing");
    }

    #[test]
    fn an_eviction_refuses_fills_read_before_it() {
        // Room for one 4 KB entry and one small one (the largest entry must fit: 8448 bytes):
        // the second 4 KB write evicts the first.
        let mut m = machine(true, 8600);
        m.apply(1, set("a", &[1; 4000], 0)).unwrap();
        m.apply(2, set("b", &[2; 100], 0)).unwrap();
        m.apply(3, set("c", &[3; 4000], 0)).unwrap();
        assert_eq!(
            m.read(b"a", 1_000, false, TtlHint::Off).outcome,
            ReadOutcome::Miss
        );
        m.apply(
            4,
            Command::Flushed {
                written: vec![(b"a".to_vec(), 1), (b"b".to_vec(), 2), (b"c".to_vec(), 3)],
                fill_horizon: 0,
            },
        )
        .unwrap();
        let fill = |read_at_index| Command::Fill {
            entry: StoredEntry {
                key: b"a".to_vec(),
                value: vec![1; 4000],
                version: 1,
                ttl_ms: 0,
                created_at_ms: 1_000,
            },
            read_at_index,
        };
        assert_eq!(
            m.apply(5, fill(2)).unwrap(),
            WriteOutcome::Filled { stored: false },
            "read before the eviction at index 3"
        );
        assert_eq!(
            m.apply(6, fill(4)).unwrap(),
            WriteOutcome::Filled { stored: true }
        );
    }

    fn replicas(capacities: [u64; 2], local_settings: bool) -> [Machine; 2] {
        capacities.map(|capacity| {
            let mut config = StoreConfig::with_defaults(IntegrityKey::new(vec![7; 32]));
            config.capacity_bytes = capacity;
            config.max_value_bytes = 4096;
            config.eviction_batch_size = 1;
            config.compression = false;
            config.reads_update_recency = false;
            config.drop_corrupt_on_read = false;
            Machine::new(config, false, local_settings).unwrap()
        })
    }

    /// Safety hole 7: replicas whose own cache sizes differ evict differently, unless they apply
    /// the cluster's settings from the log (the leader's, here the first replica's).
    #[test]
    fn replicated_settings_make_replicas_with_different_configurations_agree() {
        for local_settings in [true, false] {
            let mut machines = replicas([20_000, 200_000], local_settings);
            let settings = machines[0].local_settings();
            for machine in &mut machines {
                machine
                    .apply(1, Command::Settings(settings.clone()))
                    .unwrap();
                for i in 0..30u64 {
                    let key = format!("k{i}");
                    machine
                        .apply(2 + i, set(&key, &[i as u8; 1000], 0))
                        .unwrap();
                }
            }
            let agree = machines[0].digest() == machines[1].digest();
            assert_eq!(
                agree, !local_settings,
                "local_settings={local_settings}: the replicas must agree exactly when the \
                 settings are replicated"
            );
        }
    }

    #[test]
    fn a_snapshot_carries_the_cluster_settings_to_a_smaller_node() {
        let [mut big, mut small] = replicas([200_000, 20_000], false);
        let settings = big.local_settings();
        big.apply(1, Command::Settings(settings.clone())).unwrap();
        for i in 0..100u64 {
            big.apply(2 + i, set(&format!("k{i}"), &[1; 1000], 0))
                .unwrap();
        }
        // More than the small node's own capacity: it loads under the cluster's settings.
        small.import(&big.export(), 101).unwrap();
        assert_eq!(small.digest(), big.digest());
        assert_eq!(small.applied_settings().store, settings.store);
    }

    /// Safety hole 6: an entry damaged on one replica is never served there, and its removal
    /// goes through the log, so the replicas stay equal apart from the damaged bytes.
    #[test]
    fn a_corrupt_entry_is_removed_through_the_log() {
        let mut machines = replicas([200_000, 200_000], false);
        for machine in &mut machines {
            machine.apply(1, set("k", b"value", 0)).unwrap();
        }
        assert!(machines[1].store.corrupt_value_for_test(b"k"));
        assert_eq!(
            machines[1].read(b"k", 1_000, false, TtlHint::Off).outcome,
            ReadOutcome::Corrupt { version: 1 }
        );
        assert_eq!(
            machines[0].digest(),
            machines[1].digest(),
            "quarantined, not diverged"
        );
        for machine in &mut machines {
            machine
                .apply(
                    2,
                    Command::Remove {
                        key: b"k".to_vec(),
                        version: 1,
                    },
                )
                .unwrap();
            assert_eq!(
                machine.read(b"k", 1_000, false, TtlHint::Off).outcome,
                ReadOutcome::Miss
            );
        }
        assert_eq!(machines[0].digest(), machines[1].digest());
    }

    /// Invalidation events: what each command changed, in order, with the new version (0 when
    /// the key is gone); a refused write changes nothing and reports nothing.
    #[test]
    fn applied_commands_report_their_changes() {
        use crate::watch::Reason;
        // Room for one 4 KB entry and one small one: the second 4 KB write evicts the first.
        let mut m = machine(false, 8600);
        m.apply(1, set("a", &[1; 4000], 0)).unwrap();
        m.apply(2, set("b", &[2; 100], 0)).unwrap();
        assert!(m.apply(3, set("b", b"x", 1)).is_err());
        m.apply(4, set("c", &[3; 4000], 0)).unwrap();
        let delete = |key: &str| Command::Delete {
            key: key.as_bytes().to_vec(),
            expected_version: 0,
            created_at_ms: 1_001,
        };
        m.apply(5, delete("b")).unwrap();
        m.apply(6, delete("never-written")).unwrap();
        let changes: Vec<(String, u64, Reason, u64)> = m
            .take_changes()
            .into_iter()
            .map(|c| {
                (
                    String::from_utf8(c.key).unwrap(),
                    c.version,
                    c.reason,
                    c.index,
                )
            })
            .collect();
        let at = |key: &str, version, reason, index| (key.to_string(), version, reason, index);
        assert_eq!(
            changes,
            vec![
                at("a", 1, Reason::Set, 1),
                at("b", 2, Reason::Set, 2),
                at("a", 0, Reason::Evict, 4),
                at("c", 4, Reason::Set, 4),
                at("b", 0, Reason::Delete, 5),
            ]
        );
        assert!(m.take_changes().is_empty(), "taken once");
    }

    #[test]
    #[should_panic(expected = "applied after")]
    fn applying_out_of_order_is_a_bug() {
        let mut m = machine(false, 1 << 20);
        m.apply_noop(2);
        m.apply_noop(2);
    }
}
