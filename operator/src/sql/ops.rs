//! The idempotent steps the reconciler takes on members. Each can be rerun after any failure:
//! a step that already happened is recognised and skipped, so a group is never created twice and
//! a member never joins twice.

use tokio_postgres::Client;

use super::calls;
use super::members::Member;
use crate::error::{Error, Result};

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    AlreadyDone,
}

fn failed(member: &Member, action: &str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let member = member.name.clone();
    let action = action.to_string();
    move |e| Error::Sql {
        member,
        action,
        code: e.code().map(|c| c.code().to_string()),
        message: e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string()),
    }
}

/// Creates the extension if it is missing.
pub async fn ensure_extension(client: &Client, member: &Member) -> Result<()> {
    client
        .batch_execute(calls::CREATE_EXTENSION)
        .await
        .map_err(failed(member, "create the extension"))
}

/// Whether `member` belongs to `group`.
pub async fn is_member(client: &Client, member: &Member, group: &str) -> Result<bool> {
    let row = client
        .query_one(calls::GROUP_EXISTS, &[&group])
        .await
        .map_err(failed(member, "look up the group"))?;
    Ok(row.get(0))
}

/// Creates `group` with `member` as its first member, unless `member` belongs to it already.
pub async fn ensure_group(client: &Client, member: &Member, group: &str) -> Result<Outcome> {
    if is_member(client, member, group).await? {
        return Ok(Outcome::AlreadyDone);
    }
    client
        .execute(calls::CREATE_GROUP, &[&group, &member.conninfo()])
        .await
        .map_err(failed(member, "create the group"))?;
    Ok(Outcome::Done)
}

/// Has `member` join `group` through `via`, unless it belongs to it already. (A join that was
/// recorded but did not finish copying is finished by joining again, which pg_paxos allows.)
pub async fn ensure_joined(
    client: &Client,
    member: &Member,
    group: &str,
    via: &Member,
) -> Result<Outcome> {
    if is_member(client, member, group).await? {
        return Ok(Outcome::AlreadyDone);
    }
    client
        .execute(
            calls::JOIN_GROUP,
            &[&group, &via.conninfo(), &member.conninfo()],
        )
        .await
        .map_err(failed(member, "join the group"))?;
    Ok(Outcome::Done)
}

/// Whether `member`, which does not hold `group` (see [`is_member`]), lost its data: `via` (a
/// member) recorded another copy of pg_paxos as its admission, so its votes are gone and it cannot
/// join as the voter it was. (A member whose join did not finish was admitted as itself, and
/// joining again finishes it.)
pub async fn lost_its_data(
    client: &Client,
    member: &Member,
    via_client: &Client,
    via: &Member,
    group: &str,
) -> Result<bool> {
    let own: String = client
        .query_one(calls::NODE_IDENTITY, &[])
        .await
        .map_err(failed(member, "read its identity"))?
        .get(0);
    let admitted: Option<String> = via_client
        .query_one(calls::ADMITTED_TOKEN, &[&group, &member.conninfo()])
        .await
        .map_err(failed(via, "read an admission"))?
        .get(0);
    Ok(admitted.is_some_and(|token| token != own))
}

/// Has `member` leave `group`, unless it left already.
pub async fn ensure_left(client: &Client, member: &Member, group: &str) -> Result<Outcome> {
    if !is_member(client, member, group).await? {
        return Ok(Outcome::AlreadyDone);
    }
    client
        .execute(calls::LEAVE_GROUP, &[&group])
        .await
        .map_err(failed(member, "leave the group"))?;
    Ok(Outcome::Done)
}

