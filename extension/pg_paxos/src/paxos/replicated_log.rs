//! The Multi-Paxos log of one group as this node sees it: deciding rounds, appending, learning and
//! applying in order. Storage goes through `store` (SPI), the network through `round::drive`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use paxos_core::backoff::BackoffPolicy;
use paxos_core::{Ballot, Campaign, Leadership, Proposer, Request};

use crate::error::{PaxosError, Result};
use crate::guc;
use crate::net::pool::{net, Link, Net, Param};
use crate::net::rpc;
use crate::paxos::apply;
use crate::paxos::batching;
use crate::paxos::leadership::{self, LeaderBallot};
use crate::paxos::lease;
use crate::paxos::round::{self, Election, RoundFailure, Timing};
use crate::paxos::round_claims;
use crate::store::{self, Group};
use paxos_model::conninfo::{self, Defaults};
use paxos_model::membership::{configurations_from, members_at, CHANGE_DELAY};
use paxos_model::value::{LogValue, ValueKind};

mod lease_read;

thread_local! {
    static PROPOSAL_SEQ: Cell<u64> = const { Cell::new(0) };
    /// Per group, a round up to which this backend saw the log without gaps: gap scans start here.
    static CONTIGUOUS_HINT: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

/// A proposer id unique across nodes, backends, restarts and calls: ballots built from it never
/// collide (see `paxos_core::Ballot`).
fn unique_proposer_id() -> (String, u64) {
    let seq = PROPOSAL_SEQ.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    // SAFETY: plain reads of process-global values set at backend start.
    let (started, pid) = unsafe { (pgrx::pg_sys::MyStartTimestamp, pgrx::pg_sys::MyProcPid) };
    let id = format!("{}/{:x}/{}/{}", guc::node_id(), started, pid, seq);
    let seed = (started as u64).rotate_left(17) ^ ((pid as u64) << 32) ^ seq;
    (id, seed)
}

/// Where decided values are written into this node's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// In transactions of their own, through the loopback connection (see `record_chosen`).
    Separately,
    /// In the caller's transaction, which must commit right after, with no network call in
    /// between (or learn messages for those rounds would wait on its uncommitted rows).
    InThisTransaction,
}

pub struct ReplicatedLog {
    pub group: Group,
    defaults: Defaults,
    net: Net,
    timing: Timing,
    connect_timeout: Duration,
    retry_interval: Duration,
}

impl ReplicatedLog {
    pub fn open(group_id: &str) -> Result<Self> {
        let group = store::require_group(group_id)?;
        Self::for_group(group)
    }

    pub fn for_group(group: Group) -> Result<Self> {
        let round_timeout = Duration::from_millis(guc::millis(&guc::ROUND_TIMEOUT_MS));
        Ok(ReplicatedLog {
            group,
            defaults: store::connection_defaults()?,
            net: net()?,
            timing: Timing {
                round_timeout,
                phase_timeout: (round_timeout / 4)
                    .clamp(Duration::from_millis(10), Duration::from_secs(2)),
            },
            connect_timeout: Duration::from_millis(guc::millis(&guc::CONNECT_TIMEOUT_MS)),
            retry_interval: Duration::from_millis(guc::millis(&guc::MEMBER_RETRY_MS)),
        })
    }

    pub fn round_timeout(&self) -> Duration {
        self.timing.round_timeout
    }

    /// How long one request to a member may take before it counts as not answering.
    pub fn phase_timeout(&self) -> Duration {
        self.timing.phase_timeout
    }

    pub fn id(&self) -> &str {
        &self.group.id
    }

    /// A handle on a member given by its connection string.
    pub fn link(&self, conninfo: &str) -> Result<Link> {
        link_to(
            &self.net,
            conninfo,
            &self.defaults,
            self.connect_timeout,
            self.retry_interval,
        )
    }

    /// Handles on `members`, given by their connection strings.
    pub fn links(&self, members: &[String]) -> Result<Vec<Link>> {
        members.iter().map(|m| self.link(m)).collect()
    }

    pub fn members_at(&self, round: u64) -> Result<Vec<String>> {
        Ok(members_at(
            &store::membership_changes(self.id(), round)?,
            round,
        ))
    }

    /// The members after every change this node knows of.
    pub fn current_members(&self) -> Result<Vec<String>> {
        self.members_at(u64::MAX)
    }

    /// [`ReplicatedLog::current_members`] without this node.
    pub fn other_members(&self) -> Result<Vec<String>> {
        let mut members = self.current_members()?;
        members.retain(|m| *m != self.group.self_conninfo);
        Ok(members)
    }

    /// The value chosen in `round`: known locally, or found by running Paxos with `proposal` (a no-op
    /// when `None`, which closes an abandoned round without changing anything).
    pub fn decide(&self, round: u64, proposal: Option<LogValue>) -> Result<LogValue> {
        self.decide_recorded(round, proposal, Record::Separately)
    }

