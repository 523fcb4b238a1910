//! A history in the shape of Porcupine's `[]porcupine.Operation` (github.com/anishathalye/porcupine),
//! so other tools can read what the simulator recorded.
//!
//! Each operation is `{"ClientId", "Input", "Call", "Output", "Return"}`, times in nanoseconds of
//! simulated time. `Input` is `{"Op": "get"|"set"|"delete", "Key", ...}` and `Output` is
//! `{"Status": "hit"|"miss"|"written"|"deleted"|"cas_failed"|"fail"|"unknown", ...}`, with keys
//! and values as UTF-8 text where they are, else `0x`-prefixed hex. Operations without an answer
//! (`unknown`) return after the end of the history, as Porcupine expects of an operation that may
//! take effect at any later time. Partition by `Input.Key` for a per-key model.

use serde_json::{json, Value};

use crate::history::{Op, OpResult, Operation, Outcome};

fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

fn input(op: &Op) -> Value {
    match op {
        Op::Get { key, allow_stale } => {
            json!({"Op": "get", "Key": text(key), "AllowStale": allow_stale})
        }
        Op::Set {
            key,
            value,
            ttl_ms,
            expected_version,
        } => json!({
            "Op": "set",
            "Key": text(key),
            "Value": text(value),
            "TtlMs": ttl_ms,
            "ExpectedVersion": expected_version,
        }),
        Op::Delete {
            key,
            expected_version,
        } => json!({"Op": "delete", "Key": text(key), "ExpectedVersion": expected_version}),
    }
}

fn output(outcome: Option<&Outcome>) -> Value {
    match outcome {
        Some(Outcome::Ok(OpResult::Hit {
            value,
            version,
            is_stale,
            ..
        })) => {
            json!({"Status": "hit", "Value": text(value), "Version": version, "IsStale": is_stale})
        }
        Some(Outcome::Ok(OpResult::Miss)) => json!({"Status": "miss"}),
        Some(Outcome::Ok(OpResult::Written { version, ttl_ms })) => {
            json!({"Status": "written", "Version": version, "TtlMs": ttl_ms})
        }
        Some(Outcome::Ok(OpResult::Deleted { existed, version })) => {
            json!({"Status": "deleted", "Existed": existed, "Version": version})
        }
        Some(Outcome::Ok(OpResult::CasFailed { current_version })) => {
            json!({"Status": "cas_failed", "CurrentVersion": current_version})
        }
        Some(Outcome::Fail) => json!({"Status": "fail"}),
        Some(Outcome::Unknown) | None => json!({"Status": "unknown"}),
    }
}

/// `operations` as Porcupine operations, in invocation order.
pub fn porcupine_history(operations: &[Operation]) -> Value {
    const NS_PER_MS: u64 = 1_000_000;
    let end_ms = operations
        .iter()
        .map(|o| o.return_ms.unwrap_or(o.invoke_ms))
        .max()
        .unwrap_or(0);
    let mut sorted: Vec<&Operation> = operations.iter().collect();
    sorted.sort_by_key(|o| (o.invoke_ms, o.id));
    let items: Vec<Value> = sorted
        .into_iter()
        .map(|o| {
            let answered = !matches!(o.outcome, None | Some(Outcome::Unknown));
            let return_ms = match (answered, o.return_ms) {
                (true, Some(at)) => at,
                _ => end_ms + 1,
            };
            json!({
                "ClientId": o.client.0,
                "Input": input(&o.op),
                "Call": o.invoke_ms * NS_PER_MS,
                "Output": output(o.outcome.as_ref()),
                "Return": return_ms * NS_PER_MS,
            })
        })
        .collect();
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{ClientId, OpId};

    fn operation(id: u64, op: Op, invoke_ms: u64, done: Option<(u64, Outcome)>) -> Operation {
        Operation {
            id: OpId(id),
            client: ClientId(id % 2),
            batch: None,
            op,
            invoke_ms,
            return_ms: done.as_ref().map(|(at, _)| *at),
            outcome: done.map(|(_, outcome)| outcome),
        }
    }

    #[test]
    fn operations_take_porcupines_shape() {
        let set = Op::Set {
            key: b"k".to_vec(),
            value: vec![0xff, 0x00],
            ttl_ms: 0,
            expected_version: 0,
        };
        let get = Op::Get {
            key: b"k".to_vec(),
            allow_stale: false,
        };
        let history = porcupine_history(&[
            operation(2, get, 7, None),
            operation(
                1,
                set,
                3,
                Some((
                    5,
                    Outcome::Ok(OpResult::Written {
                        version: 4,
                        ttl_ms: 0,
                    }),
                )),
            ),
        ]);
        let ops = history.as_array().unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0]["Input"]["Op"], "set", "invocation order");
        assert_eq!(
            ops[0]["Input"]["Value"], "0xff00",
            "bytes that are not text are hex"
        );
        assert_eq!(ops[0]["Call"], 3_000_000);
        assert_eq!(ops[0]["Return"], 5_000_000);
        assert_eq!(ops[0]["Output"]["Version"], 4);
        assert_eq!(ops[1]["Output"]["Status"], "unknown");
        assert!(
            ops[1]["Return"].as_u64() > ops[0]["Return"].as_u64(),
            "unknown returns last"
        );
        assert_eq!(ops[1]["ClientId"], 0);
    }
}
