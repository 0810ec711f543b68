//! Settings (GUCs). Names of the original pg_paxos are kept: node_id and consistency_model.

use std::ffi::CString;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::PostgresGucEnum;

pub static NODE_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static CONNECT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(2000);
pub static ROUND_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static MEMBER_RETRY_MS: GucSetting<i32> = GucSetting::<i32>::new(2000);
pub static CONSISTENCY_MODEL: GucSetting<ConsistencyModel> =
    GucSetting::<ConsistencyModel>::new(ConsistencyModel::Strong);
pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static ALLOW_MUTABLE_FUNCTIONS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static BATCH_WRITES: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static FORWARD_WRITES: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static BATCHES_IN_FLIGHT: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static LEASE_DURATION_MS: GucSetting<i32> = GucSetting::<i32>::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PostgresGucEnum)]
pub enum ConsistencyModel {
    Strong,
    Optimistic,
}

pub fn register() {
    GucRegistry::define_string_guc(
        c"pg_paxos.node_id",
        c"Unique name of this node in its paxos groups.",
        c"Part of every proposal number this node issues; defaults to node-<port>.",
        &NODE_ID,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_paxos.batches_in_flight",
        c"How many batches of inserts (group commit) the leader may have in flight at once.",
        c"2: a batch goes while the one before is in flight: lower latency while rounds wait on the network, but more and smaller rounds, which costs throughput where CPU is short. The backend that proposes a batch decides.",
        &BATCHES_IN_FLIGHT,
        1,
        paxos_core::commit_chain::PIPELINE as i32,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_paxos.connect_timeout",
        c"How long to wait for a connection to another member.",
        c"",
        &CONNECT_TIMEOUT_MS,
        10,
        600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_paxos.round_timeout",
        c"How long one round may take, retries included, before it fails.",
        c"A call that cannot reach a majority fails earlier, as soon as that is known.",
        &ROUND_TIMEOUT_MS,
        10,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_paxos.member_retry_interval",
        c"How long an unreachable member is skipped before it is tried again.",
        c"It is still tried when a majority cannot be formed without it.",
        &MEMBER_RETRY_MS,
        0,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_enum_guc(
        c"pg_paxos.consistency_model",
        c"strong: reads apply the log up to the group's highest accepted round; optimistic: reads are local.",
        c"",
        &CONSISTENCY_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_paxos.enabled",
        c"Intercept statements on replicated tables (superusers may turn it off to repair a node).",
        c"",
        &ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_paxos.allow_mutable_functions",
        c"Log statements whose volatile functions cannot be made deterministic.",
        c"",
        &ALLOW_MUTABLE_FUNCTIONS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_paxos.batch_writes",
        c"Let single-statement inserts into replicated tables on the leader share rounds (group commit).",
        c"Off: every transaction takes a round of its own.",
        &BATCH_WRITES,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_paxos.forward_writes",
        c"Send single-statement inserts into replicated tables on a member that does not lead to the group's leader, which commits them in its next shared round.",
        c"Off: such an insert takes the leadership over, as every other write on that member does. Needs pg_paxos.batch_writes on.",
        &FORWARD_WRITES,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_paxos.lease_duration",
        c"Leader leases: how long a lease granted by this node runs, and the longest lease it asks for as leader (0: off).",
        c"While a lease runs, the leader serves strong reads from its own state and other nodes' proposals wait. Assumes no node's clock runs more than 10% faster than another's; set the same value on every node.",
        &LEASE_DURATION_MS,
        0,
        600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
}

/// This node's id: the GUC, or node-<port> when it is not set.
pub fn node_id() -> String {
    match NODE_ID.get() {
        Some(id) if !id.as_bytes().is_empty() => id.to_string_lossy().into_owned(),
        // SAFETY: PostPortNumber is set by the postmaster before any backend runs.
        _ => format!("node-{}", unsafe { pgrx::pg_sys::PostPortNumber }),
    }
}

pub fn millis(setting: &GucSetting<i32>) -> u64 {
    setting.get().max(0) as u64
}