    /// [`ReplicatedLog::decide`], recording the chosen value as `record` says. A proposal in the
    /// first round this node has not learned makes the node campaign for leadership first, unless
    /// it leads already: later proposals then need phase 2 only.
    pub fn decide_recorded(
        &self,
        round: u64,
        proposal: Option<LogValue>,
        record: Record,
    ) -> Result<LogValue> {
        if let Some(value) = proposal.as_ref() {
            if let Some(chosen) = self.lead_from(round, value, record)? {
                return Ok(chosen);
            }
        }
        self.decide_one(round, proposal, None, record)
    }

    /// Decides `round`, handed out by this node's leadership under `ballot` (see
    /// `leadership::claim`), with phase 2 only; both phases if that is refused.
    pub fn decide_claimed(
        &self,
        round: u64,
        value: LogValue,
        ballot: LeaderBallot,
        record: Record,
    ) -> Result<LogValue> {
        self.decide_one(round, Some(value), Some(ballot), record)
    }

    /// [`ReplicatedLog::decide_many`] for one round.
    fn decide_one(
        &self,
        round: u64,
        proposal: Option<LogValue>,
        claimed: Option<LeaderBallot>,
        record: Record,
    ) -> Result<LogValue> {
        self.decide_many(vec![(round, proposal)], claimed, record)?
            .pop()
            .ok_or_else(|| PaxosError::Internal(format!("round {round} was not decided")))
    }

    /// Campaigns for leadership from `round` on when this node does not lead and `round` is the
    /// first round it has not learned. Once elected it proposes, with phase 2 only, the values the
    /// campaign recovered, `value` in `round`, and no-ops in the rounds between, and returns what
    /// was chosen in `round`. `None` when no campaign ran or it was lost (the caller proposes with
    /// both phases).
    fn lead_from(&self, round: u64, value: &LogValue, record: Record) -> Result<Option<LogValue>> {
        let promised = store::range_promise(self.id())?.map(|r| r.ballot);
        if leadership::holds(self.id(), promised.as_ref())
            || round != store::highest_learned(self.id())? + 1
        {
            return Ok(None);
        }
        let seen = promised.map_or(0, |b| b.number);
        let Some(campaigning) = leadership::Campaigning::begin(self.id(), seen) else {
            return Ok(None);
        };
        let lb = campaigning.ballot();
        let members = self.links(&self.members_at(round)?)?;
        let campaign = Campaign::new(round, (0..members.len()).collect(), leadership::ballot(lb));
        let election = self.net.block_on(round::campaign(
            self.id(),
            &members,
            campaign,
            self.timing.phase_timeout,
        ));
        self.net.emit_warnings();
        let recovered = match election {
            Election::Lost { seen } => {
                campaigning.end(None, seen);
                return Ok(None);
            }
            Election::Won { recovered } => recovered,
        };
        // Rounds of this window have the membership the campaign used; recovered rounds beyond it
        // are left to both-phase proposers that learn their membership first.
        let window_end = round + CHANGE_DELAY - 1;
        let last = recovered
            .range(round..=window_end)
            .next_back()
            .map_or(round, |(r, _)| *r);
        let mut led = Leadership::new(lb, round);
        let mut proposals = Vec::new();
        for r in round..=last {
            led.claim(r);
            let proposal = match recovered.get(&r) {
                Some(v) => Some(v.clone()),
                None if r == round => Some(value.clone()),
                None => None,
            };
            proposals.push((r, proposal));
        }
        if let Some((beyond, _)) = recovered.range(window_end + 1..).next_back() {
            led.reserve_through(*beyond);
        }
        // A recovered vote may be a chosen value that members read already.
        if let Some((highest, _)) = recovered.iter().next_back() {
            leadership::expose_through(self.id(), *highest);
        }
        campaigning.end(Some(led), lb.number);
        let chosen = self.decide_many(proposals, Some(lb), record)?;
        Ok(chosen.into_iter().next())
    }

