//! The acceptor requests as SQL calls to functions in schema `paxos` on each member, and their
//! replies decoded into the core's messages.

use paxos_core::{AcceptOutcome, Accepted, Ballot, PromiseOutcome, RangeOutcome, Reply, Request};
use tokio_postgres::Row;

use crate::error::NOT_IN_PREREQUISITE_STATE;
use crate::net::pool::{Link, LinkError, Param};
use paxos_model::value::LogValue;

const PREPARE: &str = "SELECT status, num, proposer, value_origin, value_kind, value_body
                       FROM paxos.request_prepare($1, $2, $3, $4)";
const ACCEPT: &str = "SELECT status, num, proposer, value_origin, value_kind, value_body
                      FROM paxos.request_accept($1, $2, $3, $4, $5, $6, $7)";
const PREPARE_RANGE: &str =
    "SELECT status, round, num, proposer, value_origin, value_kind, value_body
     FROM paxos.request_prepare_range($1, $2, $3, $4)";
const LEARN: &str = "SELECT paxos.request_learn($1, $2, $3, $4, $5)";
pub const HIGHEST_ROUND: &str = "SELECT paxos.request_highest_round($1, $2)";
pub const READ_INDEX: &str =
    "SELECT highest_round, promised_num, promised_by FROM paxos.request_read_index($1, $2)";
pub const REQUEST_LEASE: &str =
    "SELECT granted, highest_accepted_round FROM paxos.request_lease($1, $2, $3, $4, $5, $6)";
pub const STATUS: &str =
    "SELECT node_id, highest_accepted_round, highest_learned_round, applied_round,
            compacted_through_round, diverged_round, diverged_error
     FROM paxos.request_status($1)";
pub const IDENTITY: &str = "SELECT paxos.node_identity()";
pub const TABLE_COLUMNS: &str = "SELECT paxos.table_columns($1)";
pub const APPLY_THROUGH: &str = "SELECT paxos.request_apply($1, $2)";
pub const COMPACT: &str = "SELECT paxos.request_compact($1, $2)";
pub const TABLES_SNAPSHOT: &str = "SELECT applied_round, table_name, columns, rows
                                   FROM paxos.request_tables_snapshot($1, $2)";
pub const MEMBERSHIP_CHANGES: &str =
    "SELECT round, value_kind FROM paxos.request_membership_changes($1, $2)";
pub const ADMIT: &str = "SELECT paxos.admit_member($1, $2, $3)";
pub const REPLICATED_TABLES: &str =
    "SELECT table_name, columns FROM paxos.replicated_tables WHERE group_id = $1";
pub const ADMITTED_TOKEN: &str = "SELECT paxos.admitted_token($1, $2)";
pub const SERVE_AS_ACCEPTOR: &str = "SELECT paxos.serve_as_acceptor($1)";
pub const LOG_RANGE: &str = "SELECT round, value_origin, value_kind, value_body
                             FROM paxos.request_log($1, $2, $3)";

fn text(s: &str) -> Param {
    Param::Text(Some(s.to_string()))
}

fn value_params(value: &LogValue) -> [Param; 3] {
    [
        text(&value.origin),
        text(value.kind.as_str()),
        Param::Text(value.body.clone()),
    ]
}

/// Sends one request. Learn requests have no reply. A member that refuses as no acceptor of the
/// group (it lost its data) is skipped like an unreachable one until it is replaced: its answers
/// cannot count, and asking it first on every round would cost each round another round trip.
pub async fn send(
    link: &Link,
    group: &str,
    request: &Request<LogValue>,
) -> Result<Option<Reply<LogValue>>, LinkError> {
    let reply = send_once(link, group, request).await;
    skip_if_no_acceptor(link, &reply);
    reply
}

/// Skips `link`'s member like an unreachable one if `reply` is its refusal as no acceptor of the
/// group (see [`send`]).
pub fn skip_if_no_acceptor<T>(link: &Link, reply: &Result<T, LinkError>) {
    if let Err(LinkError::Sql { code, message }) = reply {
        // Acceptor requests refuse with it only as no acceptor.
        if code == NOT_IN_PREREQUISITE_STATE {
            link.mark_down(message);
        }
    }
}

async fn send_once(
    link: &Link,
    group: &str,
    request: &Request<LogValue>,
) -> Result<Option<Reply<LogValue>>, LinkError> {
    let round = request.round();
    match request {
        Request::Prepare { ballot, .. } => {
            let params = [
                text(group),
                Param::Int(round as i64),
                Param::Int(ballot.number as i64),
                text(&ballot.proposer),
            ];
            let rows = link.query(PREPARE, &params).await?;
            decode(&rows, round, ballot, true).map(Some)
        }
        Request::PrepareRange { from, ballot } => {
            let params = [
                text(group),
                Param::Int(*from as i64),
                Param::Int(ballot.number as i64),
                text(&ballot.proposer),
            ];
            let rows = link.query(PREPARE_RANGE, &params).await?;
            decode_range(&rows, *from, ballot).map(Some)
        }
        Request::Accept { ballot, value, .. } => {
            let mut params = vec![
                text(group),
                Param::Int(round as i64),
                Param::Int(ballot.number as i64),
                text(&ballot.proposer),
            ];
            params.extend(value_params(value));
            let rows = link.query(ACCEPT, &params).await?;
            decode(&rows, round, ballot, false).map(Some)
        }
        Request::Learn { value, .. } => {
            let mut params = vec![text(group), Param::Int(round as i64)];
            params.extend(value_params(value));
            link.query(LEARN, &params).await?;
            Ok(None)
        }
    }
}

