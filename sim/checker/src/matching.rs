//! Rule U's assignment of observed versions to the unknown-outcome writes that may have produced
//! them.

/// Assigns each version (slot) a distinct write from its eligible list where possible: maximum
/// bipartite matching by augmenting paths (Kuhn). Deterministic: slots and candidates are tried
/// in the given order. Returns, per slot, the write's op index.
pub(crate) fn match_versions_to_writes(
    eligible: &[Vec<usize>],
    op_count: usize,
) -> Vec<Option<usize>> {
    fn augment(
        slot: usize,
        eligible: &[Vec<usize>],
        owner: &mut [Option<usize>],
        visited: &mut [bool],
    ) -> bool {
        for &write in &eligible[slot] {
            if visited[write] {
                continue;
            }
            visited[write] = true;
            let free = match owner[write] {
                None => true,
                Some(other) => augment(other, eligible, owner, visited),
            };
            if free {
                owner[write] = Some(slot);
                return true;
            }
        }
        false
    }
    let mut owner: Vec<Option<usize>> = vec![None; op_count];
    for slot in 0..eligible.len() {
        let mut visited = vec![false; op_count];
        augment(slot, eligible, &mut owner, &mut visited);
    }
    let mut matched = vec![None; eligible.len()];
    for (write, slot) in owner.iter().enumerate() {
        if let Some(slot) = slot {
            matched[*slot] = Some(write);
        }
    }
    matched
}