    /// Decides several rounds at once, each its own Paxos instance, all in flight together. The
    /// caller makes sure the membership of every round is known (see `prepare_to_propose`).
    /// Rounds go with phase 2 only under `claimed` (the caller claimed them all) or under a leader
    /// ballot this node may claim for them; otherwise with both phases. Returns the chosen values
    /// in the order of `proposals`.
    fn decide_many(
        &self,
        proposals: Vec<(u64, Option<LogValue>)>,
        claimed: Option<LeaderBallot>,
        record: Record,
    ) -> Result<Vec<LogValue>> {
        let mut chosen: Vec<Option<LogValue>> = Vec::with_capacity(proposals.len());
        let mut runs = Vec::new();
        for (i, (round, proposal)) in proposals.into_iter().enumerate() {
            if let Some(value) = store::learned(self.id(), round)? {
                chosen.push(Some(value));
                continue;
            }
            chosen.push(None);
            let members = self.members_at(round)?;
            if members.is_empty() {
                return Err(PaxosError::InvalidArgument {
                    message: format!(
                        "round {round} of paxos group {:?} has no members",
                        self.id()
                    ),
                    hint: "Rounds start at 1.",
                });
            }
            let links = self.links(&members)?;
            let self_index = members.iter().position(|m| *m == self.group.self_conninfo);
            let (proposer_id, seed) = unique_proposer_id();
            let own = proposal.unwrap_or_else(|| LogValue {
                origin: proposer_id.clone(),
                kind: ValueKind::Noop,
                body: None,
            });
            let policy = BackoffPolicy {
                base_ms: 2,
                max_ms: 100,
            };
            let leader = claimed.or_else(|| leadership::claim(self.id(), round));
            let own_origin = own.origin.clone();
            let mut proposer = Proposer::new(
                round,
                (0..members.len()).collect(),
                proposer_id,
                own,
                seed,
                policy,
            );
            proposer.observe_number(store::promised_number(self.id(), round)?);
            runs.push((i, round, links, self_index, proposer, leader, own_origin));
        }
        if runs.is_empty() {
            return Ok(chosen.into_iter().flatten().collect());
        }
        let group = self.id();
        let timing = self.timing;
        if runs.len() > 1 {
            // Every round of a window has the same members: connect to each once, up front, so
            // the window's requests share those connections instead of each opening its own.
            let links: Vec<Link> = runs[0].2.clone();
            self.net
                .block_on(futures::future::join_all(links.iter().map(Link::warm_up)));
        }
        let outcomes = self
            .net
            .block_on(futures::future::join_all(runs.into_iter().map(
                |(i, round, links, self_index, proposer, leader, own_origin)| async move {
                    let ballot = leader.map(leadership::ballot);
                    let outcome =
                        round::drive(group, &links, self_index, proposer, ballot, timing).await;
                    (i, round, leader, own_origin, outcome)
                },
            )));
        self.net.emit_warnings();
        let mut decided = Vec::with_capacity(outcomes.len());
        let mut failure = None;
        let mut foreign = Vec::new();
        for (i, round, leader, own_origin, outcome) in outcomes {
            // Another value in a round this node claimed under its leader ballot means a newer
            // leader chose it: under a current leadership the round could hold only ours.
            let lost_leadership = match &outcome {
                Ok(d) => d.leader_refused || d.value.origin != own_origin,
                Err(_) => true,
            };
            if let Some(lb) = leader.filter(|_| lost_leadership) {
                leadership::relinquish(self.id(), lb, lb.number);
            }
            match outcome {
                Ok(d) => {
                    if record == Record::InThisTransaction && d.value.origin != own_origin {
                        foreign.push((round, d.value.clone()));
                    } else {
                        decided.push((round, d.value.clone()));
                    }
                    chosen[i] = Some(d.value);
                }
                Err(f) => failure = failure.or(Some((round, f))),
            }
        }
        // Values of other proposers are recorded on their own even when the caller records its own
        // in its transaction: the caller is likely to fail because of them, and the next attempt
        // must find them learned.
        self.record_chosen(&foreign)?;
        match record {
            Record::Separately => self.record_chosen(&decided)?,
            Record::InThisTransaction => {
                for (round, value) in &decided {
                    store::record_learned(self.id(), *round, value)?;
                }
            }
        }
        if let Some((round, f)) = failure {
            return Err(self.failure(round, "choose a value", f));
        }
        Ok(chosen.into_iter().flatten().collect())
    }

    /// Records chosen values in this node's log in transactions of their own, through the loopback
    /// connection: the caller's transaction must never hold uncommitted log rows, or learn messages
    /// from other proposers would block on them, and every request queued behind those on the same
    /// connections with them (a distributed stall that only round timeouts would break).
    fn record_chosen(&self, decided: &[(u64, LogValue)]) -> Result<()> {
        if decided.is_empty() {
            return Ok(());
        }
        let link = self.link(&self.group.self_conninfo)?;
        let learns = decided.iter().map(|(round, value)| {
            let learn = Request::Learn {
                round: *round,
                value: value.clone(),
            };
            let link = &link;
            let limit = self.timing.round_timeout;
            async move {
                tokio::time::timeout(limit, rpc::send(link, self.id(), &learn))
                    .await
                    .is_ok_and(|sent| sent.is_ok())
            }
        });
        let sent = self.net.block_on(futures::future::join_all(learns));
        for ((round, value), ok) in decided.iter().zip(sent) {
            if !ok {
                // Without a loopback connection (this node's own address is wrong, or it is out of
                // connections) the value is still recorded, in this transaction.
                store::record_learned(self.id(), *round, value)?;
            }
        }
        Ok(())
    }

