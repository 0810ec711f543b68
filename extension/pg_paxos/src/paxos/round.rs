//! Drives the core proposer of one round over the network: requests go out to every member in
//! parallel and the round moves on as soon as a majority has answered, so a slow, dead or frozen
//! member never holds it up. Pure async Rust: no PostgreSQL calls in here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use paxos_core::proposer::majority;
use paxos_core::{
    AcceptOutcome, Action, Ballot, Campaign, CampaignAction, Proposer, Reply, Request,
};
use tokio::time::Instant;

use crate::net::pool::{Link, LinkError};
use crate::net::rpc;
use crate::paxos::leadership;
use paxos_model::value::LogValue;

#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Everything, retries included, must finish within this.
    pub round_timeout: Duration,
    /// A phase without a decision after this is retried with a higher ballot.
    pub phase_timeout: Duration,
}

#[derive(Debug)]
pub enum RoundFailure {
    NoMajority {
        reachable: usize,
        total: usize,
        last_error: Option<String>,
    },
    Timeout {
        attempts: u32,
        answered: usize,
        total: usize,
    },
}

/// The members to skip: those that failed recently, if the others can still be `enough` (else
/// nobody is skipped).
fn skipped(links: &[Link], enough: &dyn Fn(&BTreeSet<usize>) -> bool) -> BTreeSet<usize> {
    let down: BTreeSet<usize> = (0..links.len())
        .filter(|&i| links[i].recently_down())
        .collect();
    let up: BTreeSet<usize> = (0..links.len()).filter(|i| !down.contains(i)).collect();
    if enough(&up) {
        down
    } else {
        BTreeSet::new()
    }
}

/// A majority of all of `links` (a round's members, this node included).
fn a_majority_of(links: &[Link]) -> impl Fn(&BTreeSet<usize>) -> bool {
    let needed = majority(links.len());
    move |members: &BTreeSet<usize>| members.len() >= needed
}

/// Sends `request` to member `to`; the answer comes with the member's index.
fn ask<'a>(
    group: &'a str,
    links: &[Link],
    to: usize,
    request: Request<LogValue>,
) -> impl std::future::Future<Output = (usize, Result<Option<Reply<LogValue>>, LinkError>)> + 'a {
    let link = links[to].clone();
    async move { (to, rpc::send(&link, group, &request).await) }
}

/// A decided round: its value, and whether a leader ballot it started with was refused (or went
/// unanswered), which means this node's leadership may be over.
pub struct Decided {
    pub value: LogValue,
    pub leader_refused: bool,
}

/// A leader's first accept goes to a majority only: this node first, then the members that answered
/// fastest lately. The others get it when one of those fails or refuses, or after this long. (Every
/// vote costs a member a flushed commit, and members often share machines and disks.) Reads wait
/// as long before they ask more members than they need (see [`Ask::Fastest`]).
pub(crate) fn hedge_delay(timing: &Timing) -> Duration {
    (timing.phase_timeout / 20).clamp(Duration::from_millis(2), Duration::from_millis(20))
}

/// The members to ask first (see [`hedge_delay`]): as few of those not in `skip` as make
/// `enough`, `preferred` (this node, which answers without a round trip) first, then those that
/// answered fastest lately.
fn fastest_enough(
    links: &[Link],
    preferred: Option<usize>,
    skip: &BTreeSet<usize>,
    enough: &dyn Fn(&BTreeSet<usize>) -> bool,
) -> BTreeSet<usize> {
    let mut order: Vec<usize> = (0..links.len()).filter(|i| !skip.contains(i)).collect();
    order.sort_by_key(|&i| (Some(i) != preferred, links[i].recent_latency()));
    let mut first = BTreeSet::new();
    for i in order {
        if enough(&first) {
            break;
        }
        first.insert(i);
    }
    first
}

/// Runs `proposer` until its round has a chosen value, within the round timeout (plus one phase)
/// whatever happens inside. With a `leader` ballot it starts with phase 2 under it. Learn messages
/// go to every member except `self_index` (the caller records the value locally) without waiting
/// for their answers.
pub async fn drive(
    group: &str,
    links: &[Link],
    self_index: Option<usize>,
    proposer: Proposer<usize, LogValue>,
    leader: Option<Ballot>,
    timing: Timing,
) -> Result<Decided, RoundFailure> {
    let limit = timing.round_timeout + timing.phase_timeout;
    tokio::time::timeout(
        limit,
        drive_unbounded(group, links, self_index, proposer, leader, timing),
    )
    .await
    .unwrap_or(Err(RoundFailure::Timeout {
        attempts: 0,
        answered: 0,
        total: links.len(),
    }))
}

