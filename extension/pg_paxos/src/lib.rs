//! pg_paxos: Paxos and a Multi-Paxos log inside PostgreSQL.
//!
//! Layout: `api` holds the SQL functions (thin), `paxos` the protocol on top of PostgreSQL (the
//! acceptor over local tables, rounds over the network, the log, membership), `net` the connections
//! to other members, `store` every query on the extension's tables. The protocol rules themselves
//! live in the pure `paxos-core` crate.

// pgrx reads SQL result columns from the literal `TableIterator<(name!(..), ..)>` signature, so
// those types cannot be shortened with aliases.
#![allow(clippy::type_complexity)]

use pgrx::prelude::*;

mod api;
mod error;
mod guc;
mod intercept;
mod net;
mod paxos;
mod store;

::pgrx::pg_module_magic!(name, version);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    paxos::round_claims::init();
    paxos::leadership::init();
    paxos::lease::init();
    paxos::batching::init();
    intercept::init();
    intercept::install();
}

extension_sql!(
    r#"
CREATE SCHEMA IF NOT EXISTS paxos;
REVOKE ALL ON SCHEMA paxos FROM PUBLIC;

-- The groups this node belongs to.
CREATE TABLE paxos.groups (
    group_id text PRIMARY KEY,
    self_conninfo text NOT NULL,
    applied_round bigint NOT NULL DEFAULT 0,
    -- Set when an entry failed here: the group is not applied until it is repaired.
    diverged_round bigint,
    diverged_error text,
    -- Rounds through this one were compacted here: their values and votes are gone.
    compacted_through bigint NOT NULL DEFAULT 0
);

-- Tables whose writes go through the log of a group, registered when their entry is applied.
CREATE TABLE paxos.replicated_tables (
    group_id text NOT NULL,
    table_name text NOT NULL,
    columns text NOT NULL,
    round bigint NOT NULL,
    PRIMARY KEY (group_id, table_name)
);

-- The acceptor's durable state, per round. Never deleted: votes keep chosen values chosen.
CREATE TABLE paxos.acceptor_slots (
    group_id text NOT NULL,
    round bigint NOT NULL,
    promised_num bigint,
    promised_by text,
    accepted_num bigint,
    accepted_by text,
    value_origin text,
    value_kind text,
    value_body text,
    PRIMARY KEY (group_id, round)
);

-- The groups whose acceptor this node is: founded here, joined (recorded once its admission was
-- chosen) or left. Never deleted, and gone only with the extension's data: an acceptor request for
-- any other group is refused, so that a node that lost its data (its promises and votes) cannot
-- answer as the acceptor it was.
CREATE TABLE paxos.acceptor_groups (
    group_id text PRIMARY KEY
);

-- The acceptor's promise to a leader for every round from from_round on, made in one phase 1. It
-- only ever rises (see paxos-core's leader module).
CREATE TABLE paxos.range_promises (
    group_id text PRIMARY KEY,
    from_round bigint NOT NULL,
    promised_num bigint NOT NULL,
    promised_by text NOT NULL
);

-- Writes of a batch (several transactions of this node sharing a round) that took effect here
-- before the applied round reached the batch's round: applying the batch skips them.
CREATE TABLE paxos.batched_writes (
    group_id text NOT NULL,
    round bigint NOT NULL,
    entry integer NOT NULL,
    PRIMARY KEY (group_id, round, entry)
);

-- Values known to be chosen. Round 0 records the founder.
CREATE TABLE paxos.log (
    group_id text NOT NULL,
    round bigint NOT NULL,
    value_origin text NOT NULL,
    value_kind text NOT NULL,
    value_body text,
    PRIMARY KEY (group_id, round)
);
CREATE INDEX log_membership_changes ON paxos.log (group_id, round)
    WHERE value_kind IN ('add_host', 'remove_host');

-- A random token naming this node's copy of the extension, so that a connection string can be
-- checked to reach this very node (copies of one data directory share their system identifier).
CREATE TABLE paxos.node (
    token text NOT NULL DEFAULT pg_catalog.gen_random_uuid()::text
);
INSERT INTO paxos.node DEFAULT VALUES;

CREATE TYPE paxos_result AS (accepted_value text, value_changed boolean);
"#,
    name = "bootstrap",
    bootstrap
);

extension_sql!(
    r#"
CREATE FUNCTION paxos_replicate_table(current_group_id text, new_table_oid regclass)
RETURNS boolean LANGUAGE sql VOLATILE STRICT
AS $$ SELECT paxos.replicate_table(current_group_id, new_table_oid::pg_catalog.oid) $$;

-- Membership, and the requests members send each other, are for superusers only.
REVOKE EXECUTE ON FUNCTION paxos_create_group(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION paxos_join_group(text, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION paxos_leave_group(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION paxos_add_host(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION paxos_remove_host(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION paxos_replicate_table(text, regclass) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION paxos_compact_log(text) FROM PUBLIC;
"#,
    name = "privileges",
    finalize
);

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_paxos'"]
    }
}
