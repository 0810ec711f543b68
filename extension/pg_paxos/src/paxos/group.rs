//! Creating, joining and leaving groups. Membership changes are log entries (see `membership`), so
//! every member switches to a new membership at the same round.

use crate::error::{PaxosError, Result, NOT_IN_PREREQUISITE_STATE};
use crate::net::pool::{Link, LinkError, Param};
use crate::net::rpc;
use crate::paxos::replicated_log::{new_value, ReplicatedLog};
use crate::paxos::tables;
use crate::store::{self, Group};
use paxos_model::conninfo;
use paxos_model::membership::{self, admission_label, admitted_token, Admission, CHANGE_DELAY};
use paxos_model::names::check_name;
use paxos_model::value::ValueKind;

/// The random token of this node's copy of the extension, to check that a connection string given
/// as "this node" really reaches this node and database.
pub fn node_identity() -> Result<String> {
    store::node_token()
}

fn validate_conninfo(conninfo: &str) -> Result<()> {
    let defaults = store::connection_defaults()?;
    conninfo::parse(conninfo, &defaults, std::time::Duration::from_secs(1))?;
    Ok(())
}

/// The token of the copy of pg_paxos that answers at `link` within `limit` (see
/// [`node_identity`]).
fn identity_at(link: &Link, limit: std::time::Duration) -> Result<String> {
    let rows = crate::net::pool::net()?.block_on(link.query_within(limit, rpc::IDENTITY, &[]));
    match rows {
        Ok(rows) => Ok(rows
            .first()
            .and_then(|r| r.try_get::<_, String>(0).ok())
            .unwrap_or_default()),
        Err(e) => Err(PaxosError::Remote {
            member: link.label.clone(),
            message: e.message().to_string(),
        }),
    }
}

/// Connects to `conninfo` and checks that it reaches this very node and database.
fn check_reaches_self(log: &ReplicatedLog, conninfo: &str) -> Result<()> {
    let link = log.link(conninfo)?;
    if identity_at(&link, log.round_timeout())? != node_identity()? {
        return Err(PaxosError::InvalidArgument {
            message: format!(
                "connection string {} reaches another server or database, not this one",
                link.label
            ),
            hint: "Give this node's own address as other members reach it.",
        });
    }
    Ok(())
}

/// A log handle for a group that is not (yet) recorded locally, for talking to members.
fn detached(group_id: &str, self_conninfo: &str) -> Result<ReplicatedLog> {
    ReplicatedLog::for_group(Group {
        id: group_id.to_string(),
        self_conninfo: self_conninfo.to_string(),
        applied_round: 0,
        version: None,
    })
}

pub fn create(group_id: &str, founder: &str) -> Result<()> {
    check_name("group name", group_id)?;
    validate_conninfo(founder)?;
    if store::group(group_id)?.is_some() {
        return Err(PaxosError::DuplicateGroup {
            group: group_id.to_string(),
        });
    }
    check_reaches_self(&detached(group_id, founder)?, founder)?;
    if !store::insert_group(group_id, founder, 0)? {
        return Err(PaxosError::DuplicateGroup {
            group: group_id.to_string(),
        });
    }
    store::serve_as_acceptor(group_id)?;
    let founding = new_value(
        &admission_label("founder", &node_identity()?),
        ValueKind::AddHost,
        Some(founder.to_string()),
    );
    store::record_learned(group_id, 0, &founding)
}

/// Adds `member` through the log (idempotent) and returns the round its membership was chosen in.
/// `token` names the joining node's copy of pg_paxos (see [`node_identity`]): the addition records
/// it, and a member admitted as another copy is refused (a node that lost its data must not count
/// as the voter it was; see `PaxosError::MemberReplaced`). A member added while nothing answered
/// at its address (`paxos_add_host`) has no copy recorded: the first join claims it.
pub fn admit(group_id: &str, member: &str, token: Option<&str>) -> Result<u64> {
    validate_conninfo(member)?;
    let log = ReplicatedLog::open(group_id)?;
    let next = store::highest_learned(group_id)? + 1;
    log.learn_through(next - 1)?;
    let replaced = || PaxosError::MemberReplaced {
        group: group_id.to_string(),
        member: conninfo::redact(member),
    };
    if let Some(admission) = current_admission(group_id, member, next)? {
        match (token, admission.token.as_deref()) {
            (Some(joining), Some(recorded)) if joining != recorded => return Err(replaced()),
            (Some(joining), None) => {
                // Claimed by another addition of the same member (no change of membership), before
                // this node may vote: the first copy whose claim is chosen keeps the membership.
                let claimed = log.append(new_value(
                    &admission_label("admit", joining),
                    ValueKind::AddHost,
                    Some(member.to_string()),
                ))?;
                log.learn_through(claimed)?;
                let bound = current_admission(group_id, member, claimed + 1)?.and_then(|a| a.token);
                if bound.as_deref() != Some(joining) {
                    return Err(replaced());
                }
            }
            _ => {}
        }
        // Admitted before (a retried join): make sure its window is closed and learned here too.
        log.close_change_window(admission.round)?;
        return Ok(admission.round);
    }
    let label = token.map_or_else(|| "admit".to_string(), |t| admission_label("admit", t));
    let round = log.append(new_value(
        &label,
        ValueKind::AddHost,
        Some(member.to_string()),
    ))?;
    log.close_change_window(round)?;
    Ok(round)
}