pub fn value_from_row(row: &Row, first: usize) -> Result<Option<LogValue>, LinkError> {
    let origin: Option<String> = row.try_get(first).map_err(protocol)?;
    let kind: Option<String> = row.try_get(first + 1).map_err(protocol)?;
    let body: Option<String> = row.try_get(first + 2).map_err(protocol)?;
    match (origin, kind) {
        (Some(origin), Some(kind)) => LogValue::from_columns(origin, &kind, body)
            .map(Some)
            .map_err(|e| LinkError::Remote(e.to_string())),
        _ => Ok(None),
    }
}

pub fn protocol(e: tokio_postgres::Error) -> LinkError {
    LinkError::Remote(format!("unexpected reply: {e}"))
}

/// The ballot in columns `first` (number) and `first + 1` (proposer) of a reply row, if any.
fn ballot_at(row: &Row, first: usize) -> Result<Option<Ballot>, LinkError> {
    let number: Option<i64> = row.try_get(first).map_err(protocol)?;
    let proposer: Option<String> = row.try_get(first + 1).map_err(protocol)?;
    Ok(number
        .zip(proposer)
        .map(|(n, p)| Ballot::new(n.max(0) as u64, p)))
}

/// A member's answer to [`HIGHEST_ROUND`] (`with_promise` false) or [`READ_INDEX`]: its highest
/// voted round and, for the latter, the highest ballot it promised above the leader's applied
/// round.
pub fn decode_read_index(
    rows: &[Row],
    with_promise: bool,
) -> Result<(u64, Option<Ballot>), LinkError> {
    let Some(row) = rows.first() else {
        return Ok((0, None));
    };
    let round = row
        .try_get::<_, Option<i64>>(0)
        .map_err(protocol)?
        .unwrap_or(0)
        .max(0) as u64;
    let promise = if with_promise {
        ballot_at(row, 1)?
    } else {
        None
    };
    Ok((round, promise))
}

fn decode_range(rows: &[Row], from: u64, ballot: &Ballot) -> Result<Reply<LogValue>, LinkError> {
    let first = rows
        .first()
        .ok_or_else(|| LinkError::Remote("empty reply".into()))?;
    let status: String = first.try_get(0).map_err(protocol)?;
    let outcome = match status.as_str() {
        "refused" => RangeOutcome::Refused {
            promised: ballot_at(first, 2)?
                .ok_or_else(|| LinkError::Remote("a refusal without its promise".into()))?,
        },
        "granted" => {
            let mut votes = Vec::new();
            for row in &rows[1..] {
                let round: Option<i64> = row.try_get(1).map_err(protocol)?;
                let vote = ballot_at(row, 2)?.zip(value_from_row(row, 4)?);
                match (round, vote) {
                    (Some(round), Some((ballot, value))) => {
                        votes.push((round.max(0) as u64, Accepted { ballot, value }))
                    }
                    _ => return Err(LinkError::Remote("a vote row lacks its fields".into())),
                }
            }
            RangeOutcome::Granted { votes }
        }
        other => return Err(LinkError::Remote(format!("unknown reply status {other:?}"))),
    };
    Ok(Reply::RangePromise {
        from,
        ballot: ballot.clone(),
        outcome,
    })
}

fn decode(
    rows: &[Row],
    round: u64,
    ballot: &Ballot,
    prepare: bool,
) -> Result<Reply<LogValue>, LinkError> {
    let row = rows
        .first()
        .ok_or_else(|| LinkError::Remote("empty reply".into()))?;
    let status: String = row.try_get(0).map_err(protocol)?;
    let other_ballot = ballot_at(row, 1)?;
    let value = value_from_row(row, 3)?;
    let missing = || LinkError::Remote(format!("reply {status:?} lacks its fields"));
    let ballot = ballot.clone();
    Ok(match (status.as_str(), prepare) {
        ("chosen", _) => Reply::Chosen {
            round,
            value: value.ok_or_else(missing)?,
        },
        ("granted", true) => Reply::Promise {
            round,
            ballot,
            outcome: PromiseOutcome::Granted {
                accepted: match (other_ballot, value) {
                    (Some(b), Some(v)) => Some(Accepted {
                        ballot: b,
                        value: v,
                    }),
                    _ => None,
                },
            },
        },
        ("refused", true) => Reply::Promise {
            round,
            ballot,
            outcome: PromiseOutcome::Refused {
                promised: other_ballot.ok_or_else(missing)?,
            },
        },
        ("accepted", false) => Reply::Accept {
            round,
            ballot,
            outcome: AcceptOutcome::Accepted,
        },
        ("refused", false) => Reply::Accept {
            round,
            ballot,
            outcome: AcceptOutcome::Refused {
                promised: other_ballot.ok_or_else(missing)?,
            },
        },
        _ => {
            return Err(LinkError::Remote(format!(
                "unknown reply status {status:?}"
            )))
        }
    })
}
