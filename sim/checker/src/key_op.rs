//! One key's operations normalized for checking, and what is known about the write behind each
//! version: the vocabulary the fast path (`check.rs`) and the bounded search (`search.rs`) share.

use crate::history::{Op, OpId, OpResult, Operation, Outcome};

/// Return time of an operation that may take effect at any time after its invocation.
pub(crate) const NEVER: u64 = u64::MAX;

/// One operation of a key, normalized for checking.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyOp<'h> {
    pub(crate) operation: &'h Operation,
    pub(crate) invoke_ms: u64,
    /// [`NEVER`] for operations whose outcome is unknown: they may take effect any time later.
    pub(crate) return_ms: u64,
    pub(crate) event: Event<'h>,
}

impl KeyOp<'_> {
    pub(crate) fn id(&self) -> OpId {
        self.operation.id
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Event<'h> {
    Hit {
        value: &'h [u8],
        version: u64,
        is_stale: bool,
        allow_stale: bool,
    },
    Miss {
        allow_stale: bool,
    },
    GetUnknown,
    Written {
        value: &'h [u8],
        version: u64,
        ttl_ms: u64,
        expected_version: u64,
    },
    SetUnknown {
        value: &'h [u8],
        ttl_ms: u64,
        expected_version: u64,
    },
    Deleted {
        existed: bool,
        version: u64,
        expected_version: u64,
    },
    DeleteUnknown {
        expected_version: u64,
    },
    CasFailed {
        current_version: u64,
        expected_version: u64,
    },
}

impl<'h> KeyOp<'h> {
    /// The version this operation saw live (a Hit, stale or not, a failed compare-and-set's
    /// current version, the version a delete removed, a successful compare-and-set's expected
    /// version), with the value when a Hit saw it.
    pub(crate) fn observed(&self) -> Option<(u64, Option<&'h [u8]>)> {
        let observed = match self.event {
            Event::Hit { value, version, .. } => (version, Some(value)),
            Event::CasFailed {
                current_version, ..
            } => (current_version, None),
            Event::Deleted {
                existed: true,
                version,
                ..
            } => (version, None),
            Event::Written {
                expected_version, ..
            } => (expected_version, None),
            _ => return None,
        };
        (observed.0 != 0).then_some(observed)
    }

    pub(crate) fn new(operation: &'h Operation) -> Self {
        let unknown = !matches!(operation.effective_outcome(), Outcome::Ok(_));
        let event = match (&operation.op, operation.effective_outcome()) {
            (
                Op::Get { allow_stale, .. },
                Outcome::Ok(OpResult::Hit {
                    value,
                    version,
                    is_stale,
                    ..
                }),
            ) => Event::Hit {
                value,
                version: *version,
                is_stale: *is_stale,
                allow_stale: *allow_stale,
            },
            (Op::Get { allow_stale, .. }, Outcome::Ok(OpResult::Miss)) => Event::Miss {
                allow_stale: *allow_stale,
            },
            (
                Op::Set {
                    value,
                    expected_version,
                    ..
                },
                Outcome::Ok(OpResult::Written { version, ttl_ms }),
            ) => Event::Written {
                value,
                version: *version,
                ttl_ms: *ttl_ms,
                expected_version: *expected_version,
            },
            (
                Op::Set {
                    value,
                    ttl_ms,
                    expected_version,
                    ..
                },
                _,
            ) if unknown => Event::SetUnknown {
                value,
                ttl_ms: *ttl_ms,
                expected_version: *expected_version,
            },
            (
                Op::Delete {
                    expected_version, ..
                },
                Outcome::Ok(OpResult::Deleted { existed, version }),
            ) => Event::Deleted {
                existed: *existed,
                version: *version,
                expected_version: *expected_version,
            },
            (
                Op::Delete {
                    expected_version, ..
                },
                _,
            ) if unknown => Event::DeleteUnknown {
                expected_version: *expected_version,
            },
            (
                Op::Set {
                    expected_version, ..
                }
                | Op::Delete {
                    expected_version, ..
                },
                Outcome::Ok(OpResult::CasFailed { current_version }),
            ) => Event::CasFailed {
                current_version: *current_version,
                expected_version: *expected_version,
            },
            // An unknown Get, or a result that does not answer the request (the recorder refuses
            // those, a hand-built history might not): neither constrains anything.
            _ => Event::GetUnknown,
        };
        let return_ms = if unknown {
            NEVER
        } else {
            operation.return_ms.unwrap_or(NEVER)
        };
        KeyOp {
            operation,
            invoke_ms: operation.invoke_ms,
            return_ms,
            event,
        }
    }
}

/// What the checker knows about the write that produced one version.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VersionSource<'h> {
    /// Index of the write in the key's operations.
    pub(crate) op_index: usize,
    pub(crate) value: &'h [u8],
    pub(crate) invoke_ms: u64,
    /// [`NEVER`] for an unknown-outcome write matched to this version.
    pub(crate) return_ms: u64,
    /// The TTL in effect if acknowledged; the requested one (a lower bound) if unknown.
    pub(crate) ttl_ms: u64,
    pub(crate) acknowledged: bool,
    /// False for a version matched to an unknown write that only value-less operations (a
    /// compare-and-set, a delete) observed: any unknown write of the key may have produced it.
    pub(crate) value_observed: bool,
}

impl VersionSource<'_> {
    /// The entry cannot be live at any time ≥ `at_ms` (rule TTL-1).
    pub(crate) fn definitely_expired_at(&self, at_ms: u64, clock_skew_ms: u64) -> bool {
        self.acknowledged
            && self.ttl_ms > 0
            && at_ms
                > self
                    .return_ms
                    .saturating_add(self.ttl_ms)
                    .saturating_add(clock_skew_ms)
    }

    /// The entry may be judged expired at some time ≤ `by_ms` (rule TTL-2).
    pub(crate) fn possibly_expired_by(&self, by_ms: u64, clock_skew_ms: u64) -> bool {
        self.ttl_ms > 0
            && by_ms.saturating_add(clock_skew_ms) > self.invoke_ms.saturating_add(self.ttl_ms)
    }
}
