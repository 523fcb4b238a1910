//! Admission of peer messages, before anything reaches the node loop: the product's half of
//! "hostile input is data" (the Raft core checks the protocol fields itself, see
//! [`hyperion_raft::RaftNode::check_message`]).
//!
//! Contract: [`admit`] turns a decoded batch into core messages only if every message passes;
//! otherwise the whole batch is refused with an error naming the message and field (a correct
//! peer never sends an invalid message, so nothing of a batch that holds one is trusted). What
//! is checked:
//! - the batch holds at most [`PEER_BATCH_MAX`] messages, each for this node, from the member the
//!   transport authenticated (when it authenticates peers) and never from this node itself;
//! - every message decodes (`from_wire`), an Append holds at most
//!   [`hyperion_raft::APPEND_ENTRIES_MAX`] entries, and every command in it is at most
//!   [`COMMAND_BYTES_MAX`] bytes, decodes, and passes [`Command::check`], so no undecodable
//!   command ever enters a log (where it would crash every replica at apply, on every restart);
//! - snapshot data is checked by the node loop, which decodes it fully before the core sees the
//!   message (see `NodeLoop`), so garbage is never persisted.
//!
//! [`Command::check`] is also what the node loop runs before proposing a command.

use hyperion_raft::{EntryKind, Message, MessageBody, NodeId};
use hyperion_store::{ApplySettings, IntegrityKey, StoreConfig, MAX_KEY_BYTES_CEILING};

use super::types::EVICT_COUNT_MAX;
use super::wire::{from_wire, Command};
use crate::faults::FaultInjection;
use crate::raft_proto as pb;

/// Most messages in one peer batch: what a sender puts in one `Send` call, and what a receiver
/// admits.
pub const PEER_BATCH_MAX: usize = 128;
/// Largest command in a log entry: a largest value (the store's ceiling), its key, and room for
/// the encoding.
pub const COMMAND_BYTES_MAX: usize =
    hyperion_store::MAX_VALUE_BYTES_CEILING + MAX_KEY_BYTES_CEILING + 4096;
/// Most keys in one `Expire`, `Flushed` or `Fill` list a leader proposes (its own batches are
/// far smaller: [`super::EXPIRE_BATCH_MAX`], the write-behind batch).
pub const COMMAND_KEYS_MAX: usize = 65_536;

/// Why a batch was refused: the message and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("messages[{index}]: {reason}")]
pub struct Refused {
    /// Position of the first invalid message in the batch.
    pub index: usize,
    pub reason: String,
}

/// Who may send a batch to this node.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// This node's Raft id.
    pub me: NodeId,
    /// The member the transport authenticated (its certificate names it), whose id every
    /// message must carry in `from`; `None` when the transport does not authenticate peers
    /// (development mode on loopback).
    pub sender: Option<NodeId>,
}

