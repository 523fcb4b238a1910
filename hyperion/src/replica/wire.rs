//! Conversions between the Raft core's messages and their protobuf form (`proto/raft.proto`), and
//! the encoding of state-machine commands.
//!
//! Contract: `from_wire(to_wire(m)) == m` for every message (tested); a malformed message from
//! the network is an error naming the missing field, never a panic.

use hyperion_raft::{
    AppendReject, Entry, EntryKind, Membership, Message, MessageBody, Snapshot, SnapshotMeta,
};
use prost::Message as _;

use hyperion_store::{stagger_ttl_ms, ApplySettings, EvictionPolicy};
use rand_chacha::ChaCha8Rng;

use super::types::{ClusterSettings, WriteRequest};
use crate::db::{Mutation, StoredEntry};
use crate::raft_proto as pb;
use pb::message::Body;

/// A message from a peer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed raft message: {0}")]
pub struct WireError(pub &'static str);

fn entry_to_wire(entry: &Entry) -> pb::Entry {
    pb::Entry {
        term: entry.term,
        index: entry.index,
        command: match &entry.kind {
            EntryKind::Command(data) => Some(data.clone()),
            EntryKind::NoOp => None,
        },
    }
}

fn entry_from_wire(entry: pb::Entry) -> Entry {
    Entry {
        term: entry.term,
        index: entry.index,
        kind: entry.command.map_or(EntryKind::NoOp, EntryKind::Command),
    }
}

fn snapshot_to_wire(snapshot: &Snapshot) -> pb::Snapshot {
    pb::Snapshot {
        index: snapshot.meta.index,
        term: snapshot.meta.term,
        voters: snapshot.meta.membership.voters.clone(),
        data: snapshot.data.clone(),
    }
}

fn snapshot_from_wire(snapshot: pb::Snapshot) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index: snapshot.index,
            term: snapshot.term,
            membership: Membership {
                voters: snapshot.voters,
            },
        },
        data: snapshot.data,
    }
}

/// The protobuf form of a write-behind mutation (in `Fill` commands and snapshots).
pub fn mutation_to_wire(mutation: &Mutation) -> pb::StoredMutation {
    match mutation {
        Mutation::Upsert(entry) => pb::StoredMutation {
            key: entry.key.clone(),
            version: entry.version,
            deleted: false,
            value: entry.value.clone(),
            ttl_ms: entry.ttl_ms,
            created_at_ms: entry.created_at_ms,
        },
        Mutation::Delete { key, version } => pb::StoredMutation {
            key: key.clone(),
            version: *version,
            deleted: true,
            ..pb::StoredMutation::default()
        },
    }
}

/// A write-behind mutation from its protobuf form; a mutation without a version is malformed.
pub fn mutation_from_wire(mutation: pb::StoredMutation) -> Result<Mutation, WireError> {
    if mutation.version == 0 {
        return Err(WireError("stored mutation without a version"));
    }
    Ok(if mutation.deleted {
        Mutation::Delete {
            key: mutation.key,
            version: mutation.version,
        }
    } else {
        Mutation::Upsert(StoredEntry {
            key: mutation.key,
            value: mutation.value,
            version: mutation.version,
            ttl_ms: mutation.ttl_ms,
            created_at_ms: mutation.created_at_ms,
        })
    })
}

/// The protobuf form of the cluster's settings (commands and snapshots).
pub fn settings_to_wire(settings: &ClusterSettings) -> pb::ClusterSettings {
    let store = &settings.store;
    pb::ClusterSettings {
        capacity_bytes: store.capacity_bytes,
        eviction_batch_size: store.eviction_batch_size as u64,
        lru_k2: store.eviction == EvictionPolicy::LruK2,
        compression: store.compression,
        max_value_bytes: store.max_value_bytes as u64,
        integrity_key_fingerprint: settings.integrity_key_fingerprint.to_vec(),
    }
}

/// The cluster's settings from their protobuf form.
pub fn settings_from_wire(settings: pb::ClusterSettings) -> Result<ClusterSettings, WireError> {
    let integrity_key_fingerprint: [u8; 32] = settings
        .integrity_key_fingerprint
        .as_slice()
        .try_into()
        .map_err(|_| WireError("settings.integrity_key_fingerprint"))?;
    let size = |value: u64, field| usize::try_from(value).map_err(|_| WireError(field));
    Ok(ClusterSettings {
        store: ApplySettings {
            capacity_bytes: settings.capacity_bytes,
            eviction_batch_size: size(
                settings.eviction_batch_size,
                "settings.eviction_batch_size",
            )?,
            eviction: if settings.lru_k2 {
                EvictionPolicy::LruK2
            } else {
                EvictionPolicy::Lru
            },
            compression: settings.compression,
            max_value_bytes: size(settings.max_value_bytes, "settings.max_value_bytes")?,
        },
        integrity_key_fingerprint,
    })
}