    fn failure(&self, round: u64, action: &'static str, failure: RoundFailure) -> PaxosError {
        match failure {
            RoundFailure::NoMajority {
                reachable,
                total,
                last_error,
            } => PaxosError::NoMajority {
                group: self.id().to_string(),
                action,
                answered: reachable,
                total,
                last_error,
            },
            RoundFailure::Timeout {
                attempts,
                answered,
                total,
            } => PaxosError::RoundTimeout {
                group: self.id().to_string(),
                round,
                millis: self.timing.round_timeout.as_millis() as u64,
                attempts,
                answered,
                total,
            },
        }
    }

    /// Learns every round up to `round` this node does not know yet, oldest first (a round nobody
    /// finished is closed with a no-op).
    pub fn learn_through(&self, round: u64) -> Result<()> {
        let hint = CONTIGUOUS_HINT.with(|h| h.borrow().get(self.id()).copied());
        let mut from = self.group.applied_round + 1;
        if let Some(hint) = hint.filter(|&h| h >= from && h <= round) {
            // A hint left by a transaction that rolled back is detected by its missing round.
            if store::learned(self.id(), hint)?.is_some() {
                from = hint + 1;
            }
        }
        // Rounds of one window only depend on rounds before it (see CHANGE_DELAY): decide each
        // window's missing rounds together.
        let mut missing = store::unlearned_rounds(self.id(), from, round)?;
        let mut rest = missing.as_slice();
        while let Some(&first) = rest.first() {
            let end = rest.partition_point(|&r| r < first + CHANGE_DELAY);
            let decided = self.decide_many(
                rest[..end].iter().map(|&r| (r, None)).collect(),
                None,
                Record::Separately,
            );
            if let Err(e) = decided {
                // A compaction of this node may have committed since the rounds were listed: it
                // dropped only rounds this node had applied, which every acceptor now refuses.
                // Go on after them; with no compaction past `first`, the failure stands.
                let compacted = store::compacted_through(self.id())?;
                if compacted < first {
                    return Err(e);
                }
                missing = store::unlearned_rounds(self.id(), compacted + 1, round)?;
                rest = missing.as_slice();
                continue;
            }
            rest = &rest[end..];
        }
        CONTIGUOUS_HINT.with(|h| h.borrow_mut().insert(self.id().to_string(), round));
        Ok(())
    }

    /// Makes a membership change chosen in `round` take effect for every later proposal: the rounds
    /// of its delay window are learned, or closed with no-ops.
    pub fn close_change_window(&self, round: u64) -> Result<()> {
        self.learn_through(round + CHANGE_DELAY - 1)
    }

    /// Learns what a proposal in `round` must know first: every round whose membership changes
    /// could affect `round`.
    pub fn prepare_to_propose(&self, round: u64) -> Result<()> {
        self.learn_through(round.saturating_sub(CHANGE_DELAY))
    }

    /// True while this node leads the group as far as it knows (see `leadership::holds`).
    pub fn leads(&self) -> Result<bool> {
        let promised = store::range_promise(self.id())?.map(|r| r.ballot);
        Ok(leadership::holds(self.id(), promised.as_ref()))
    }

    /// Appends `value` in the first round where it can be chosen and returns that round. Backends of
    /// this node claim distinct rounds: from the node's leadership when it leads (phase 2 only,
    /// several rounds in flight), else from `round_claims`; losing a round to another node just
    /// means learning its value and claiming another.
    pub fn append(&self, value: LogValue) -> Result<u64> {
        let started = std::time::Instant::now();
        loop {
            let floor = store::highest_learned(self.id())?.max(self.group.applied_round) + 1;
            let claim = if self.leads()? {
                leadership::claim_next(self.id(), floor, CHANGE_DELAY)
            } else {
                None
            };
            let (round, chosen) = match claim {
                Some((round, ballot)) => {
                    self.prepare_to_propose(round)?;
                    let proposal = vec![(round, Some(value.clone()))];
                    let chosen = self.decide_many(proposal, Some(ballot), Record::Separately)?;
                    (round, chosen.into_iter().next())
                }
                None => {
                    let round = round_claims::claim(self.id(), floor, CHANGE_DELAY);
                    self.prepare_to_propose(round)?;
                    (round, Some(self.decide(round, Some(value.clone()))?))
                }
            };
            let chosen = chosen
                .ok_or_else(|| PaxosError::Internal(format!("round {round} was not decided")))?;
            if chosen.origin == value.origin {
                return Ok(round);
            }
            if started.elapsed() > self.timing.round_timeout {
                return Err(PaxosError::RoundTimeout {
                    group: self.id().to_string(),
                    round,
                    millis: self.timing.round_timeout.as_millis() as u64,
                    attempts: 0,
                    answered: 0,
                    total: 0,
                });
            }
        }
    }

