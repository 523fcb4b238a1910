//! The client history: what each client asked, when, and what it learned.
//!
//! Times are simulated milliseconds (`u64`). An operation is *invoked* when the client sends the
//! request and *returns* when the client has its answer (or gives up). The recorder never judges;
//! it keeps what it is told, in invocation order, and the checker reads it afterwards.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The largest history a recorder keeps by default. A simulation run issues tens of thousands of
/// operations; a million bounds the recorder's memory (and the checker's work) far above that.
pub const HISTORY_OPS_MAX: usize = 1_000_000;

/// Identifies one operation in a history: its index in invocation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub u64);

/// Identifies the client (simulated client node or task) that issued an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

/// What the client asked for. Keys and values are raw bytes, as in `proto/cache.proto`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `Get`, or one key of a `BatchGet` (see [`HistoryRecorder::invoke_batch_get`]).
    Get { key: Vec<u8>, allow_stale: bool },
    /// `Set`; `expected_version == 0` is unconditional, otherwise compare-and-set.
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
        ttl_ms: u64,
        expected_version: u64,
    },
    /// `Delete`; `expected_version == 0` is unconditional, otherwise compare-and-set.
    Delete { key: Vec<u8>, expected_version: u64 },
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get { key, .. } | Op::Set { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    fn accepts(&self, result: &OpResult) -> bool {
        matches!(
            (self, result),
            (Op::Get { .. }, OpResult::Hit { .. } | OpResult::Miss)
                | (
                    Op::Set { .. },
                    OpResult::Written { .. } | OpResult::CasFailed { .. }
                )
                | (
                    Op::Delete { .. },
                    OpResult::Deleted { .. } | OpResult::CasFailed { .. }
                )
        )
    }
}

/// The server's definite answer to an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// `Get` status HIT. `ttl_remaining_ms` is the response's client-caching hint, if known.
    Hit {
        value: Vec<u8>,
        version: u64,
        is_stale: bool,
        ttl_remaining_ms: Option<u64>,
    },
    /// `Get` status MISS.
    Miss,
    /// `Set` succeeded: the assigned version and the TTL in effect (0 = never expires).
    Written { version: u64, ttl_ms: u64 },
    /// `Delete` succeeded: whether a live entry was removed, and its version (0 if none).
    Deleted { existed: bool, version: u64 },
    /// `FAILED_PRECONDITION` on a compare-and-set: the key's current version (0 = absent).
    CasFailed { current_version: u64 },
}

/// How an operation ended, as far as the client can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The server answered; the operation took effect exactly as described.
    Ok(OpResult),
    /// The operation definitely did not take effect (rejected before it was proposed).
    Fail,
    /// The operation may or may not have taken effect, possibly after the client gave up.
    Unknown,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: OpId,
    pub client: ClientId,
    /// Set for the per-key Gets of one `BatchGet`: they share this number and their window.
    pub batch: Option<u64>,
    pub op: Op,
    pub invoke_ms: u64,
    /// `None` while the operation is outstanding; the checker treats that as [`Outcome::Unknown`].
    pub return_ms: Option<u64>,
    pub outcome: Option<Outcome>,
}

impl Operation {
    /// The outcome, with an operation that never completed counted as [`Outcome::Unknown`].
    pub fn effective_outcome(&self) -> &Outcome {
        self.outcome.as_ref().unwrap_or(&Outcome::Unknown)
    }
}

/// A recorded history: operations in invocation order (`ops[i].id == OpId(i)`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    ops: Vec<Operation>,
}

impl History {
    /// All operations, in invocation order.
    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    /// The operation with this id, if it exists.
    pub fn op(&self, id: OpId) -> Option<&Operation> {
        usize::try_from(id.0)
            .ok()
            .and_then(|index| self.ops.get(index))
    }