/// The token of the copy of pg_paxos that `member`'s current admission is bound to (see [`admit`]),
/// once this node learned every round a majority knows of: `None` when `member` is no member, or
/// no copy claimed its admission yet (added with `paxos_add_host` while nothing answered). A node
/// that does not hold the group while the token of its admission is not its own lost its data.
pub fn admitted_copy(group_id: &str, member: &str) -> Result<Option<String>> {
    let log = ReplicatedLog::open(group_id)?;
    log.learn_through(log.max_group_round(false)?)?;
    let next = store::highest_learned(group_id)? + 1;
    Ok(current_admission(group_id, member, next)?.and_then(|a| a.token))
}

/// `member`'s current admission as recorded in the log before round `before` (see
/// `paxos_model::membership::current_admission`).
fn current_admission(group_id: &str, member: &str, before: u64) -> Result<Option<Admission>> {
    let mut changes = Vec::new();
    for (round, kind, _) in store::membership_changes(group_id, before)?
        .into_iter()
        .filter(|(_, _, m)| m == member)
    {
        let token = match kind {
            ValueKind::AddHost => store::learned(group_id, round)?
                .and_then(|v| admitted_token(&v.origin).map(str::to_string)),
            _ => None,
        };
        changes.push((round, kind, token));
    }
    Ok(membership::current_admission(changes))
}

/// Whether `seed` recorded another copy of pg_paxos than this node's as the admission of `own`.
fn admitted_elsewhere(seed: &Link, group_id: &str, own: &str, limit: std::time::Duration) -> bool {
    let Ok(net) = crate::net::pool::net() else {
        return false;
    };
    let recorded = net.block_on(seed.query_within(
        limit,
        rpc::ADMITTED_TOKEN,
        &[
            Param::Text(Some(group_id.to_string())),
            Param::Text(Some(own.to_string())),
        ],
    ));
    let recorded = recorded
        .ok()
        .and_then(|rows| {
            rows.first()
                .and_then(|r| r.try_get::<_, Option<String>>(0).ok())
        })
        .flatten();
    matches!((recorded, node_identity()), (Some(theirs), Ok(ours)) if theirs != ours)
}

