//! Group membership functions. Only superusers may call them (EXECUTE is revoked from PUBLIC).

use pgrx::prelude::*;

use crate::error::OrRaise;
use crate::paxos::group;

/// Creates a group with this node, reachable at `founder_connection_string`, as its only member.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_create_group(current_group_id: &str, founder_connection_string: &str) -> bool {
    group::create(current_group_id, founder_connection_string).or_raise();
    true
}

/// Joins a group through one of its members; returns the round this node was added in.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_join_group(
    current_group_id: &str,
    existing_connection_string: &str,
    own_connection_string: &str,
) -> i64 {
    group::join(
        current_group_id,
        existing_connection_string,
        own_connection_string,
    )
    .or_raise() as i64
}

/// Removes this node from the group through the log; returns the round of the removal.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_leave_group(current_group_id: &str) -> i64 {
    group::leave(current_group_id).or_raise() as i64
}

/// Adds a member through the log (it then runs paxos_join_group to copy the state).
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_add_host(current_group_id: &str, host_connection_string: &str) -> i64 {
    group::add(current_group_id, host_connection_string).or_raise() as i64
}

/// Removes a member through the log, e.g. one that is gone for good.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_remove_host(current_group_id: &str, host_connection_string: &str) -> i64 {
    group::remove(current_group_id, host_connection_string).or_raise() as i64
}