/// The protobuf form of a core message.
pub fn to_wire(message: &Message) -> pb::Message {
    let body = match &message.body {
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => Body::PreVote(pb::PreVote {
            last_log_index: *last_log_index,
            last_log_term: *last_log_term,
        }),
        MessageBody::PreVoteResponse { granted } => {
            Body::PreVoteResponse(pb::VoteResponse { granted: *granted })
        }
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            leader_transfer,
        } => Body::RequestVote(pb::RequestVote {
            last_log_index: *last_log_index,
            last_log_term: *last_log_term,
            leader_transfer: *leader_transfer,
        }),
        MessageBody::RequestVoteResponse { granted } => {
            Body::RequestVoteResponse(pb::VoteResponse { granted: *granted })
        }
        MessageBody::Append {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            round,
        } => Body::Append(pb::Append {
            prev_log_index: *prev_log_index,
            prev_log_term: *prev_log_term,
            entries: entries.iter().map(entry_to_wire).collect(),
            leader_commit: *leader_commit,
            round: *round,
        }),
        MessageBody::AppendResponse { result, round } => Body::AppendResponse(pb::AppendResponse {
            round: *round,
            result: Some(match result {
                Ok(match_index) => pb::append_response::Result::MatchIndex(*match_index),
                Err(reject) => pb::append_response::Result::Reject(pb::AppendReject {
                    rejected_prev_index: reject.rejected_prev_index,
                    conflict_term: reject.conflict_term,
                    conflict_index: reject.conflict_index,
                }),
            }),
        }),
        MessageBody::Heartbeat {
            leader_commit,
            round,
        } => Body::Heartbeat(pb::Heartbeat {
            leader_commit: *leader_commit,
            round: *round,
        }),
        MessageBody::HeartbeatResponse { round } => {
            Body::HeartbeatResponse(pb::HeartbeatResponse { round: *round })
        }
        MessageBody::InstallSnapshot { snapshot, round } => {
            Body::InstallSnapshot(pb::InstallSnapshot {
                snapshot: Some(snapshot_to_wire(snapshot)),
                round: *round,
            })
        }
        MessageBody::TimeoutNow => Body::TimeoutNow(pb::TimeoutNow {}),
        MessageBody::ReadIndexRequest { request_id } => {
            Body::ReadIndexRequest(pb::ReadIndexRequest {
                request_id: *request_id,
            })
        }
        MessageBody::ReadIndexResponse {
            request_id,
            read_index,
        } => Body::ReadIndexResponse(pb::ReadIndexResponse {
            request_id: *request_id,
            read_index: *read_index,
        }),
    };
    pb::Message {
        from: message.from,
        to: message.to,
        term: message.term,
        body: Some(body),
    }
}

/// The core message of a protobuf message from a peer.
pub fn from_wire(message: pb::Message) -> Result<Message, WireError> {
    let body = match message.body.ok_or(WireError("body"))? {
        Body::PreVote(m) => MessageBody::PreVote {
            last_log_index: m.last_log_index,
            last_log_term: m.last_log_term,
        },
        Body::PreVoteResponse(m) => MessageBody::PreVoteResponse { granted: m.granted },
        Body::RequestVote(m) => MessageBody::RequestVote {
            last_log_index: m.last_log_index,
            last_log_term: m.last_log_term,
            leader_transfer: m.leader_transfer,
        },
        Body::RequestVoteResponse(m) => MessageBody::RequestVoteResponse { granted: m.granted },
        Body::Append(m) => MessageBody::Append {
            prev_log_index: m.prev_log_index,
            prev_log_term: m.prev_log_term,
            entries: m.entries.into_iter().map(entry_from_wire).collect(),
            leader_commit: m.leader_commit,
            round: m.round,
        },
        Body::AppendResponse(m) => MessageBody::AppendResponse {
            round: m.round,
            result: match m.result.ok_or(WireError("append_response.result"))? {
                pb::append_response::Result::MatchIndex(index) => Ok(index),
                pb::append_response::Result::Reject(reject) => Err(AppendReject {
                    rejected_prev_index: reject.rejected_prev_index,
                    conflict_term: reject.conflict_term,
                    conflict_index: reject.conflict_index,
                }),
            },
        },
        Body::Heartbeat(m) => MessageBody::Heartbeat {
            leader_commit: m.leader_commit,
            round: m.round,
        },
        Body::HeartbeatResponse(m) => MessageBody::HeartbeatResponse { round: m.round },
        Body::InstallSnapshot(m) => MessageBody::InstallSnapshot {
            snapshot: snapshot_from_wire(m.snapshot.ok_or(WireError("install_snapshot.snapshot"))?),
            round: m.round,
        },
        Body::TimeoutNow(_) => MessageBody::TimeoutNow,
        Body::ReadIndexRequest(m) => MessageBody::ReadIndexRequest {
            request_id: m.request_id,
        },
        Body::ReadIndexResponse(m) => MessageBody::ReadIndexResponse {
            request_id: m.request_id,
            read_index: m.read_index,
        },
    };
    Ok(Message {
        from: message.from,
        to: message.to,
        term: message.term,
        body,
    })
}