/// Joins through `existing`: it adds this node through the log, then this node copies the log up
/// to that round. Safe to run again after any failure.
pub fn join(group_id: &str, existing: &str, own: &str) -> Result<u64> {
    check_name("group name", group_id)?;
    validate_conninfo(existing)?;
    validate_conninfo(own)?;
    if let Some(group) = store::group(group_id)? {
        if group.self_conninfo == own {
            pgrx::notice!("this node is already a member of paxos group {group_id:?}");
            return Ok(group.applied_round);
        }
        return Err(PaxosError::DuplicateGroup {
            group: group_id.to_string(),
        });
    }
    let log = detached(group_id, own)?;
    check_reaches_self(&log, own)?;
    let seed = log.link(existing)?;
    // The member appends, closes a window of rounds and applies: several rounds' worth of work.
    let seed_limit = log.round_timeout() * 4;
    let group_param = Param::Text(Some(group_id.to_string()));
    let net = crate::net::pool::net()?;
    let remote_error = |e: LinkError| PaxosError::Remote {
        member: seed.label.clone(),
        message: e.message().to_string(),
    };
    // The group's tables must be here before this node is added: its join copies their rows.
    let tables = net
        .block_on(seed.query_within(
            seed_limit,
            rpc::REPLICATED_TABLES,
            std::slice::from_ref(&group_param),
        ))
        .map_err(remote_error)?;
    for row in &tables {
        let (Ok(name), Ok(columns)) = (row.try_get::<_, String>(0), row.try_get::<_, String>(1))
        else {
            continue;
        };
        tables::check_local_table(&name, &columns)?;
    }
    let admitted = net
        .block_on(seed.query_within(
            seed_limit,
            rpc::ADMIT,
            &[
                group_param.clone(),
                Param::Text(Some(own.to_string())),
                Param::Text(Some(node_identity()?)),
            ],
        ))
        .map_err(|e| match e {
            // Refused as the copy its connection string was admitted as, if the member recorded
            // another one.
            LinkError::Sql { ref code, .. }
                if code == NOT_IN_PREREQUISITE_STATE
                    && admitted_elsewhere(&seed, group_id, own, seed_limit) =>
            {
                PaxosError::MemberReplaced {
                    group: group_id.to_string(),
                    member: conninfo::redact(own),
                }
            }
            other => remote_error(other),
        })?;
    let round = admitted
        .first()
        .and_then(|r| r.try_get::<_, i64>(0).ok())
        .ok_or_else(|| PaxosError::Internal("admit_member returned no round".into()))?
        .max(0) as u64;
    // The member closed the window after this node's addition: copying through it, this node knows
    // every round before the first one it counts in.
    let window_end = round + CHANGE_DELAY - 1;
    let half_joined = |cause: String| PaxosError::HalfJoined {
        group: group_id.to_string(),
        round,
        cause,
    };
    // Only now, with this very copy admitted, may this node vote in the group. The rounds it counts
    // in start after the window, which the member closed before answering; until this commits,
    // this node refuses them like a member that is down. Committed through a connection of its
    // own, because proposers' requests arrive on other backends while this transaction copies.
    net.block_on(log.link(own)?.query_within(
        log.round_timeout(),
        rpc::SERVE_AS_ACCEPTOR,
        std::slice::from_ref(&group_param),
    ))
    .map_err(|e| half_joined(e.message().to_string()))?;
    // The member applies through the window and hands over its replicated tables as of one applied
    // round; this node takes that round as applied and copies the log up to it.
    let snapshot = net
        .block_on(seed.query_within(
            seed_limit,
            rpc::TABLES_SNAPSHOT,
            &[group_param.clone(), Param::Int(window_end as i64)],
        ))
        .map_err(|e| half_joined(e.message().to_string()))?;
    let applied = snapshot
        .first()
        .and_then(|r| r.try_get::<_, i64>(0).ok())
        .ok_or_else(|| half_joined("the member sent no snapshot".into()))?
        .max(0) as u64;
    let mut copies = Vec::new();
    for row in &snapshot {
        if let (Ok(Some(name)), Ok(Some(columns)), Ok(Some(rows))) = (
            row.try_get::<_, Option<String>>(1),
            row.try_get::<_, Option<String>>(2),
            row.try_get::<_, Option<String>>(3),
        ) {
            copies.push(tables::TableCopy {
                name,
                columns,
                rows,
            });
        }
    }
    let rows = net
        .block_on(seed.query_within(
            seed_limit,
            rpc::LOG_RANGE,
            &[group_param, Param::Int(0), Param::Int(applied as i64)],
        ))
        .map_err(|e| half_joined(e.message().to_string()))?;
    if !store::insert_group(group_id, own, applied)? {
        return Err(PaxosError::DuplicateGroup {
            group: group_id.to_string(),
        });
    }
    let mut copied = std::collections::BTreeSet::new();
    for row in &rows {
        let at: i64 = row.try_get(0).map_err(|e| half_joined(e.to_string()))?;
        let value = rpc::value_from_row(row, 1)
            .map_err(|e| half_joined(e.message().to_string()))?
            .ok_or_else(|| half_joined(format!("round {at} came without a value")))?;
        store::record_learned(group_id, at.max(0) as u64, &value)?;
        copied.insert(at.max(0) as u64);
    }
    // Rounds the member compacted are missing from the copy: this node refuses them as well.
    if (copied.range(1..=applied).count() as u64) < applied {
        if let Some(missing) = (1..=applied).rev().find(|r| !copied.contains(r)) {
            store::mark_compacted(group_id, missing)?;
        }
    }
    if store::learned(group_id, applied)?.is_none() {
        return Err(half_joined(format!(
            "the copied log ends before round {applied}"
        )));
    }
    tables::install_snapshot(group_id, applied, &copies)?;
    Ok(round)
}