/// [`admit`], unless `faults.unvalidated_peer_input` re-opens the pre-fix hole: then the batch
/// is only decoded, whoever sent it and whatever it says (for the negative controls).
pub fn admit_batch(
    faults: &FaultInjection,
    admission: Admission,
    messages: Vec<pb::Message>,
) -> Result<Vec<Message>, Refused> {
    if !faults.unvalidated_peer_input {
        return admit(admission, messages);
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            from_wire(message).map_err(|e| Refused {
                index,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Decodes and checks a batch (see the module docs).
pub fn admit(admission: Admission, messages: Vec<pb::Message>) -> Result<Vec<Message>, Refused> {
    if messages.len() > PEER_BATCH_MAX {
        return Err(Refused {
            index: PEER_BATCH_MAX,
            reason: format!(
                "a batch holds at most {PEER_BATCH_MAX} messages, this one {}",
                messages.len()
            ),
        });
    }
    let mut admitted = Vec::with_capacity(messages.len());
    for (index, message) in messages.into_iter().enumerate() {
        let refuse = |reason: String| Refused { index, reason };
        let message = from_wire(message).map_err(|e| refuse(e.to_string()))?;
        if message.to != admission.me {
            return Err(refuse(format!(
                "to: the message is for node {}, this is node {}",
                message.to, admission.me
            )));
        }
        if message.from == admission.me {
            return Err(refuse(format!(
                "from: node {} is this node itself",
                message.from
            )));
        }
        if let Some(sender) = admission.sender {
            if message.from != sender {
                return Err(refuse(format!(
                    "from: node {} claimed by the certificate of node {sender}",
                    message.from
                )));
            }
        }
        check_body(&message.body).map_err(refuse)?;
        admitted.push(message);
    }
    Ok(admitted)
}

fn check_body(body: &MessageBody) -> Result<(), String> {
    let MessageBody::Append { entries, .. } = body else {
        return Ok(());
    };
    if entries.len() > hyperion_raft::APPEND_ENTRIES_MAX {
        return Err(format!(
            "append.entries: {} entries exceed the limit of {}",
            entries.len(),
            hyperion_raft::APPEND_ENTRIES_MAX
        ));
    }
    for (position, entry) in entries.iter().enumerate() {
        let EntryKind::Command(bytes) = &entry.kind else {
            continue;
        };
        if bytes.len() > COMMAND_BYTES_MAX {
            return Err(format!(
                "append.entries[{position}].command: {} bytes exceed the limit of \
                 {COMMAND_BYTES_MAX}",
                bytes.len()
            ));
        }
        Command::decode(bytes)
            .map_err(|e| e.to_string())
            .and_then(|command| command.check().map_err(|e| e.to_string()))
            .map_err(|reason| format!("append.entries[{position}].command: {reason}"))?;
    }
    Ok(())
}

/// A command that no replica may apply: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidCommand {
    pub field: &'static str,
    pub reason: String,
}

impl Command {
    /// Checks what every replica's apply relies on: keys of 1 to [`MAX_KEY_BYTES_CEILING`]
    /// bytes, values within the store's ceiling, lists of at most [`COMMAND_KEYS_MAX`] keys,
    /// versions where they are required, and settings the store accepts. Pure, so it answers the
    /// same on the proposer and on every receiver.
    pub fn check(&self) -> Result<(), InvalidCommand> {
        let invalid = |field: &'static str, reason: String| Err(InvalidCommand { field, reason });
        let key = |field: &'static str, key: &[u8]| {
            if key.is_empty() || key.len() > MAX_KEY_BYTES_CEILING {
                return invalid(
                    field,
                    format!(
                        "{} bytes; a key is 1-{MAX_KEY_BYTES_CEILING} bytes",
                        key.len()
                    ),
                );
            }
            Ok(())
        };
        let list = |field: &'static str, len: usize| {
            if len > COMMAND_KEYS_MAX {
                return invalid(
                    field,
                    format!("{len} keys exceed the limit of {COMMAND_KEYS_MAX}"),
                );
            }
            Ok(())
        };
        let value = |field: &'static str, value: &[u8]| {
            if value.len() > hyperion_store::MAX_VALUE_BYTES_CEILING {
                return invalid(
                    field,
                    format!(
                        "{} bytes exceed the store's ceiling of {}",
                        value.len(),
                        hyperion_store::MAX_VALUE_BYTES_CEILING
                    ),
                );
            }
            Ok(())
        };
        match self {
            Command::Set {
                key: k, value: v, ..
            } => {
                key("set.key", k)?;
                value("set.value", v)
            }
            Command::Delete { key: k, .. } => key("delete.key", k),
            Command::Expire { keys, .. } => {
                list("expire.keys", keys.len())?;
                keys.iter().try_for_each(|(k, _)| key("expire.keys", k))
            }
            Command::Fill { entry, .. } => {
                key("fill.entry.key", &entry.key)?;
                value("fill.entry.value", &entry.value)
            }
            Command::Flushed { written, .. } => {
                list("flushed.written", written.len())?;
                written
                    .iter()
                    .try_for_each(|(k, _)| key("flushed.written", k))
            }
            Command::VersionFloor { .. } => Ok(()),
            Command::Remove { key: k, version } => {
                key("remove.key", k)?;
                if *version == 0 {
                    return invalid("remove.version", "must be a version (> 0)".to_string());
                }
                Ok(())
            }
            Command::Settings(settings) => check_settings(settings.store),
            Command::Evict { count } => {
                if *count > EVICT_COUNT_MAX {
                    return invalid(
                        "evict.count",
                        format!("{count} exceeds the limit of {EVICT_COUNT_MAX}"),
                    );
                }
                Ok(())
            }
        }
    }
}