/// Removes `departed` from `group` through `via` (a member that stays), unless it is gone
/// already: for a departing member that cannot leave by itself because it is down.
pub async fn ensure_removed(
    client: &Client,
    via: &Member,
    group: &str,
    departed: &Member,
) -> Result<Outcome> {
    let seen = observe_members(client, via, group).await?;
    if !seen.iter().any(|m| m.conninfo == departed.conninfo()) {
        return Ok(Outcome::AlreadyDone);
    }
    client
        .execute(calls::REMOVE_HOST, &[&group, &departed.conninfo()])
        .await
        .map_err(failed(via, "remove a departed member"))?;
    Ok(Outcome::Done)
}

/// Creates a table from its column definitions if it is missing on `member`.
pub async fn ensure_table(
    client: &Client,
    member: &Member,
    table: &str,
    columns: Option<&str>,
) -> Result<Outcome> {
    let qualified = calls::qualified_table(table)?;
    let exists: bool = client
        .query_one(calls::TABLE_EXISTS, &[&qualified])
        .await
        .map_err(failed(member, "look up the table"))?
        .get(0);
    if exists {
        return Ok(Outcome::AlreadyDone);
    }
    let Some(columns) = columns else {
        return Err(Error::InvalidSpec(format!(
            "table {qualified} does not exist on member {} and the ReplicatedTable gives no columns to create it with",
            member.name
        )));
    };
    // One statement over the extended protocol: the server refuses a second one.
    client
        .execute(&calls::create_table(&qualified, columns)?, &[])
        .await
        .map_err(failed(member, "create the table"))?;
    Ok(Outcome::Done)
}

/// Replicates `table` in `group` (through `member`), unless it is replicated already.
pub async fn ensure_replicated(
    client: &Client,
    member: &Member,
    group: &str,
    table: &str,
) -> Result<Outcome> {
    let qualified = calls::qualified_table(table)?;
    let replicated: bool = client
        .query_one(calls::TABLE_REPLICATED, &[&group, &qualified])
        .await
        .map_err(failed(member, "look up the replicated tables"))?
        .get(0);
    if replicated {
        return Ok(Outcome::AlreadyDone);
    }
    client
        .execute(calls::REPLICATE_TABLE, &[&group, &qualified])
        .await
        .map_err(failed(member, "replicate the table"))?;
    Ok(Outcome::Done)
}

/// Compacts `group`'s log through `member` (every member must answer); returns the round the
/// log is compacted through.
pub async fn compact_log(client: &Client, member: &Member, group: &str) -> Result<i64> {
    let row = client
        .query_one(calls::COMPACT_LOG, &[&group])
        .await
        .map_err(failed(member, "compact the log"))?;
    Ok(row.get(0))
}

/// A group as one member sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupObservation {
    pub max_round: i64,
    pub members: Vec<MemberObservation>,
}

/// One member in a group's status, by the connection string it is known by.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberObservation {
    pub conninfo: String,
    pub is_self: bool,
    pub reachable: bool,
    pub node_id: Option<String>,
    pub applied_round: Option<i64>,
    /// The highest round the member learned: the member with the highest knows the latest
    /// membership (one that was down may not have learned the changes made meanwhile).
    pub learned_round: Option<i64>,
}

/// The group's highest round and its members' health, as `member` sees them.
pub async fn observe(client: &Client, member: &Member, group: &str) -> Result<GroupObservation> {
    let max_round: i64 = client
        .query_one(calls::MAX_ROUND, &[&group])
        .await
        .map_err(failed(member, "read the highest round"))?
        .get(0);
    let members = observe_members(client, member, group).await?;
    Ok(GroupObservation { max_round, members })
}

async fn observe_members(
    client: &Client,
    member: &Member,
    group: &str,
) -> Result<Vec<MemberObservation>> {
    let rows = client
        .query(calls::MEMBERS, &[&group])
        .await
        .map_err(failed(member, "read the members"))?;
    Ok(rows
        .iter()
        .map(|r| MemberObservation {
            conninfo: r.get(0),
            is_self: r.get(1),
            reachable: r.get(2),
            node_id: r.get(3),
            applied_round: r.get(4),
            learned_round: r.get(5),
        })
        .collect())
}
