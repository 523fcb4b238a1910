//! Fault injection: the deliberately broken behaviours that re-open holes the product closed (an
//! incident's pre-fix behaviour, a regression's switch, a Raft mutation), for the simulator's
//! negative controls and the regressions that must still find their bug.
//!
//! One value, passed explicitly with the configuration to every component that has a switch; no
//! component reads a flag from anywhere else, and nothing sets one from the environment. Every
//! switch is off by default, so production always runs with [`FaultInjection::default`], and a
//! simulation banner names the switches a seed ran with ([`FaultInjection::enabled`]) so a
//! replay sets them the same way.

/// Every fault-injection switch (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultInjection {
    /// Raft core mutations (vote stickiness off, lease validation skipped, term and vote
    /// forgotten on restart, peer messages stepped without validation).
    pub raft: hyperion_raft::Mutations,
    /// Serve linearizable reads from whoever believes it leads, without lease or read-index (the
    /// 2024-12-03 pre-fix behaviour).
    pub unsafe_leader_reads: bool,
    /// The read path keeps a clone of every value it serves, never freed (the 2024-11-22 pre-fix
    /// `.cloned()`).
    pub retain_read_values: bool,
    /// Every read-through miss queries the database itself, no single-flight (the 2024-10-15
    /// pre-fix behaviour).
    pub no_read_through_single_flight: bool,
    /// Read-through loads are driven by their waiters only and joined however old, and
    /// abandoned loads stay joinable (the 2026-12-01 pre-fix behaviour).
    pub join_stale_loads: bool,
    /// A node whose WAL never learned a term counts as having lost its data at start (the
    /// pre-fix admission rule: it is refused unless `HYPERION_JOIN_EXISTING_CLUSTER`).
    pub admission_by_term: bool,
    /// The lease check of a read uses the time of the node loop's last tick, not the clock read
    /// at the check (the pre-fix behaviour: a pause inside a turn serves stale reads).
    pub stale_lease_clock: bool,
    /// A panic in a task the node cannot live without ends only that task: the process lives on
    /// as a zombie (the pre-fix behaviour).
    pub zombie_on_task_panic: bool,
    /// An entry that fails its integrity check is removed from this replica only, outside the
    /// log (the pre-fix behaviour: replicas diverge).
    pub local_integrity_removal: bool,
    /// Apply-affecting settings (cache size, eviction, compression, value limit) come from each
    /// node's own configuration instead of the replicated cluster settings (the pre-fix
    /// behaviour).
    pub local_apply_settings: bool,
    /// Peer messages share the client requests' inbox, and a refused batch is ignored by its
    /// sender (the pre-fix behaviour: client overload starves Raft).
    pub shared_peer_inbox: bool,
    /// Peer messages reach the node loop without the product's checks: commands are not
    /// decoded, snapshot data is not loaded before the core persists it, and proposals are not
    /// checked (the pre-fix behaviour; pair it with the Raft mutation `skip_message_validation`
    /// for the whole hole).
    pub unvalidated_peer_input: bool,
    /// `RaftService` serves whoever reaches the port: no member certificate is required and a
    /// message may claim any `from` (the pre-fix behaviour).
    pub unauthenticated_raft: bool,
    /// `BatchGet` takes any number of keys: `BATCH_KEYS_MAX` is not enforced (the hole the
    /// product's 100-key limit closes; the request fuzz target's negative control).
    pub unbounded_batch_get: bool,
    /// A client near cache ignores RESYNC events: entries whose tracking the server dropped
    /// stay cached (the near-cache staleness checker's negative control). Read by the client
    /// that is handed this value, never by a node.
    pub near_cache_ignores_resync: bool,
    /// A read naming a Watch stream registers its key before it is read, holding nothing (the
    /// pre-fix behaviour): the change the read then returns is reported, which ends the
    /// tracking, and the reader ignores it as not newer than what it read.
    pub track_before_read: bool,
    /// A fresh read in an expiring entry's last millisecond carries the TTL hint 0, which means
    /// "never expires" (the pre-fix behaviour): a client cache honouring it keeps the entry.
    pub zero_ttl_hint_at_expiry: bool,
}