/// A state-machine command, as proposed by the leader and applied by every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
        ttl_ms: u64,
        expected_version: u64,
        created_at_ms: u64,
    },
    Delete {
        key: Vec<u8>,
        expected_version: u64,
        created_at_ms: u64,
    },
    /// Entries the leader found expired at `now_ms` (cluster time, already less the stale grace).
    Expire {
        now_ms: u64,
        keys: Vec<(Vec<u8>, u64)>,
    },
    /// A read-through fill from the system of record, loaded at `read_at_index`.
    Fill {
        entry: crate::db::StoredEntry,
        read_at_index: u64,
    },
    /// Pending mutations the leader stored: (key, log index); and the new fill horizon.
    Flushed {
        written: Vec<(Vec<u8>, u64)>,
        fill_horizon: u64,
    },
    /// Versions start above this one.
    VersionFloor { version: u64 },
    /// Remove an entry that failed its integrity check on the leader, if it has this version.
    Remove { key: Vec<u8>, version: u64 },
    /// The settings every replica applies writes with, from now on.
    Settings(ClusterSettings),
    /// Evict the `count` least recently written entries (the admin endpoint).
    Evict { count: u64 },
}

impl Command {
    /// The command a write request proposes, stamped `stamp_ms` (cluster time), with the TTL
    /// staggered by `stagger` when given (2024-10-15); also the TTL the writer is told.
    pub(super) fn for_request(
        request: WriteRequest,
        stamp_ms: u64,
        stagger: Option<&mut ChaCha8Rng>,
    ) -> (Command, u64) {
        match request {
            WriteRequest::Set {
                key,
                value,
                ttl_ms,
                expected_version,
            } => {
                let ttl_ms = match stagger {
                    Some(rng) => stagger_ttl_ms(ttl_ms, rng),
                    None => ttl_ms,
                };
                let command = Command::Set {
                    key,
                    value,
                    ttl_ms,
                    expected_version,
                    created_at_ms: stamp_ms,
                };
                (command, ttl_ms)
            }
            WriteRequest::Delete {
                key,
                expected_version,
            } => (
                Command::Delete {
                    key,
                    expected_version,
                    created_at_ms: stamp_ms,
                },
                0,
            ),
            WriteRequest::Fill {
                mut entry,
                read_at_index,
            } => {
                // A refilled copy's TTL is staggered like a write's.
                if let Some(rng) = stagger {
                    entry.ttl_ms = stagger_ttl_ms(entry.ttl_ms, rng);
                }
                let command = Command::Fill {
                    entry,
                    read_at_index,
                };
                (command, 0)
            }
            WriteRequest::Flushed {
                written,
                fill_horizon,
            } => (
                Command::Flushed {
                    written,
                    fill_horizon,
                },
                0,
            ),
            WriteRequest::VersionFloor { version } => (Command::VersionFloor { version }, 0),
            WriteRequest::DropCorrupt { key, version } => (Command::Remove { key, version }, 0),
            WriteRequest::Settings(settings) => (Command::Settings(settings), 0),
            WriteRequest::Evict { count } => (Command::Evict { count }, 0),
        }
    }

