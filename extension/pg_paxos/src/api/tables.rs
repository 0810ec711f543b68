//! Replicated tables. Superusers only (EXECUTE is revoked from PUBLIC).

use pgrx::prelude::*;

#[pg_schema]
mod paxos {
    use pgrx::prelude::*;

    use crate::error::OrRaise;
    use crate::paxos::tables;
    use crate::store;

    /// Behind `paxos_replicate_table(text, regclass)` (a SQL wrapper, so that table names resolve
    /// as regclass): every INSERT, UPDATE and DELETE on the table goes through the group's log and
    /// is replayed in the same order on every member.
    #[pg_extern(volatile, parallel_unsafe)]
    fn replicate_table(current_group_id: &str, table_oid: pg_sys::Oid) -> bool {
        tables::replicate(current_group_id, table_oid).or_raise();
        true
    }

    /// Logs a statement on replicated tables as the current role, and applies the log through it
    /// here. Returns its round. The statement must name its objects schema-qualified: replay runs
    /// with search_path pinned to pg_catalog.
    #[pg_extern(volatile, parallel_unsafe)]
    fn append_statement(current_group_id: &str, statement: &str) -> i64 {
        tables::append_statement(current_group_id, statement).or_raise() as i64
    }

    /// The column signature of a table on this node, or NULL when it does not exist (members ask
    /// each other before replicating a table).
    #[pg_extern(stable, parallel_safe)]
    fn table_columns(table_name: &str) -> Option<String> {
        store::table_columns(table_name).or_raise()
    }

    /// For a joining member: the applied round and every replicated table's rows at that round.
    #[pg_extern(volatile, parallel_unsafe)]
    fn request_tables_snapshot(
        current_group_id: &str,
        through_round: i64,
    ) -> TableIterator<
        'static,
        (
            name!(applied_round, i64),
            name!(table_name, Option<String>),
            name!(columns, Option<String>),
            name!(rows, Option<String>),
        ),
    > {
        let (applied, copies) =
            tables::snapshot(current_group_id, through_round.max(0) as u64).or_raise();
        let mut out: Vec<_> = copies
            .into_iter()
            .map(|c| (applied as i64, Some(c.name), Some(c.columns), Some(c.rows)))
            .collect();
        if out.is_empty() {
            out.push((applied as i64, None, None, None));
        }
        TableIterator::new(out)
    }

    /// Applies the log through a round (a member registering a newly replicated table).
    #[pg_extern(volatile, parallel_unsafe)]
    fn request_apply(current_group_id: &str, through_round: i64) -> i64 {
        crate::paxos::replicated_log::ReplicatedLog::open(current_group_id)
            .and_then(|log| log.apply_log(through_round.max(0) as u64))
            .or_raise() as i64
    }

    /// Drops what this node keeps of the rounds before `below_round`, which it applied (a member
    /// running `paxos_compact_log()`); returns the round it is compacted through.
    #[pg_extern(volatile, parallel_unsafe)]
    fn request_compact(current_group_id: &str, below_round: i64) -> i64 {
        crate::paxos::compaction::compact_here(current_group_id, below_round.max(0) as u64)
            .or_raise() as i64
    }

    /// Lets a repaired node apply its group again (see the README on diverged nodes).
    #[pg_extern(volatile, parallel_unsafe)]
    fn resume_group(current_group_id: &str, applied_round: default!(Option<i64>, "NULL")) -> bool {
        tables::resume(current_group_id, applied_round.map(|r| r.max(0) as u64)).or_raise();
        true
    }
}