/// Settings the store accepts (with any key: the key is each node's own).
fn check_settings(settings: ApplySettings) -> Result<(), InvalidCommand> {
    let probe = StoreConfig::with_defaults(IntegrityKey::new(
        vec![0; hyperion_store::INTEGRITY_KEY_MIN_BYTES],
    ))
    .with_apply_settings(settings);
    probe.validate().map_err(|error| InvalidCommand {
        field: "settings",
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::wire::to_wire;
    use hyperion_raft::Entry;

    fn append(command: Vec<u8>) -> pb::Message {
        to_wire(&Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::Append {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![Entry {
                    term: 1,
                    index: 1,
                    kind: EntryKind::Command(command.into()),
                }],
                leader_commit: 0,
                round: 1,
            },
        })
    }

    fn set(key: &[u8]) -> Vec<u8> {
        Command::Set {
            key: key.to_vec(),
            value: b"v".to_vec(),
            ttl_ms: 0,
            expected_version: 0,
            created_at_ms: 1,
        }
        .encode()
    }

    const OPEN: Admission = Admission {
        me: 1,
        sender: None,
    };

    #[test]
    fn a_valid_batch_is_admitted() {
        let admitted = admit(OPEN, vec![append(set(b"k"))]).unwrap();
        assert_eq!(admitted.len(), 1);
    }

    #[test]
    fn undecodable_and_invalid_commands_are_refused_by_position() {
        let refused = admit(OPEN, vec![append(set(b"k")), append(vec![0xff, 0xff])]).unwrap_err();
        assert_eq!(refused.index, 1);
        assert!(
            refused.reason.starts_with("append.entries[0].command:"),
            "{refused}"
        );
        let refused = admit(OPEN, vec![append(set(b""))]).unwrap_err();
        assert!(refused.reason.contains("set.key"), "{refused}");
    }

    #[test]
    fn a_message_from_another_member_than_the_certificate_names_is_refused() {
        let admission = Admission {
            me: 1,
            sender: Some(3),
        };
        let refused = admit(admission, vec![append(set(b"k"))]).unwrap_err();
        assert_eq!(
            refused.reason,
            "from: node 2 claimed by the certificate of node 3"
        );
        let to_other = admit(
            Admission {
                me: 3,
                sender: None,
            },
            vec![append(set(b"k"))],
        )
        .unwrap_err();
        assert!(to_other.reason.starts_with("to:"), "{to_other}");
    }

    #[test]
    fn oversized_batches_are_refused() {
        let batch = vec![append(set(b"k")); PEER_BATCH_MAX + 1];
        assert!(admit(OPEN, batch).is_err());
    }

    #[test]
    fn settings_the_store_refuses_are_invalid_commands() {
        let mut settings = crate::replica::types::ClusterSettings::of(&StoreConfig::with_defaults(
            IntegrityKey::new(vec![1; 32]),
        ));
        assert!(Command::Settings(settings.clone()).check().is_ok());
        settings.store.capacity_bytes = 0;
        let error = Command::Settings(settings).check().unwrap_err();
        assert_eq!(error.field, "settings");
    }
}