    /// Writes one JSON object per operation and line (the simulator's trace format).
    pub fn write_jsonl(&self, mut out: impl Write) -> io::Result<()> {
        for op in &self.ops {
            serde_json::to_writer(&mut out, op).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Reads a history written by [`History::write_jsonl`] (to re-check a saved trace).
    pub fn read_jsonl(input: impl BufRead) -> Result<History, RecordError> {
        let mut ops = Vec::new();
        for (line_index, line) in input.lines().enumerate() {
            let line = line.map_err(|error| RecordError::Parse {
                line: line_index + 1,
                message: error.to_string(),
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let op: Operation =
                serde_json::from_str(&line).map_err(|error| RecordError::Parse {
                    line: line_index + 1,
                    message: error.to_string(),
                })?;
            if op.id != OpId(ops.len() as u64) {
                return Err(RecordError::Parse {
                    line: line_index + 1,
                    message: format!("expected op id {}", ops.len()),
                });
            }
            ops.push(op);
        }
        Ok(History { ops })
    }
}

/// Misuse of the recorder (or a malformed trace). Workloads treat these as bugs and `expect` them,
/// except [`RecordError::Full`], which means: stop issuing operations.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("history is full: {max} operations recorded (the bound `max_ops`)")]
    Full { max: usize },
    #[error("no operation {0:?} was invoked")]
    UnknownOp(OpId),
    #[error("operation {0:?} was already completed")]
    AlreadyCompleted(OpId),
    #[error(
        "operation {id:?} returned at {return_ms} ms, before its invocation at {invoke_ms} ms"
    )]
    ReturnBeforeInvoke {
        id: OpId,
        invoke_ms: u64,
        return_ms: u64,
    },
    #[error("operation {id:?}: result {result:?} does not answer {op:?}")]
    OutcomeMismatch {
        id: OpId,
        op: Box<Op>,
        result: Box<OpResult>,
    },
    #[error("trace line {line}: {message}")]
    Parse { line: usize, message: String },
}

/// Records a client history as operations are invoked and complete. Bounded by `max_ops`.
#[derive(Debug, Clone)]
pub struct HistoryRecorder {
    history: History,
    max_ops: usize,
    batches: u64,
}

impl Default for HistoryRecorder {
    fn default() -> Self {
        HistoryRecorder::new()
    }
}

impl HistoryRecorder {
    /// A recorder bounded by [`HISTORY_OPS_MAX`].
    pub fn new() -> Self {
        HistoryRecorder::with_max_ops(HISTORY_OPS_MAX)
    }

    /// A recorder that refuses to record more than `max_ops` operations.
    pub fn with_max_ops(max_ops: usize) -> Self {
        HistoryRecorder {
            history: History::default(),
            max_ops,
            batches: 0,
        }
    }

    /// Records that `client` sent `op` at `at_ms`.
    pub fn invoke(&mut self, client: ClientId, op: Op, at_ms: u64) -> Result<OpId, RecordError> {
        self.push(client, None, op, at_ms)
    }

    /// Records a `BatchGet`: one Get per requested key, all sharing the invocation time and a
    /// batch number. Complete each id when its key's response arrives (or all when the stream
    /// ends); keys the stream never answered complete as [`Outcome::Unknown`] (or `Fail` if the
    /// whole call was rejected up front). Refuses the whole batch if it does not fit.
    pub fn invoke_batch_get(
        &mut self,
        client: ClientId,
        keys: &[Vec<u8>],
        allow_stale: bool,
        at_ms: u64,
    ) -> Result<Vec<OpId>, RecordError> {
        if self.history.ops.len() + keys.len() > self.max_ops {
            return Err(RecordError::Full { max: self.max_ops });
        }
        let batch = self.batches;
        self.batches += 1;
        keys.iter()
            .map(|key| {
                self.push(
                    client,
                    Some(batch),
                    Op::Get {
                        key: key.clone(),
                        allow_stale,
                    },
                    at_ms,
                )
            })
            .collect()
    }

    /// Records how operation `id` ended, at `at_ms`.
    pub fn complete(&mut self, id: OpId, outcome: Outcome, at_ms: u64) -> Result<(), RecordError> {
        let operation = usize::try_from(id.0)
            .ok()
            .and_then(|index| self.history.ops.get_mut(index))
            .ok_or(RecordError::UnknownOp(id))?;
        if operation.outcome.is_some() {
            return Err(RecordError::AlreadyCompleted(id));
        }
        if at_ms < operation.invoke_ms {
            return Err(RecordError::ReturnBeforeInvoke {
                id,
                invoke_ms: operation.invoke_ms,
                return_ms: at_ms,
            });
        }
        if let Outcome::Ok(result) = &outcome {
            if !operation.op.accepts(result) {
                return Err(RecordError::OutcomeMismatch {
                    id,
                    op: Box::new(operation.op.clone()),
                    result: Box::new(result.clone()),
                });
            }
        }
        operation.return_ms = Some(at_ms);
        operation.outcome = Some(outcome);
        Ok(())
    }

    /// The number of operations recorded so far.
    pub fn len(&self) -> usize {
        self.history.ops.len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.history.ops.is_empty()
    }

    /// The history so far (outstanding operations have no outcome yet).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Ends recording.
    pub fn into_history(self) -> History {
        self.history
    }

    fn push(
        &mut self,
        client: ClientId,
        batch: Option<u64>,
        op: Op,
        at_ms: u64,
    ) -> Result<OpId, RecordError> {
        if self.history.ops.len() >= self.max_ops {
            return Err(RecordError::Full { max: self.max_ops });
        }
        let id = OpId(self.history.ops.len() as u64);
        self.history.ops.push(Operation {
            id,
            client,
            batch,
            op,
            invoke_ms: at_ms,
            return_ms: None,
            outcome: None,
        });
        Ok(id)
    }
}