    /// The bytes stored in the log.
    pub fn encode(&self) -> Vec<u8> {
        let kind = match self {
            Command::Set {
                key,
                value,
                ttl_ms,
                expected_version,
                created_at_ms,
            } => pb::command::Kind::Set(pb::SetCommand {
                key: key.clone(),
                value: value.clone(),
                ttl_ms: *ttl_ms,
                expected_version: *expected_version,
                created_at_ms: *created_at_ms,
            }),
            Command::Delete {
                key,
                expected_version,
                created_at_ms,
            } => pb::command::Kind::Delete(pb::DeleteCommand {
                key: key.clone(),
                expected_version: *expected_version,
                created_at_ms: *created_at_ms,
            }),
            Command::Expire { now_ms, keys } => pb::command::Kind::Expire(pb::ExpireCommand {
                now_ms: *now_ms,
                keys: keys
                    .iter()
                    .map(|(key, version)| pb::ExpiredKey {
                        key: key.clone(),
                        version: *version,
                    })
                    .collect(),
            }),
            Command::Fill {
                entry,
                read_at_index,
            } => pb::command::Kind::Fill(pb::FillCommand {
                entry: Some(mutation_to_wire(&Mutation::Upsert(entry.clone()))),
                read_at_index: *read_at_index,
            }),
            Command::Flushed {
                written,
                fill_horizon,
            } => pb::command::Kind::Flushed(pb::FlushedCommand {
                written: written
                    .iter()
                    .map(|(key, index)| pb::Removed {
                        key: key.clone(),
                        index: *index,
                    })
                    .collect(),
                fill_horizon: *fill_horizon,
            }),
            Command::VersionFloor { version } => {
                pb::command::Kind::VersionFloor(pb::VersionFloorCommand { version: *version })
            }
            Command::Remove { key, version } => pb::command::Kind::Remove(pb::RemoveCommand {
                key: key.clone(),
                version: *version,
            }),
            Command::Settings(settings) => pb::command::Kind::Settings(pb::SettingsCommand {
                settings: Some(settings_to_wire(settings)),
            }),
            Command::Evict { count } => {
                pb::command::Kind::Evict(pb::EvictCommand { count: *count })
            }
        };
        pb::Command { kind: Some(kind) }.encode_to_vec()
    }

    /// Decodes log bytes. Entries are written by this code on a leader and checksummed in the
    /// WAL, so a failure here is a bug or corruption: the caller stops the node.
    pub fn decode(bytes: &[u8]) -> Result<Command, WireError> {
        let command = pb::Command::decode(bytes).map_err(|_| WireError("command bytes"))?;
        Ok(match command.kind.ok_or(WireError("command.kind"))? {
            pb::command::Kind::Set(set) => Command::Set {
                key: set.key,
                value: set.value,
                ttl_ms: set.ttl_ms,
                expected_version: set.expected_version,
                created_at_ms: set.created_at_ms,
            },
            pb::command::Kind::Delete(delete) => Command::Delete {
                key: delete.key,
                expected_version: delete.expected_version,
                created_at_ms: delete.created_at_ms,
            },
            pb::command::Kind::Expire(expire) => Command::Expire {
                now_ms: expire.now_ms,
                keys: expire
                    .keys
                    .into_iter()
                    .map(|k| (k.key, k.version))
                    .collect(),
            },
            pb::command::Kind::Fill(fill) => {
                let entry = fill.entry.ok_or(WireError("fill.entry"))?;
                match mutation_from_wire(entry) {
                    Ok(Mutation::Upsert(entry)) => Command::Fill {
                        entry,
                        read_at_index: fill.read_at_index,
                    },
                    _ => return Err(WireError("fill.entry")),
                }
            }
            pb::command::Kind::Flushed(flushed) => Command::Flushed {
                written: flushed
                    .written
                    .into_iter()
                    .map(|w| (w.key, w.index))
                    .collect(),
                fill_horizon: flushed.fill_horizon,
            },
            pb::command::Kind::VersionFloor(floor) => Command::VersionFloor {
                version: floor.version,
            },
            pb::command::Kind::Remove(remove) => Command::Remove {
                key: remove.key,
                version: remove.version,
            },
            pb::command::Kind::Settings(settings) => Command::Settings(settings_from_wire(
                settings.settings.ok_or(WireError("settings.settings"))?,
            )?),
            pb::command::Kind::Evict(evict) => Command::Evict { count: evict.count },
        })
    }