    /// A round at least as high as every round chosen before this call: the highest round in which
    /// any member of a majority voted. Every chosen round has a voter in each majority of its
    /// membership, so a majority of every membership that may still be choosing rounds is asked.
    pub fn max_group_round(&self, accepted_only: bool) -> Result<u64> {
        let learned = store::highest_learned(self.id())?;
        let own = store::highest_known_round(self.id(), accepted_only)?;
        self.max_group_round_from(learned, own, accepted_only)
    }

    /// [`ReplicatedLog::max_group_round`], given this node's highest learned round and its own
    /// answer (the highest round it voted in, or also promised in without `accepted_only`).
    fn max_group_round_from(
        &self,
        learned: u64,
        own_highest: u64,
        accepted_only: bool,
    ) -> Result<u64> {
        self.read_index_from(learned, own_highest, accepted_only, None)
            .map(|(highest, _)| highest)
    }

    /// [`ReplicatedLog::max_group_round_from`]; with `leader` (this node's leader ballot), each
    /// member also tells the highest ballot it promised for its range or for a round after this
    /// node's applied round. The flag is true when none of the majority promised above `leader`.
    fn read_index_from(
        &self,
        learned: u64,
        own_highest: u64,
        accepted_only: bool,
        leader: Option<&Ballot>,
    ) -> Result<(u64, bool)> {
        let quorum = self.quorum_after(learned)?;
        let applied = self.group.applied_round;
        let above =
            |promise: Option<Ballot>| leader.is_some_and(|b| promise.is_some_and(|p| p > *b));
        // This node answers for itself without a round trip.
        let own = quorum
            .members
            .iter()
            .position(|m| *m == self.group.self_conninfo);
        let mut highest = learned;
        let mut unchallenged = leader.is_some();
        let mut ok = BTreeSet::new();
        if let Some(i) = own {
            highest = highest.max(own_highest);
            if leader.is_some() && above(store::highest_promise_above(self.id(), applied)?) {
                unchallenged = false;
            }
            ok.insert(i);
        }
        let others: Vec<usize> = (0..quorum.members.len())
            .filter(|&i| Some(i) != own)
            .collect();
        let mut last_error = None;
        if !quorum.enough(&ok) {
            let links = self.links(
                &others
                    .iter()
                    .map(|&i| quorum.members[i].clone())
                    .collect::<Vec<_>>(),
            )?;
            let (sql, params) = match leader {
                Some(_) => (
                    rpc::READ_INDEX,
                    vec![
                        Param::Text(Some(self.id().to_string())),
                        Param::Int(applied as i64),
                    ],
                ),
                None => (
                    rpc::HIGHEST_ROUND,
                    vec![
                        Param::Text(Some(self.id().to_string())),
                        Param::Bool(accepted_only),
                    ],
                ),
            };
            let with_own = |answered: &BTreeSet<usize>| {
                let mut all = ok.clone();
                all.extend(answered.iter().map(|&j| others[j]));
                quorum.enough(&all)
            };
            let answers = self.net.block_on(round::gather(
                &links,
                sql,
                params,
                // Reads ask often: one member more than needed would double their cost.
                round::Ask::Fastest {
                    hedge: round::hedge_delay(&self.timing),
                },
                &with_own,
                self.timing.round_timeout,
            ));
            self.net.emit_warnings();
            for (j, answer) in answers {
                match answer.and_then(|rows| rpc::decode_read_index(&rows, leader.is_some())) {
                    Ok((round, promise)) => {
                        ok.insert(others[j]);
                        highest = highest.max(round);
                        if above(promise) {
                            unchallenged = false;
                        }
                    }
                    Err(e) => last_error = Some(format!("{}: {}", links[j].label, e.message())),
                }
            }
        }
        if !quorum.enough(&ok) {
            return Err(quorum.no_majority(self.id(), "read the highest round", &ok, last_error));
        }
        Ok((highest, unchallenged))
    }

    /// Every member of every membership that may be choosing rounds after `learned`: a majority of
    /// each must answer for a read index (or grant a lease).
    fn quorum_after(&self, learned: u64) -> Result<Quorum> {
        let changes = store::membership_changes(self.id(), u64::MAX)?;
        let configs = configurations_from(&changes, learned + 1);
        let mut members: Vec<String> = Vec::new();
        for m in configs.iter().flatten() {
            if !members.contains(m) {
                members.push(m.clone());
            }
        }
        let configs = configs
            .iter()
            .map(|c| {
                c.iter()
                    .filter_map(|m| members.iter().position(|x| x == m))
                    .collect()
            })
            .collect();
        Ok(Quorum { members, configs })
    }

    /// Before a strong read: applies every round chosen before this call (the read index: the
    /// highest round any member of a majority voted in).
    /// True when it applied rounds (the transaction then wrote the applied round and their rows).
    pub fn catch_up_for_read(group_id: &str) -> Result<bool> {
        Self::catch_up(group_id, false)
    }

