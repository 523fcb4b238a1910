//! Rule U's assignment of observed versions to the unknown-outcome writes that may have produced
//! them.

/// Assigns each version (slot) a distinct write from its eligible list where possible: maximum
/// bipartite matching by augmenting paths (Kuhn). Deterministic: slots and candidates are tried
/// in the given order. Returns, per slot, the write's op index.
pub(crate) fn match_versions_to_writes(
    eligible: &[Vec<usize>],
    op_count: usize,
) -> Vec<Option<usize>> {
    /// `visited[write] == round`: `write` was tried in this slot's search for a path.
    fn augment(
        slot: usize,
        eligible: &[Vec<usize>],
        owner: &mut [Option<usize>],
        visited: &mut [usize],
        round: usize,
    ) -> bool {
        for &write in &eligible[slot] {
            if visited[write] == round {
                continue;
            }
            visited[write] = round;
            let free = match owner[write] {
                None => true,
                Some(other) => augment(other, eligible, owner, visited, round),
            };
            if free {
                owner[write] = Some(slot);
                return true;
            }
        }
        false
    }
    let mut owner: Vec<Option<usize>> = vec![None; op_count];
    let mut visited = vec![usize::MAX; op_count];
    for slot in 0..eligible.len() {
        augment(slot, eligible, &mut owner, &mut visited, slot);
    }
    let mut matched = vec![None; eligible.len()];
    for (write, slot) in owner.iter().enumerate() {
        if let Some(slot) = slot {
            matched[*slot] = Some(write);
        }
    }
    matched
}