    /// The command's cluster-time stamp (0: it carries none).
    pub fn stamp_ms(&self) -> u64 {
        match self {
            Command::Set { created_at_ms, .. } | Command::Delete { created_at_ms, .. } => {
                *created_at_ms
            }
            Command::Expire { now_ms, .. } => *now_ms,
            Command::Fill { .. }
            | Command::Flushed { .. }
            | Command::VersionFloor { .. }
            | Command::Remove { .. }
            | Command::Settings(_)
            | Command::Evict { .. } => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<MessageBody> {
        let entry = |index, kind| Entry {
            term: 3,
            index,
            kind,
        };
        vec![
            MessageBody::PreVote {
                last_log_index: 4,
                last_log_term: 2,
            },
            MessageBody::PreVoteResponse { granted: true },
            MessageBody::RequestVote {
                last_log_index: 4,
                last_log_term: 2,
                leader_transfer: true,
            },
            MessageBody::RequestVoteResponse { granted: false },
            MessageBody::Append {
                prev_log_index: 1,
                prev_log_term: 1,
                entries: vec![
                    entry(2, EntryKind::NoOp),
                    entry(3, EntryKind::Command(vec![1, 2, 3].into())),
                    entry(4, EntryKind::Command(Vec::new().into())),
                ],
                leader_commit: 2,
                round: 9,
            },
            MessageBody::AppendResponse {
                result: Ok(4),
                round: 9,
            },
            MessageBody::AppendResponse {
                result: Err(AppendReject {
                    rejected_prev_index: 7,
                    conflict_term: Some(2),
                    conflict_index: 5,
                }),
                round: 10,
            },
            MessageBody::AppendResponse {
                result: Err(AppendReject {
                    rejected_prev_index: 7,
                    conflict_term: None,
                    conflict_index: 3,
                }),
                round: 11,
            },
            MessageBody::Heartbeat {
                leader_commit: 4,
                round: 12,
            },
            MessageBody::HeartbeatResponse { round: 12 },
            MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: 10,
                        term: 3,
                        membership: Membership {
                            voters: vec![1, 2, 3],
                        },
                    },
                    data: vec![9; 100].into(),
                },
                round: 13,
            },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndexRequest { request_id: 77 },
            MessageBody::ReadIndexResponse {
                request_id: 77,
                read_index: Some(12),
            },
            MessageBody::ReadIndexResponse {
                request_id: 78,
                read_index: None,
            },
        ]
    }

    #[test]
    fn every_message_kind_round_trips_through_protobuf_bytes() {
        for body in samples() {
            let message = Message {
                from: 1,
                to: 2,
                term: 3,
                body,
            };
            let bytes = to_wire(&message).encode_to_vec();
            let decoded = from_wire(pb::Message::decode(bytes.as_slice()).unwrap()).unwrap();
            assert_eq!(decoded, message);
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        let empty = pb::Message {
            from: 1,
            to: 2,
            term: 3,
            body: None,
        };
        assert_eq!(from_wire(empty), Err(WireError("body")));
        let no_result = pb::Message {
            from: 1,
            to: 2,
            term: 3,
            body: Some(Body::AppendResponse(pb::AppendResponse {
                round: 1,
                result: None,
            })),
        };
        assert_eq!(
            from_wire(no_result),
            Err(WireError("append_response.result"))
        );
    }

    #[test]
    fn commands_round_trip() {
        let commands = [
            Command::Set {
                key: b"k".to_vec(),
                value: vec![0; 2000],
                ttl_ms: 5,
                expected_version: 2,
                created_at_ms: 1_700_000_000_000,
            },
            Command::Delete {
                key: b"k".to_vec(),
                expected_version: 0,
                created_at_ms: 7,
            },
            Command::Expire {
                now_ms: 99,
                keys: vec![(b"a".to_vec(), 3), (b"b".to_vec(), 4)],
            },
            Command::Fill {
                entry: crate::db::StoredEntry {
                    key: b"k".to_vec(),
                    value: b"from the database".to_vec(),
                    version: 40,
                    ttl_ms: 1000,
                    created_at_ms: 5,
                },
                read_at_index: 12,
            },
            Command::Flushed {
                written: vec![(b"a".to_vec(), 3), (b"b".to_vec(), 9)],
                fill_horizon: 8,
            },
            Command::VersionFloor { version: 1_000 },
            Command::Evict { count: 10_000 },
        ];
        for command in commands {
            assert_eq!(Command::decode(&command.encode()).unwrap(), command);
        }
        assert!(Command::decode(&[0xff, 0xff]).is_err());
    }
}