    /// Before a transaction's first write: applies every round chosen before this call (on the
    /// leader, every round it learned: see `leadership::holds` and `transaction::begin_write`),
    /// then locks the applied round until the transaction ends and returns it.
    pub fn catch_up_for_write(group_id: &str) -> Result<u64> {
        Self::catch_up(group_id, true)?;
        let applied = store::lock_applied_round(group_id)?;
        // Rounds learned but not applied: batches that this node's writers added until the lock
        // was granted, or batches whose rows reads found visible already (`apply_for_read` leaves
        // those, also on a node that no longer leads, e.g. after a restart). A write runs on the
        // applied state and proposes the round after it: apply them, now that no writer runs.
        let mut through = store::highest_learned(group_id)?;
        if through > applied && leadership::current(group_id).is_none() {
            // Without leadership, only what is learned here already: filling a gap would run both
            // phases in rounds the leader may be deciding with phase 2.
            if let Some(&gap) = store::unlearned_rounds(group_id, applied + 1, through)?.first() {
                through = gap - 1;
            }
        }
        if through > applied {
            let applied = Self::open(group_id)?.apply_log(through)?;
            apply::check_not_diverged(group_id)?;
            return Ok(applied);
        }
        Ok(applied)
    }

    /// Before the first write of a transaction of blind inserts: the commit-chain epoch it joins
    /// (see `batching`), holding the group's writer lock shared until it ends. `None` when this
    /// node does not lead the group, or rounds this transaction would not see are pending: it
    /// then writes alone (see `catch_up_for_write`).
    pub fn join_batch(group_id: &str) -> Result<Option<u64>> {
        if leadership::current(group_id).is_none() {
            return Ok(None);
        }
        // The common case under load: the chain runs and holds, and the lock is free to share.
        if batching::chain_runs(group_id) && store::try_lock_writers_shared(group_id) {
            if let Some(epoch) = batching::joins_running_chain(group_id) {
                return Ok(Some(epoch));
            }
        }
        let covered = |state: &store::ReadState| -> Result<Option<u64>> {
            apply::refuse_diverged(group_id, state.diverged.clone())?;
            if !leadership::holds(group_id, state.range_promise.as_ref()) {
                return Ok(None);
            }
            Ok(batching::join(
                group_id,
                state.group.applied_round,
                state.highest_learned,
            ))
        };
        // A first look without the lock (unless the chain runs, the common case), so that a
        // transaction that must apply rounds first does not take the lock shared and then need
        // it alone.
        if !batching::chain_runs(group_id)
            && covered(&store::read_state_without_votes(group_id)?)?.is_none()
        {
            return Ok(None);
        }
        // Again under the lock: only now can no transaction outside the chain move the state.
        let state = store::read_state_with_writers_shared(group_id)?;
        match covered(&state)? {
            Some(epoch) => Ok(Some(epoch)),
            None if store::try_lock_writers_exclusive(group_id)? => Ok(None),
            None => Err(PaxosError::BatchFailed {
                group: group_id.to_string(),
                sqlstate: pgrx::pg_sys::errcodes::PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
                cause: "rounds of another node arrived while inserts of this node were running"
                    .into(),
            }),
        }
    }

    /// Applies every round up to the read index, or up to the rounds it learned when
    /// `leader_may_trust_learned` and this node leads, or under a leader lease (see `lease_read`).
    /// This node's own facts come from one statement, and with nothing to apply no lock is taken
    /// (a read stays a read: no transaction id, no flush at commit). A node where an entry fails
    /// on the way refuses to go on. True when it applied rounds.
    fn catch_up(group_id: &str, leader_may_trust_learned: bool) -> Result<bool> {
        // A read under a lease needs no vote of this node's: leave that out of the statement.
        let may_lease = !leader_may_trust_learned
            && lease::enabled()
            && leadership::current(group_id).is_some();
        let state = if may_lease {
            store::read_state_without_votes(group_id)?
        } else {
            store::read_state(group_id)?
        };
        apply::refuse_diverged(group_id, state.diverged)?;
        let leading = leadership::holds(group_id, state.range_promise.as_ref());
        let (learned, accepted) = (state.highest_learned, state.highest_accepted);
        let log = Self::for_group(state.group)?;
        if leader_may_trust_learned && leading {
            return log.apply_through(learned);
        }
        if leading && may_lease {
            return log.read_under_lease(learned, accepted);
        }
        log.apply_through_read_index(learned, accepted)
    }

