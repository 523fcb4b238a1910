//! The checker's answer: a verdict, and for each violation the evidence a human needs.

use std::fmt;

use serde::Serialize;

use crate::history::{Op, OpId, OpResult, Operation, Outcome};

/// What rule a violation broke (see the crate docs for each rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ViolationKind {
    /// A read observed an older state than one that completed before the read was invoked.
    StaleRead,
    /// An acknowledged write is never visible although a later read should have seen it.
    LostWrite,
    /// Two different successful writes of one key report the same version.
    DuplicateVersion,
    /// A read observed an older version than an earlier (in real time) read.
    NonMonotonicRead,
    /// A value or version was observed that no write (acknowledged or unknown) can have produced.
    PhantomValue,
    /// A read observed a version whose write was invoked only after the read returned.
    FutureRead,
    /// Version order contradicts real time: a write that finished first has the larger version.
    WriteOrderViolation,
    /// A compare-and-set succeeded or failed against the wrong current version.
    CasViolation,
    /// An entry that had definitely expired was served (or matched) as live.
    ExpiredServedFresh,
    /// An entry that cannot have expired yet was served with `is_stale`.
    FreshServedStale,
    /// Two deletes both report removing the same version.
    DoubleDelete,
    /// A response that cannot occur (version 0 on a write, `is_stale` on a linearizable read, ...).
    MalformedResult,
    /// No linearization exists (found by the bounded search, no fast-path rule named it).
    NotLinearizable,
    /// A near-cache read missed a version the cluster had moved past longer than the bound ago.
    StaleBeyondBound,
    /// A near-cache read returned a version older than its own client had written or read.
    OlderThanOwn,
}

/// One violation: the rule, the key, the operations involved and an excerpt of the key's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub key: Vec<u8>,
    /// The operations that together break the rule; the first is the one flagged.
    pub op_ids: Vec<OpId>,
    /// One sentence saying what is wrong.
    pub message: String,
    /// The key's operations around the violation, one per line; involved ones marked `*`.
    pub excerpt: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:?} on key {}: {}",
            self.kind,
            render_bytes(&self.key),
            self.message
        )?;
        write!(f, "{}", self.excerpt)
    }
}

/// The overall verdict of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Every key's subhistory is linearizable.
    Ok,
    /// At least one violation (never empty).
    Violation(Vec<Violation>),
    /// No violation found, but the bounded search could not decide some key.
    Unknown { reason: String },
}

/// The result of [`crate::check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub verdict: Verdict,
    pub keys_checked: usize,
    pub ops_checked: usize,
}

impl CheckReport {
    /// True unless a violation was found (`Unknown` counts as not violated).
    pub fn is_violation_free(&self) -> bool {
        !matches!(self.verdict, Verdict::Violation(_))
    }

    /// The violations found (empty unless the verdict is `Violation`).
    pub fn violations(&self) -> &[Violation] {
        match &self.verdict {
            Verdict::Violation(violations) => violations,
            Verdict::Ok | Verdict::Unknown { .. } => &[],
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            Verdict::Ok => {
                write!(
                    f,
                    "linearizable: {} keys, {} operations checked",
                    self.keys_checked, self.ops_checked
                )
            }
            Verdict::Unknown { reason } => write!(
                f,
                "undecided ({reason}): {} keys, {} operations checked, no violation found",
                self.keys_checked, self.ops_checked
            ),
            Verdict::Violation(violations) => {
                writeln!(
                    f,
                    "{} violation(s) in {} keys, {} operations:",
                    violations.len(),
                    self.keys_checked,
                    self.ops_checked
                )?;
                for violation in violations {
                    writeln!(f, "{violation}")?;
                }
                Ok(())
            }
        }
    }
}

/// Longest prefix of a key or value shown in a report; longer ones end in `…(N bytes)`, so a
/// 512 KiB value does not flood the excerpt.
pub const RENDERED_BYTES_MAX: usize = 48;

/// A key or value for a report line: quoted text, or hex; long ones cut (see
/// [`RENDERED_BYTES_MAX`]).
pub fn render_bytes(bytes: &[u8]) -> String {
    let (shown, rest) = bytes.split_at(bytes.len().min(RENDERED_BYTES_MAX));
    let mut out = if shown
        .iter()
        .all(|byte| byte.is_ascii_graphic() || *byte == b' ')
    {
        format!("{:?}", String::from_utf8_lossy(shown))
    } else {
        let hex: String = shown.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("0x{hex}")
    };
    if !rest.is_empty() {
        out.push_str(&format!("…({} bytes)", bytes.len()));
    }
    out
}

/// One operation as one line: `op#7 c2 [100..140] Set "x" ttl=0 exp=0 -> Written v=5 ttl=0`.
pub fn render_operation(operation: &Operation) -> String {
    let window = match operation.return_ms {
        Some(return_ms) => format!("[{}..{}]", operation.invoke_ms, return_ms),
        None => format!("[{}..]", operation.invoke_ms),
    };
    let request = match &operation.op {
        Op::Get { allow_stale, .. } => {
            let batch = operation
                .batch
                .map(|batch| format!(" batch={batch}"))
                .unwrap_or_default();
            format!("Get allow_stale={allow_stale}{batch}")
        }
        Op::Set {
            value,
            ttl_ms,
            expected_version,
            ..
        } => {
            format!(
                "Set {} ttl={ttl_ms} exp={expected_version}",
                render_bytes(value)
            )
        }
        Op::Delete {
            expected_version, ..
        } => format!("Delete exp={expected_version}"),
    };
    let answer = match operation.effective_outcome() {
        Outcome::Fail => "Fail".to_owned(),
        Outcome::Unknown => "Unknown".to_owned(),
        Outcome::Ok(OpResult::Hit {
            value,
            version,
            is_stale,
            ..
        }) => {
            format!(
                "Hit {} v={version}{}",
                render_bytes(value),
                if *is_stale { " stale" } else { "" }
            )
        }
        Outcome::Ok(OpResult::Miss) => "Miss".to_owned(),
        Outcome::Ok(OpResult::Written { version, ttl_ms }) => {
            format!("Written v={version} ttl={ttl_ms}")
        }
        Outcome::Ok(OpResult::Deleted { existed, version }) => {
            format!("Deleted existed={existed} v={version}")
        }
        Outcome::Ok(OpResult::CasFailed { current_version }) => {
            format!("CasFailed current={current_version}")
        }
    };
    format!(
        "op#{} c{} {window} {request} -> {answer}",
        operation.id.0, operation.client.0
    )
}