impl FaultInjection {
    /// Every switch's name, in declaration order: what a banner prints and a scenario names.
    pub const SWITCHES: &'static [&'static str] = &[
        "disable_vote_stickiness",
        "skip_lease_validation",
        "forget_term_and_vote",
        "unverified_commit",
        "vote_after_power_loss",
        "wal_corruption_as_torn_tail",
        "skip_message_validation",
        "unsafe_leader_reads",
        "retain_read_values",
        "no_read_through_single_flight",
        "join_stale_loads",
        "admission_by_term",
        "stale_lease_clock",
        "zombie_on_task_panic",
        "local_integrity_removal",
        "local_apply_settings",
        "shared_peer_inbox",
        "unvalidated_peer_input",
        "unauthenticated_raft",
        "unbounded_batch_get",
        "near_cache_ignores_resync",
        "track_before_read",
        "zero_ttl_hint_at_expiry",
        "skip_pre_vote",
    ];

    /// The switch called `name` (one of [`FaultInjection::SWITCHES`]), to set by name.
    pub fn switch_mut(&mut self, name: &str) -> Option<&mut bool> {
        let raft = &mut self.raft;
        Some(match name {
            "disable_vote_stickiness" => &mut raft.disable_vote_stickiness,
            "skip_lease_validation" => &mut raft.skip_lease_validation,
            "forget_term_and_vote" => &mut raft.forget_term_and_vote,
            "unverified_commit" => &mut raft.unverified_commit,
            "vote_after_power_loss" => &mut raft.vote_after_power_loss,
            "wal_corruption_as_torn_tail" => &mut raft.wal_corruption_as_torn_tail,
            "skip_message_validation" => &mut raft.skip_message_validation,
            "unsafe_leader_reads" => &mut self.unsafe_leader_reads,
            "retain_read_values" => &mut self.retain_read_values,
            "no_read_through_single_flight" => &mut self.no_read_through_single_flight,
            "join_stale_loads" => &mut self.join_stale_loads,
            "admission_by_term" => &mut self.admission_by_term,
            "stale_lease_clock" => &mut self.stale_lease_clock,
            "zombie_on_task_panic" => &mut self.zombie_on_task_panic,
            "local_integrity_removal" => &mut self.local_integrity_removal,
            "local_apply_settings" => &mut self.local_apply_settings,
            "shared_peer_inbox" => &mut self.shared_peer_inbox,
            "unvalidated_peer_input" => &mut self.unvalidated_peer_input,
            "unauthenticated_raft" => &mut self.unauthenticated_raft,
            "unbounded_batch_get" => &mut self.unbounded_batch_get,
            "near_cache_ignores_resync" => &mut self.near_cache_ignores_resync,
            "track_before_read" => &mut self.track_before_read,
            "zero_ttl_hint_at_expiry" => &mut self.zero_ttl_hint_at_expiry,
            "skip_pre_vote" => &mut raft.skip_pre_vote,
            _ => return None,
        })
    }

    /// The names of the switches that are on, in declaration order (for banners and logs).
    pub fn enabled(&self) -> Vec<&'static str> {
        let mut probe = self.clone();
        Self::SWITCHES
            .iter()
            .copied()
            .filter(|name| probe.switch_mut(name).is_some_and(|on| *on))
            .collect()
    }

    /// Whether every switch is off (always, in production).
    pub fn is_inert(&self) -> bool {
        self.enabled().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_inert_and_enabled_switches_are_named() {
        assert!(FaultInjection::default().is_inert());
        let mut faults = FaultInjection {
            join_stale_loads: true,
            ..FaultInjection::default()
        };
        faults.raft.skip_lease_validation = true;
        assert_eq!(
            faults.enabled(),
            vec!["skip_lease_validation", "join_stale_loads"]
        );
        assert!(!faults.is_inert());
    }

    #[test]
    fn every_named_switch_sets_its_own_field_only() {
        for name in FaultInjection::SWITCHES {
            let mut faults = FaultInjection::default();
            *faults
                .switch_mut(name)
                .expect("a listed switch has a field") = true;
            assert_eq!(faults.enabled(), vec![*name]);
        }
        assert!(FaultInjection::default()
            .switch_mut("no_such_switch")
            .is_none());
    }
}