    /// For a read: applies the log through the read index. `accepted` is this node's highest
    /// vote, read here when `None`.
    fn apply_through_read_index(&self, learned: u64, accepted: Option<u64>) -> Result<bool> {
        let accepted = match accepted {
            Some(round) => round,
            None => store::highest_known_round(self.id(), true)?,
        };
        // Only with a round of its own handed out past what it learned does the leader need the
        // members' promises (see `apply_for_read_as_leader`); an idle read asks the cheaper way.
        let leader = leadership::current(self.id())
            .filter(|&(_, _, next_free)| next_free > learned + 1)
            .map(|(held, _, _)| leadership::ballot(held));
        let (top, unchallenged) = self.read_index_from(learned, accepted, true, leader.as_ref())?;
        if unchallenged {
            return self.apply_for_read_as_leader(top);
        }
        self.apply_for_read(top)
    }

    /// For a read on the leader, once a majority confirmed that none of them promised a ballot
    /// above its own (for its range or any round after its applied round), or under a running
    /// lease: applies the log through `top`, except for the rounds this leadership handed out
    /// that are still in flight and what follows them.
    ///
    /// Why that is enough: a write whose client got its answer before this read began is either
    /// this node's own (a batched insert, a member's insert run here, or a write alone, which
    /// commit here before they answer, and a write alone applies every round before its own
    /// first), so the read sees it; or a value chosen by another proposer. That one needed a
    /// majority promise above this leader's ballot before it was chosen, which every majority
    /// meets at one member, and promises only grow: the read would have been told (a lease is
    /// granted only where no such promise was made, and keeps any from being made). Nor may
    /// the read miss what another node read: members apply in log order and learn this
    /// leadership's rounds from its learn messages (or by a phase 1 above it, which the read
    /// would have been told of), and a round whose learn messages may have left, or whose value
    /// the campaign recovered, is exposed (see `leadership::expose_through`): the read waits for
    /// it to be recorded here. So the first round still unlearned, when it is not exposed, was
    /// known to nobody when the read began, and every later round is this leader's own, none
    /// answered before an earlier round was decided, except batched inserts, which commute and
    /// are visible here through their own commits. The read does not wait for rounds in flight
    /// (it once waited up to a batch's round trip).
    pub(super) fn apply_for_read_as_leader(&self, top: u64) -> Result<bool> {
        let Some((_, from, next_free)) = leadership::current(self.id()) else {
            return self.apply_for_read(top);
        };
        let applied = self.group.applied_round;
        if apply::known_visible(&self.group, top) {
            return Ok(false);
        }
        if top >= next_free {
            // A vote beyond the rounds this leadership handed out: not one of its own.
            return self.apply_for_read(top);
        }
        // Read after the read began: rounds exposed later were known to nobody before it.
        let exposed = leadership::exposed_through(self.id());
        self.await_learned(from.max(applied + 1), exposed.min(top))?;
        let through = match store::unlearned_rounds(self.id(), applied + 1, top)?.first() {
            Some(&gap) if gap >= from && gap > exposed => gap - 1,
            // A gap before this leadership's range, or a round that others may know already and
            // that is not recorded here yet: learn it as any reader does.
            Some(_) => return self.apply_for_read(top),
            None => top,
        };
        if apply::effects_visible(&self.group, through)? {
            return Ok(false);
        }
        self.apply_through(through)
    }

    /// For a read: applies the log through `top`, unless what those rounds wrote is visible here
    /// already (see `apply::effects_visible`): then the read waits for no writer of this node.
    fn apply_for_read(&self, top: u64) -> Result<bool> {
        if apply::known_visible(&self.group, top) {
            return Ok(false);
        }
        self.await_own_rounds(top)?;
        if apply::effects_visible(&self.group, top)? {
            return Ok(false);
        }
        self.apply_through(top)
    }

    /// On the leader, before a read learns rounds through `top`: waits until the rounds of its
    /// range through `top` that its leadership handed out are learned, for at most one phase
    /// timeout. Learning them meanwhile would run both phases on rounds its own backends are
    /// deciding with phase 2: it would raise promises over them (the leader's accepts are then
    /// refused and it steps down) and contest its own lease. A round whose proposer is gone is
    /// learned with both phases once the wait ends.
    fn await_own_rounds(&self, top: u64) -> Result<()> {
        let Some((_, from, next_free)) = leadership::current(self.id()) else {
            return Ok(());
        };
        let first = from.max(self.group.applied_round + 1);
        self.await_learned(first, top.min(next_free.saturating_sub(1)))
    }