async fn drive_unbounded(
    group: &str,
    links: &[Link],
    self_index: Option<usize>,
    mut proposer: Proposer<usize, LogValue>,
    leader: Option<Ballot>,
    timing: Timing,
) -> Result<Decided, RoundFailure> {
    let total = links.len();
    let tolerated = total - majority(total);
    let deadline = Instant::now() + timing.round_timeout;
    let mut inflight = FuturesUnordered::new();
    let mut answered: BTreeSet<usize> = BTreeSet::new();
    let mut failed: BTreeMap<usize, String> = BTreeMap::new();
    let mut skip = skipped(links, &a_majority_of(links));
    let led = leader.is_some();
    let mut actions = match leader {
        Some(ballot) => proposer.start_accepting(ballot),
        None => proposer.start(),
    };
    let mut phase_deadline = Instant::now() + timing.phase_timeout;
    let wave = led.then(|| fastest_enough(links, self_index, &skip, &a_majority_of(links)));
    let mut held_back: Vec<(usize, Request<LogValue>)> = Vec::new();
    // Requests to members that failed a moment ago: sent after all once the others cannot be a
    // majority without them (another member fails meanwhile, or all answered without a decision).
    let mut held_down: Vec<(usize, Request<LogValue>)> = Vec::new();
    let mut hedge_at: Option<Instant> = None;
    let send = |to: usize, request: Request<LogValue>| ask(group, links, to, request);
    loop {
        let mut backoff = None;
        let mut chosen = None;
        let mut learns = Vec::new();
        for action in std::mem::take(&mut actions) {
            match action {
                Action::Send { to, request } => {
                    let first_accept =
                        proposer.attempts() == 1 && matches!(request, Request::Accept { .. });
                    if matches!(request, Request::Learn { .. }) {
                        if Some(to) != self_index {
                            learns.push((to, request));
                        }
                    } else if skip.contains(&to) {
                        held_down.push((to, request));
                    } else if first_accept && wave.as_ref().is_some_and(|w| !w.contains(&to)) {
                        held_back.push((to, request));
                        hedge_at.get_or_insert_with(|| Instant::now() + hedge_delay(&timing));
                    } else {
                        inflight.push(send(to, request));
                    }
                }
                // The learn messages to send come in the same batch.
                Action::Chosen { value, .. } => chosen = Some(value),
                Action::BackOff { millis } => backoff = Some(millis),
            }
        }
        if let Some(value) = chosen {
            if !learns.is_empty() {
                // Once a member learns the value it may serve it: before, tell this node's
                // strong reads not to take the round for one still in flight.
                leadership::expose_through(group, proposer.round());
            }
            send_learns(group, links, learns).await;
            return Ok(Decided {
                value,
                leader_refused: led && proposer.attempts() > 1,
            });
        }
        if !held_down.is_empty() && failed.len() + held_down.len() > tolerated {
            inflight.extend(held_down.drain(..).map(|(to, r)| send(to, r)));
        }
        if failed.len() > tolerated {
            return Err(RoundFailure::NoMajority {
                reachable: total - failed.len(),
                total,
                last_error: failed.values().last().cloned(),
            });
        }
        if let Some(millis) = backoff {
            let wake = Instant::now() + Duration::from_millis(millis);
            if wake >= deadline {
                return Err(RoundFailure::Timeout {
                    attempts: proposer.attempts(),
                    answered: answered.len(),
                    total,
                });
            }
            tokio::time::sleep_until(wake).await;
            failed.clear();
            skip = skipped(links, &a_majority_of(links));
            // Later attempts ask every member at once.
            held_back.clear();
            held_down.clear();
            hedge_at = None;
            actions = proposer.start();
            phase_deadline = (Instant::now() + timing.phase_timeout).min(deadline);
            continue;
        }
        if inflight.is_empty() {
            if !held_back.is_empty() || !held_down.is_empty() {
                inflight.extend(
                    held_back
                        .drain(..)
                        .chain(held_down.drain(..))
                        .map(|(to, r)| send(to, r)),
                );
                continue;
            }
            // Every request of this phase was answered or failed, without a decision.
            actions = proposer.timeout();
            continue;
        }
        let hedge = hedge_at.filter(|_| !held_back.is_empty());
        let mut release = false;
        tokio::select! {
            next = inflight.next() => match next {
                Some((to, Ok(Some(reply)))) => {
                    release = matches!(
                        reply,
                        Reply::Accept { outcome: AcceptOutcome::Refused { .. }, .. }
                    );
                    answered.insert(to);
                    failed.remove(&to);
                    actions = proposer.handle(to, reply);
                }
                Some((_, Ok(None))) | None => {}
                Some((to, Err(e))) => {
                    let message = match &e {
                        LinkError::Unreachable(m) => format!("{}: {m}", links[to].label),
                        LinkError::Remote(m) | LinkError::Sql { message: m, .. } => {
                            format!("{} answered with an error: {m}", links[to].label)
                        }
                    };
                    failed.insert(to, message);
                    release = true;
                }
            },
            _ = tokio::time::sleep_until(hedge.unwrap_or(phase_deadline)), if hedge.is_some() => {
                // The first wave is slow: whoever of it has not answered counts as slow from now on.
                for &i in wave.iter().flatten() {
                    if !answered.contains(&i) {
                        links[i].note_slow(hedge_delay(&timing) * 4);
                    }
                }
                release = true;
            }
            _ = tokio::time::sleep_until(phase_deadline) => {
                // The next phase sends its own requests: the held ones are stale.
                held_down.clear();
                actions = proposer.timeout();
            }
        }
        if release && !held_back.is_empty() {
            inflight.extend(held_back.drain(..).map(|(to, r)| send(to, r)));
        }
    }
}