/// Removes `member` through the log. Returns the round of the removal.
pub fn remove(group_id: &str, member: &str) -> Result<u64> {
    let log = ReplicatedLog::open(group_id)?;
    let next = store::highest_learned(group_id)? + 1;
    log.learn_through(next - 1)?;
    let members = log.current_members()?;
    if !members.iter().any(|m| m == member) {
        return Err(PaxosError::NotAMember {
            group: group_id.to_string(),
            member: conninfo::redact(member),
        });
    }
    if members.len() == 1 {
        return Err(PaxosError::InvalidArgument {
            message: format!(
                "{} is the last member of paxos group {group_id:?}",
                conninfo::redact(member)
            ),
            hint: "A group needs at least one member.",
        });
    }
    let round = log.append(new_value(
        "remove",
        ValueKind::RemoveHost,
        Some(member.to_string()),
    ))?;
    log.close_change_window(round)?;
    if member == log.group.self_conninfo {
        // Slots and log stay: this node's votes may still be needed for the rounds it voted in.
        store::delete_group(group_id)?;
    }
    Ok(round)
}

/// Removes this node through the log. A node whose removal was chosen without it learning so (its
/// own leave timed out and a later leader finished it, or another member removed it) cannot
/// remove itself again: the log says it is no member, or, once the members compacted the rounds it
/// lacks, it cannot learn them. The members' logs then tell: if they recorded its removal after
/// its last admission, it drops the group here and returns the round of that removal.
pub fn leave(group_id: &str) -> Result<u64> {
    let group = store::require_group(group_id)?;
    let failure = match remove(group_id, &group.self_conninfo) {
        Ok(round) => return Ok(round),
        Err(e) => e,
    };
    match removal_recorded_by_members(group_id, &group.self_conninfo)? {
        Some(round) => {
            store::delete_group(group_id)?;
            Ok(round)
        }
        None => Err(failure),
    }
}

/// The round of this node's removal if it is the latest change of its membership that this node or
/// any reachable member recorded. A recorded change was chosen, so a removal after every admission
/// anyone recorded is final (a later admission would be recorded by this node, which copies the
/// log when it joins).
fn removal_recorded_by_members(group_id: &str, me: &str) -> Result<Option<u64>> {
    let log = ReplicatedLog::open(group_id)?;
    let mut latest = store::membership_changes(group_id, u64::MAX)?
        .into_iter()
        .filter(|(_, _, member)| member == me)
        .map(|(round, kind, _)| (round, kind))
        .next_back();
    let links = log.links(&log.other_members()?)?;
    let net = crate::net::pool::net()?;
    let everyone = links.len();
    let answers = net.block_on(crate::paxos::round::gather(
        &links,
        rpc::MEMBERSHIP_CHANGES,
        vec![
            Param::Text(Some(group_id.to_string())),
            Param::Text(Some(me.to_string())),
        ],
        crate::paxos::round::Ask::SkippingDown,
        &|answered| answered.len() == everyone,
        log.round_timeout(),
    ));
    net.emit_warnings();
    for rows in answers.into_iter().filter_map(|(_, answer)| answer.ok()) {
        for row in rows {
            let (Ok(round), Ok(kind)) = (row.try_get::<_, i64>(0), row.try_get::<_, String>(1))
            else {
                continue;
            };
            let change = (round.max(0) as u64, ValueKind::parse(&kind)?);
            if latest.as_ref().is_none_or(|(r, _)| change.0 > *r) {
                latest = Some(change);
            }
        }
    }
    Ok(latest
        .filter(|(_, kind)| *kind == ValueKind::RemoveHost)
        .map(|(round, _)| round))
}

pub fn add(group_id: &str, member: &str) -> Result<u64> {
    store::require_group(group_id)?;
    let next = store::highest_learned(group_id)? + 1;
    if current_admission(group_id, member, next)?.is_some() {
        return Err(PaxosError::AlreadyMember {
            group: group_id.to_string(),
            member: conninfo::redact(member),
        });
    }
    // The copy of pg_paxos that answers there now, if one does within a phase: the addition
    // records it, so that its join is checked like any other (a node that lost its data after
    // joining cannot join again as this member). Nobody answering records none, as before.
    let log = ReplicatedLog::open(group_id)?;
    let token = identity_at(&log.link(member)?, log.phase_timeout())
        .ok()
        .filter(|t| !t.is_empty());
    admit(group_id, member, token.as_deref())
}