    /// Waits until every round from `first` through `last` is learned here, for at most one phase
    /// timeout.
    fn await_learned(&self, first: u64, last: u64) -> Result<()> {
        if first > last {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + self.timing.phase_timeout;
        let mut missing = store::unlearned_rounds(self.id(), first, last)?;
        // Later looks cover only the stretch still missing.
        while let (Some(&low), Some(&high)) = (missing.first(), missing.last()) {
            if std::time::Instant::now() >= deadline {
                break;
            }
            // SAFETY: a plain sleep of this backend; interrupts are processed right after.
            unsafe { pgrx::pg_sys::pg_usleep(250) };
            pgrx::check_for_interrupts!();
            missing = store::unlearned_rounds(self.id(), low, high)?;
        }
        Ok(())
    }

    /// Applies the log through `top`, if it is behind. True when it applied rounds.
    fn apply_through(&self, top: u64) -> Result<bool> {
        if self.group.applied_round >= top {
            return Ok(false);
        }
        self.apply_log(top)?;
        apply::check_not_diverged(self.id())?;
        Ok(true)
    }

    /// Learns and applies every round up to `max_round`, in order, exactly once on this node: the
    /// applied round advances in the same transaction as the entries it covers, under a row lock.
    /// Returns the applied round: exact when it had rounds to apply, else the one read when the log
    /// was opened (a lower bound: another transaction may have applied further since). An entry
    /// that fails here stops the group on this node (see `apply`): the applied round stays before
    /// it, the failure is recorded and reported.
    pub fn apply_log(&self, max_round: u64) -> Result<u64> {
        apply::check_not_diverged(self.id())?;
        if self.group.applied_round >= max_round {
            // Nothing to apply: no row lock, so a read stays a read (no transaction id, no flush
            // at commit). The applied round never goes back, so this reading is not too high.
            return Ok(self.group.applied_round);
        }
        self.learn_through(max_round)?;
        let applied = store::lock_applied_round(self.id())?;
        let mut previous: Option<LogValue> = None;
        let mut next = applied + 1;
        while next <= max_round {
            // A stretch of rounds per statement: a node that applies after a long run of writes
            // (the leader's own batches above all) has thousands of rounds to go through.
            let last = max_round.min(next.saturating_add(APPLY_STRETCH - 1));
            let stretch = store::log_with_marks(self.id(), next, last)?;
            let mut expected = next;
            for (round, value, done) in stretch {
                if round != expected {
                    break;
                }
                expected += 1;
                let outcome =
                    apply::apply_entry(self.id(), round, &value, &done, previous.as_ref());
                if !matches!(outcome, Ok(Ok(()))) {
                    // The rounds before it did apply: keep the applied round true to them, also
                    // when the caller commits after an error of this node's own.
                    store::advance_applied_round(self.id(), applied, round - 1)?;
                }
                if let Err(cause) = outcome? {
                    store::set_divergence(self.id(), Some((round, &cause)))?;
                    pgrx::warning!(
                        "pg_paxos: this node stopped applying paxos group {:?} at round {round}: {cause}",
                        self.id()
                    );
                    return Ok(round - 1);
                }
                previous = Some(value);
            }
            if expected <= last {
                store::advance_applied_round(self.id(), applied, expected - 1)?;
                return Err(PaxosError::Internal(format!(
                    "round {expected} is not in the log after learning it"
                )));
            }
            next = last + 1;
        }
        if max_round > applied {
            store::advance_applied_round(self.id(), applied, max_round)?;
        }
        Ok(applied.max(max_round))
    }
}

/// How many rounds [`ReplicatedLog::apply_log`] reads from the log per statement.
const APPLY_STRETCH: u64 = 256;

/// The members a read index or a lease asks, by connection string, and which of them form each
/// membership (indexes into `members`).
struct Quorum {
    members: Vec<String>,
    configs: Vec<Vec<usize>>,
}

impl Quorum {
    /// True when the members in `answered` hold a majority of every membership.
    fn enough(&self, answered: &BTreeSet<usize>) -> bool {
        self.configs.iter().all(|c| {
            c.iter().filter(|i| answered.contains(i)).count()
                >= paxos_core::proposer::majority(c.len())
        })
    }

    fn no_majority(
        &self,
        group: &str,
        action: &'static str,
        answered: &BTreeSet<usize>,
        last_error: Option<String>,
    ) -> PaxosError {
        PaxosError::NoMajority {
            group: group.to_string(),
            action,
            answered: answered.len(),
            total: self.members.len(),
            last_error,
        }
    }
}

/// A handle on the member with connection string `conninfo`.
pub fn link_to(
    net: &Net,
    conninfo: &str,
    defaults: &Defaults,
    connect_timeout: Duration,
    retry_interval: Duration,
) -> Result<Link> {
    let config = conninfo::parse(conninfo, defaults, connect_timeout)?;
    let label = conninfo::describe(&config);
    Ok(net.link(conninfo, label, config, connect_timeout, retry_interval))
}

/// A value proposed by `proposer_label` (the caller's `current_proposer_id`), tagged so that it is
/// told apart from equal values of other calls.
pub fn new_value(proposer_label: &str, kind: ValueKind, body: Option<String>) -> LogValue {
    let (unique, _) = unique_proposer_id();
    LogValue {
        origin: format!("{proposer_label}@{unique}"),
        kind,
        body,
    }
}