/// How a campaign ended.
pub enum Election {
    /// A majority promised for every round from the campaign's first on; `recovered` holds the
    /// value to propose again per round that had votes.
    Won { recovered: BTreeMap<u64, LogValue> },
    /// Refused, unanswered or out of time; a ballot numbered `seen` or higher is taken.
    Lost { seen: u64 },
}

/// Runs `campaign` (a range prepare to every member) within `limit`.
pub async fn campaign(
    group: &str,
    links: &[Link],
    mut campaign: Campaign<usize, LogValue>,
    limit: Duration,
) -> Election {
    let seen = campaign.ballot().number;
    let run = async {
        let mut inflight = FuturesUnordered::new();
        for action in campaign.start() {
            if let CampaignAction::Send { to, request } = action {
                inflight.push(ask(group, links, to, request));
            }
        }
        let mut failed = 0;
        let tolerated = links.len() - majority(links.len());
        while let Some((from, answer)) = inflight.next().await {
            let actions = match answer {
                Ok(Some(reply)) => campaign.handle(from, reply),
                _ => {
                    failed += 1;
                    if failed > tolerated {
                        return Election::Lost { seen };
                    }
                    continue;
                }
            };
            for action in actions {
                match action {
                    CampaignAction::Elected { recovered, .. } => {
                        return Election::Won { recovered }
                    }
                    CampaignAction::Lost { promised_number } => {
                        return Election::Lost {
                            seen: promised_number.max(seen),
                        }
                    }
                    CampaignAction::Send { .. } => {}
                }
            }
        }
        Election::Lost { seen }
    };
    tokio::time::timeout(limit, run)
        .await
        .unwrap_or(Election::Lost { seen })
}

/// Hands the learn messages to the connections and lets them write, without waiting for answers:
/// learning is an optimisation, every member can learn a chosen value from the acceptors. So
/// members that failed a moment ago get none (each would cost a connection attempt, or a refusal
/// from a member that lost its data).
async fn send_learns(group: &str, links: &[Link], learns: Vec<(usize, Request<LogValue>)>) {
    let mut sending: FuturesUnordered<_> = learns
        .into_iter()
        .filter(|(to, _)| !links[*to].recently_down())
        .map(|(to, request)| ask(group, links, to, request))
        .collect();
    // One poll hands every request to its connection (a zero timeout would not do: tokio's timer
    // has millisecond ticks); the yield lets the connections write them out.
    let _ = futures::poll!(sending.next());
    tokio::task::yield_now().await;
}

/// Answers of members to one query: each member's index and its result.
pub type Answers = Vec<(usize, Result<Vec<tokio_postgres::Row>, LinkError>)>;

/// Whom a gathered query goes to, and when.
#[derive(Clone, Copy, Debug)]
pub enum Ask {
    /// Every member at once.
    Everyone,
    /// Every member at once, except those that failed a moment ago: they are asked only if the
    /// others cannot be enough (then at once) or turn out not to be (then after them).
    SkippingDown,
    /// As [`Ask::SkippingDown`], but at first only as many of the others as can be enough, those
    /// that answered fastest lately; the rest when one of those fails, when those answered
    /// without being enough, or after `hedge` (those not answered by then count as slow). For
    /// frequent small queries such as reads, where every extra request costs a member a
    /// statement and this node a send.
    Fastest { hedge: Duration },
}

/// Sends one query to the members (see [`Ask`]) and returns the answers once `enough` holds for
/// the set of members that answered successfully, or every member asked answered, or `deadline`
/// passed.
pub async fn gather(
    links: &[Link],
    sql: &'static str,
    params: Vec<crate::net::pool::Param>,
    asking: Ask,
    enough: &dyn Fn(&BTreeSet<usize>) -> bool,
    deadline: Duration,
) -> Answers {
    gather_hoping(links, sql, params, asking, enough, &|_| true, deadline).await
}

/// [`gather`], except that once `enough` holds it goes on waiting for `hoped` (a stronger
/// condition on the answers so far) about as long again as it took to get there, and returns as
/// soon as `hoped` holds, every member asked answered, that time ran out, or `deadline` passed.
pub async fn gather_hoping(
    links: &[Link],
    sql: &'static str,
    params: Vec<crate::net::pool::Param>,
    asking: Ask,
    enough: &dyn Fn(&BTreeSet<usize>) -> bool,
    hoped: &dyn Fn(&Answers) -> bool,
    deadline: Duration,
) -> Answers {
    // Members that failed a moment ago are asked only if the others cannot be enough, or turn out
    // not to be.
    let down = match asking {
        Ask::Everyone => BTreeSet::new(),
        Ask::SkippingDown | Ask::Fastest { .. } => skipped(links, enough),
    };
    let asked_first: Vec<usize> = match asking {
        Ask::Fastest { .. } => fastest_enough(links, None, &down, enough)
            .into_iter()
            .collect(),
        Ask::Everyone | Ask::SkippingDown => {
            (0..links.len()).filter(|i| !down.contains(i)).collect()
        }
    };
    // With `Fastest`, the slower ones wait for a reason to be asked (at the latest the hedge).
    let mut held_slow: Vec<usize> = (0..links.len())
        .filter(|i| !down.contains(i) && !asked_first.contains(i))
        .collect();
    let mut held_down: Vec<usize> = down.into_iter().collect();
    let hedge = match asking {
        Ask::Fastest { hedge } => hedge,
        Ask::Everyone | Ask::SkippingDown => Duration::ZERO,
    };
    let hedge_at = Instant::now() + hedge;
    let ask = |i: usize| {
        let link = links[i].clone();
        let params = params.clone();
        async move {
            let reply = link.query(sql, &params).await;
            // A member that lost its data is not asked again for a while (reads ask often).
            rpc::skip_if_no_acceptor(&link, &reply);
            (i, reply)
        }
    };
    let mut inflight: FuturesUnordered<_> = asked_first.iter().copied().map(ask).collect();
    let mut out = Vec::new();
    let mut answered = BTreeSet::new();
    let started = Instant::now();
    let collect = async {
        let mut hope_until: Option<Instant> = None;
        loop {
            let hedging = !held_slow.is_empty();
            let far = Instant::now() + deadline;
            let next = tokio::select! {
                next = inflight.next() => next,
                _ = tokio::time::sleep_until(hope_until.unwrap_or(far)), if hope_until.is_some() => {
                    break;
                }
                _ = tokio::time::sleep_until(hedge_at), if hedging => {
                    // Those asked first are slow: whoever of them has not answered counts as slow
                    // from now on, and the others are asked too.
                    for &i in &asked_first {
                        if !out.iter().any(|(j, _)| *j == i) {
                            links[i].note_slow(hedge * 4);
                        }
                    }
                    inflight.extend(held_slow.drain(..).map(ask));
                    continue;
                }
            };
            let Some((i, result)) = next else {
                if enough(&answered) {
                    break;
                }
                // Those asked were not enough: the slower members are asked, then those skipped
                // as down.
                if !held_slow.is_empty() {
                    inflight.extend(held_slow.drain(..).map(ask));
                } else if !held_down.is_empty() {
                    inflight.extend(held_down.drain(..).map(ask));
                } else {
                    break;
                }
                continue;
            };
            if result.is_ok() {
                answered.insert(i);
            } else {
                // One asked first failed: do not wait for the hedge to ask the others.
                inflight.extend(held_slow.drain(..).map(ask));
            }
            out.push((i, result));
            if enough(&answered) {
                if hoped(&out) {
                    break;
                }
                let now = Instant::now();
                hope_until.get_or_insert(now + (now - started).max(Duration::from_millis(1)));
            }
        }
    };
    let _ = tokio::time::timeout(deadline, collect).await;
    for i in held_down {
        out.push((
            i,
            Err(LinkError::Unreachable(
                "skipped: unreachable a moment ago".into(),
            )),
        ));
    }
    out
}
