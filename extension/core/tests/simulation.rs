//! Deterministic simulation of the Paxos core: seeded runs of 3 and 5 acceptors and several
//! proposers over a network that drops, duplicates, delays and reorders messages, with partitions
//! and crash-restarts (a crashed node keeps only what it persisted).
//!
//! In leader mode each client is a node running Multi-Paxos: it campaigns for leadership (one range
//! phase 1), then proposes several rounds at once with phase 2 only, falls back to both phases
//! when refused, and may be paused (a stale leader that wakes up later) as well as crashed.
//!
//! With leases, leaders also hold leader leases (see `paxos_core::lease`) on clocks that run at
//! different rates within the drift bound, and read locally while a lease runs.
//!
//! Checked on every run:
//! - safety: never two different values chosen for one round, where "chosen" is computed from the
//!   acceptors' durable votes (a majority voted for one ballot), not from what proposers claim, and
//!   every value a proposer or learner reports as chosen is the chosen one;
//! - lease reads: a leader that reads under its lease knows every value chosen so far, except its
//!   own values in rounds from its first round in flight on, which it may read past unless they
//!   are exposed (it found a value chosen there and sent learn messages before recording it, a
//!   few ticks later, or its campaign recovered a vote there); nobody else may know that first
//!   round, with every round before it, when it reads;
//! - reads by read index (the majority's highest vote, and whether any of it promised above the
//!   leader's ballot): the same rule, against every value chosen and every round known elsewhere
//!   when the read began;
//! - chained values (group commit's pipelined batches): a value proposed while the leader's value
//!   in the round before is in flight names it, and takes effect only if that round holds it. No
//!   value that takes effect follows one that does not (so one look back is enough), and a leader
//!   counts its value as appended only once it knows it takes effect;
//! - liveness: once faults stop, every proposer appends all of its values within a bound.
//!
//! A failing run prints its seed; `PAXOS_SIM_SEED=<seed>` replays exactly that run, and
//! `PAXOS_SIM_RUNS=<n>` changes the number of seeds per configuration.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use paxos_core::acceptor::{on_accept, on_prepare, on_prepare_range, RangePromise};
use paxos_core::backoff::BackoffPolicy;
use paxos_core::lease::{leader_lease_end, range_held_by, MAX_DRIFT_PERMILLE};
use paxos_core::rng::SplitMix64;
use paxos_core::{
    Action, Ballot, Campaign, CampaignAction, LeaderLease, Leadership, LeaseGrant, PromiseOutcome,
    Proposer, RangeOutcome, Reply, Request, SlotState,
};

type Node = usize;
type Value = String;

#[derive(Clone, Copy, Debug)]
struct Config {
    acceptors: usize,
    clients: usize,
    values_per_client: usize,
    /// Ticks during which faults are injected; afterwards the network heals and everything runs.
    chaos_ticks: u64,
    liveness_bound_ticks: u64,
    drop_pct: u64,
    dup_pct: u64,
    max_delay: u64,
    crash_pct_per_tick: u64,
    partition_pct_per_tick: u64,
    phase_timeout: u64,
    /// Test the checker: acceptors forget their votes and promises when asked to prepare.
    broken_acceptors: bool,
    /// Clients are Multi-Paxos leaders (see [`LeaderClient`]) instead of one-round proposers.
    leaders: bool,
    /// Rounds a leader keeps in flight at once.
    pipeline: usize,
    /// Chance per tick that a client is paused or resumed (keeping all its state).
    pause_pct_per_tick: u64,
    /// Test the checker: a leader hands out a round twice under its ballot.
    reuse_leader_rounds: bool,
    /// Leaders chain their values (see [`Chaining`]).
    chaining: Option<Chaining>,
    /// Leaders hold leases of this many ticks and read under them (0: no leases).
    lease_ticks: u64,
    /// Test the checker: one lease rule left out.
    broken_lease: Option<BrokenLease>,
    /// A leader records a value it found chosen up to this many ticks later, as a writer's
    /// transaction commits after its round is chosen (0: at once).
    recording_ticks: u64,
    /// Leaders serve strong reads by read index (see [`ReadIndex`]).
    read_index: bool,
    /// Test the checker: a read index ignores promises above the leader's ballot.
    read_index_ignores_promises: bool,
}

/// How leaders chain the values they pipeline, as group commit does with batches (see
/// `paxos_core::commit_chain`): a value proposed in round `r` while the leader's own value of round
/// `r - 1` is in flight names it (`<value>@<id><<named id>`), and takes effect only if round
/// `r - 1` holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chaining {
    /// A value is chained only behind one whose own condition is known to hold (the round two
    /// before it holds what it names), as `CommitChain::round_for_batch` allows.
    Sound,
    /// Test the checker: values are chained behind any value in flight.
    BehindAnything,
}

/// A lease rule the checker must miss (see the `the_checker_catches_leases_*` tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BrokenLease {
    /// Acceptors grant leases but never refuse a phase 1 for them.
    NotEnforced,
    /// The leader counts its lease for the full length, with no allowance for clock drift.
    NoDriftAllowance,
    /// A restarted acceptor does not keep quiet for one lease.
    NoQuietAfterRestart,
    /// Acceptors grant leases over slots that promised a higher ballot in rounds the leader does
    /// not know to be chosen.
    IgnoresHigherSlotPromises,
    /// The leader reads past a round of its own that it found chosen, and sent learn messages
    /// for, before it recorded it.
    IgnoresExposure,
    /// A campaign's recovered votes do not count as exposed: the leader reads past a recovered
    /// round that may be chosen and known elsewhere.
    RecoveredNotExposed,
}

impl Config {
    fn new(acceptors: usize) -> Self {
        Config {
            acceptors,
            clients: 3,
            values_per_client: 4,
            chaos_ticks: 600,
            liveness_bound_ticks: 20_000,
            drop_pct: 10,
            dup_pct: 5,
            max_delay: 6,
            crash_pct_per_tick: 2,
            partition_pct_per_tick: 2,
            phase_timeout: 25,
            broken_acceptors: false,
            leaders: false,
            pipeline: 1,
            pause_pct_per_tick: 0,
            reuse_leader_rounds: false,
            chaining: None,
            lease_ticks: 0,
            broken_lease: None,
            recording_ticks: 8,
            read_index: false,
            read_index_ignores_promises: false,
        }
    }

    fn leaders(acceptors: usize) -> Self {
        Config {
            leaders: true,
            pipeline: 3,
            values_per_client: 8,
            pause_pct_per_tick: 2,
            ..Config::new(acceptors)
        }
    }
}

enum Msg {
    Request(Request<Value>),
    Reply(Reply<Value>),
    /// `known_below`: the leader knows the value chosen in every round before it.
    LeaseRequest {
        ballot: Ballot,
        from: u64,
        known_below: u64,
    },
    LeaseReply {
        ballot: Ballot,
        granted: bool,
    },
    /// A read index of leader ballot `ballot`: each acceptor tells its highest voted round and
    /// the highest ballot it promised for its range or any round after `above`.
    ReadIndexRequest {
        id: u64,
        above: u64,
    },
    ReadIndexReply {
        id: u64,
        voted: Option<u64>,
        promised: Option<Ballot>,
    },
}

impl Msg {
    fn copy(&self) -> Msg {
        match self {
            Msg::Request(r) => Msg::Request(r.clone()),
            Msg::Reply(r) => Msg::Reply(r.clone()),
            Msg::LeaseRequest {
                ballot,
                from,
                known_below,
            } => Msg::LeaseRequest {
                ballot: ballot.clone(),
                from: *from,
                known_below: *known_below,
            },
            Msg::LeaseReply { ballot, granted } => Msg::LeaseReply {
                ballot: ballot.clone(),
                granted: *granted,
            },
            Msg::ReadIndexRequest { id, above } => Msg::ReadIndexRequest {
                id: *id,
                above: *above,
            },
            Msg::ReadIndexReply {
                id,
                voted,
                promised,
            } => Msg::ReadIndexReply {
                id: *id,
                voted: *voted,
                promised: promised.clone(),
            },
        }
    }
}

struct Envelope {
    deliver_at: u64,
    from: Node,
    to: Node,
    msg: Msg,
}

#[derive(Default)]
struct AcceptorNode {
    /// Durable: survives crashes.
    slots: BTreeMap<u64, SlotState<Value>>,
    range: Option<RangePromise>,
    learned: BTreeMap<u64, Value>,
    up: bool,
    /// Volatile: lost in a crash (the restart then keeps quiet for one lease).
    lease: LeaseGrant,
}

struct Client {
    pending: VecDeque<Value>,
    incarnation: u32,
    next_round: u64,
    proposer: Option<Proposer<Node, Value>>,
    deadline: u64,
    wake_at: u64,
    up: bool,
}

/// A strong read on a leader by read index, as in the extension: a majority tells its highest
/// voted round (the read's top) and whether it promised above the leader's ballot. Unchallenged,
/// the leader reads what it knows before its first unknown round, when that is one of its own
/// rounds in flight and not exposed (see [`LeaderClient::exposed`]); otherwise the extension learns
/// the rounds first, which the model leaves out (the read is dropped).
struct ReadIndex {
    id: u64,
    ballot: Ballot,
    answered: BTreeSet<Node>,
    top: Option<u64>,
    challenged: bool,
    /// The values chosen when the read began, and the first round some other node did not know
    /// then (every round before it was known to one node: a member could have served it).
    chosen_at_start: BTreeMap<u64, Value>,
    observed_below: u64,
}

/// A proposal of a leader client in one round.
struct InFlight {
    proposer: Proposer<Node, Value>,
    /// The client value it carries (None for a recovered value or a no-op).
    own: Option<Value>,
    /// The value proposed (the client value, or with chaining that value tagged).
    proposed: Value,
    deadline: u64,
    wake_at: u64,
}

/// A client in leader mode: a node that campaigns, then pipelines phase-2-only rounds.
struct LeaderClient {
    pending: VecDeque<Value>,
    incarnation: u32,
    paused: bool,
    up: bool,
    highest_number: u64,
    campaign: Option<(Campaign<Node, Value>, u64)>,
    leadership: Option<Leadership<Ballot>>,
    recovered: BTreeMap<u64, Value>,
    cursor: u64,
    inflight: BTreeMap<u64, InFlight>,
    known: BTreeSet<u64>,
    /// Rounds this leader found chosen, and sent learn messages for, that it has not recorded
    /// yet (as a writer's transaction commits after its round is chosen): value and the tick at
    /// which it is recorded.
    recording: BTreeMap<u64, (Value, u64)>,
    /// Rounds through this one may be known as chosen by others before this leader records
    /// them: it sent learn messages for them, or its campaign recovered votes there.
    exposed: Option<u64>,
    /// Values learned, by round (for chained values, whose effect depends on the round before).
    learned: BTreeMap<u64, Value>,
    /// Own chained values chosen in a round whose predecessor is not known yet: round and client
    /// value.
    undecided: BTreeMap<u64, Value>,
    wake_at: u64,
    proposals: u64,
    /// A lease request in flight: its ballot, when it left (own clock), who granted it.
    lease_request: Option<(Ballot, u64, BTreeSet<Node>)>,
    /// A strong read by read index in flight.
    read: Option<ReadIndex>,
    lease: Option<LeaderLease<Ballot>>,
}

impl LeaderClient {
    fn new(pending: VecDeque<Value>) -> Self {
        LeaderClient {
            pending,
            incarnation: 0,
            paused: false,
            up: true,
            highest_number: 0,
            campaign: None,
            leadership: None,
            recovered: BTreeMap::new(),
            cursor: 0,
            inflight: BTreeMap::new(),
            known: BTreeSet::new(),
            recording: BTreeMap::new(),
            exposed: None,
            learned: BTreeMap::new(),
            undecided: BTreeMap::new(),
            wake_at: 0,
            proposals: 0,
            lease_request: None,
            read: None,
            lease: None,
        }
    }

    /// A crash: everything but the application's own values is lost.
    fn restart(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let mut unsent: VecDeque<Value> = self
            .inflight
            .values()
            .filter_map(|f| f.own.clone())
            .collect();
        // Whether these took effect is not known after a restart: proposed again (a value may
        // then take effect twice, which only the application could tell apart).
        unsent.extend(self.undecided.values().cloned());
        unsent.extend(pending);
        *self = LeaderClient {
            incarnation: self.incarnation + 1,
            ..LeaderClient::new(unsent)
        };
    }

    /// The value this leader proposed in `round`, while in flight or found chosen and not
    /// recorded yet.
    fn own_value(&self, round: u64) -> Option<&Value> {
        self.inflight
            .get(&round)
            .map(|f| &f.proposed)
            .or_else(|| self.recording.get(&round).map(|(v, _)| v))
    }

    /// True when others may know the value of `round` before this leader records it.
    fn exposes(&self, round: u64) -> bool {
        self.exposed.is_some_and(|e| round <= e)
    }

    fn first_unknown(&self) -> u64 {
        (0..).find(|r| !self.known.contains(r)).unwrap_or(0)
    }

    fn busy(&self) -> bool {
        !self.pending.is_empty()
            || !self.inflight.is_empty()
            || !self.undecided.is_empty()
            || !self.recording.is_empty()
    }
}

/// A chained value: the proposal id it carries and the id it names, if any.
fn chain_tags(value: &str) -> (Option<&str>, Option<&str>) {
    let Some((_, tags)) = value.rsplit_once('@') else {
        return (None, None);
    };
    match tags.split_once('<') {
        Some((id, after)) => (Some(id), Some(after)),
        None => (Some(tags), None),
    }
}

/// What a strong read on `leader` that reads its log through `through` (`None`: nothing) misses
/// of `chosen`, if anything it must not: a value past `through` that is not this leader's own in
/// a round in flight or being recorded, or the first round past `through` chosen while another
/// node knew it with every round before it (`observed_below`, see `Sim::observed_below`).
fn missed_by_read(
    leader: &LeaderClient,
    through: Option<u64>,
    chosen: &BTreeMap<u64, Value>,
    observed_below: u64,
) -> Option<String> {
    let first_unread = through.map_or(0, |t| t + 1);
    if let Some((missed, value)) = chosen
        .range(first_unread..)
        .find(|(r, v)| leader.own_value(**r) != Some(*v))
    {
        return Some(format!("without round {missed}, chosen as {value:?}"));
    }
    (chosen.contains_key(&first_unread) && observed_below > first_unread).then(|| {
        format!("without round {first_unread}, which another node knew with every round before it")
    })
}

/// Whether the value in a round takes effect, given the value chosen in the round before.
fn takes_effect(value: &str, previous: Option<&Value>) -> bool {
    match chain_tags(value).1 {
        None => true,
        Some(after) => previous.is_some_and(|p| chain_tags(p).0 == Some(after)),
    }
}

#[derive(Debug, Default)]
struct Report {
    chosen_rounds: usize,
    delivered: u64,
    crashes: u64,
    partitions: u64,
    elections: u64,
    leader_rounds: u64,
    pauses: u64,
    lease_reads: u64,
    /// Reads by read index that were served, and those unchallenged that read past a round of
    /// the leader's own in flight.
    read_index_reads: u64,
    read_index_past_rounds_in_flight: u64,
    /// Lease reads that read past a round of the leader's own in flight.
    reads_past_rounds_in_flight: u64,
    /// Chained values chosen, and those of them void.
    chained: u64,
    void: u64,
    /// An order-sensitive hash of every event, to show that a seed replays exactly.
    trace_hash: u64,
}

struct Sim {
    cfg: Config,
    rng: SplitMix64,
    now: u64,
    acceptors: Vec<AcceptorNode>,
    clients: Vec<Client>,
    leaders: Vec<LeaderClient>,
    net: Vec<Envelope>,
    side: Vec<bool>,
    /// Who ever voted for each (round, ballot, value).
    votes: BTreeMap<(u64, Ballot, Value), BTreeSet<Node>>,
    chosen: BTreeMap<u64, Value>,
    /// Per node, its clock's rate in per mille of real time (within the drift bound).
    clock_rates: Vec<u64>,
    report: Report,
}

impl Sim {
    fn new(cfg: Config, seed: u64) -> Self {
        let acceptors = (0..cfg.acceptors)
            .map(|_| AcceptorNode {
                up: true,
                ..Default::default()
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|c| Client {
                pending: (0..cfg.values_per_client)
                    .map(|k| format!("c{c}-v{k}"))
                    .collect(),
                incarnation: 0,
                next_round: 0,
                proposer: None,
                deadline: 0,
                wake_at: 0,
                up: true,
            })
            .collect();
        let leaders = if cfg.leaders {
            (0..cfg.clients)
                .map(|c| {
                    LeaderClient::new(
                        (0..cfg.values_per_client)
                            .map(|k| format!("c{c}-v{k}"))
                            .collect(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut rng = SplitMix64::new(seed);
        let clock_rates = (0..cfg.acceptors + cfg.clients)
            .map(|_| {
                if cfg.lease_ticks > 0 {
                    1000 + rng.below(MAX_DRIFT_PERMILLE + 1)
                } else {
                    1000
                }
            })
            .collect();
        Sim {
            cfg,
            rng,
            now: 0,
            acceptors,
            clients,
            leaders,
            net: Vec::new(),
            side: vec![false; cfg.acceptors + cfg.clients],
            votes: BTreeMap::new(),
            chosen: BTreeMap::new(),
            clock_rates,
            report: Report::default(),
        }
    }

    /// `node`'s monotonic clock, in thousandths of a tick at its own rate.
    fn clock(&self, node: Node) -> u64 {
        self.now * self.clock_rates[node]
    }

    /// A lease's length in clock units.
    fn lease_length(&self) -> u64 {
        self.cfg.lease_ticks * 1000
    }

    /// Acceptor `a` comes back from a crash: it forgot any grant, so it keeps quiet for one lease.
    fn restart_acceptor(&mut self, a: Node) {
        let quiet = if self.cfg.broken_lease == Some(BrokenLease::NoQuietAfterRestart) {
            0
        } else {
            self.lease_length()
        };
        let node = &mut self.acceptors[a];
        if !node.up {
            node.up = true;
            node.lease = LeaseGrant::after_restart(self.now * self.clock_rates[a], quiet);
        }
    }

    fn trace(&mut self, event: u64) {
        self.report.trace_hash = self
            .report
            .trace_hash
            .rotate_left(7)
            .wrapping_mul(0x100_0000_01B3)
            ^ event;
    }

    fn client_node(&self, client: usize) -> Node {
        self.cfg.acceptors + client
    }

    fn chaos(&self) -> bool {
        self.now < self.cfg.chaos_ticks
    }

    fn send(&mut self, from: Node, to: Node, msg: Msg) {
        if self.chaos() && self.rng.chance(self.cfg.drop_pct) {
            return;
        }
        let copies = if self.chaos() && self.rng.chance(self.cfg.dup_pct) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.below(self.cfg.max_delay);
            let msg = msg.copy();
            self.net.push(Envelope {
                deliver_at: self.now + delay,
                from,
                to,
                msg,
            });
        }
    }

    fn run(mut self) -> Result<Report, String> {
        let limit = self.cfg.chaos_ticks + self.cfg.liveness_bound_ticks;
        while self.now < limit {
            if self.chaos() {
                self.inject_faults();
            } else if self.now == self.cfg.chaos_ticks {
                self.heal();
            }
            self.deliver_due()?;
            if self.cfg.leaders {
                self.drive_leaders()?;
            } else {
                self.drive_clients()?;
            }
            let done = if self.cfg.leaders {
                self.leaders.iter().all(|c| !c.busy())
            } else {
                self.clients.iter().all(|c| c.pending.is_empty())
            };
            if !self.chaos() && done {
                self.check_chains()?;
                self.report.chosen_rounds = self.chosen.len();
                return Ok(self.report);
            }
            self.now += 1;
        }
        let left: Vec<usize> = if self.cfg.leaders {
            self.leaders
                .iter()
                .map(|c| c.pending.len() + c.inflight.len())
                .collect()
        } else {
            self.clients.iter().map(|c| c.pending.len()).collect()
        };
        Err(format!(
            "liveness: {left:?} values still unappended {} ticks after the faults stopped",
            self.cfg.liveness_bound_ticks
        ))
    }

    fn inject_faults(&mut self) {
        if self.rng.chance(self.cfg.partition_pct_per_tick) {
            self.report.partitions += 1;
            let heal = self.rng.chance(40);
            for s in 0..self.side.len() {
                self.side[s] = !heal && self.rng.chance(50);
            }
            self.trace(1);
        }
        if self.rng.chance(self.cfg.crash_pct_per_tick) {
            self.report.crashes += 1;
            let victim =
                self.rng
                    .below((self.cfg.acceptors + self.cfg.clients) as u64) as usize;
            if victim < self.cfg.acceptors {
                // An acceptor's votes and promises are durable: a crash-restart loses none of them.
                if self.acceptors[victim].up {
                    self.acceptors[victim].up = false;
                } else {
                    self.restart_acceptor(victim);
                }
            } else if self.cfg.leaders {
                let client = &mut self.leaders[victim - self.cfg.acceptors];
                if client.up {
                    client.up = false;
                } else {
                    client.restart();
                }
            } else {
                let client = &mut self.clients[victim - self.cfg.acceptors];
                if client.up {
                    // A proposer keeps nothing durable: restart from round 0 as a new incarnation.
                    client.up = false;
                    client.proposer = None;
                } else {
                    client.up = true;
                    client.incarnation += 1;
                    client.next_round = 0;
                }
            }
            self.trace(2 + victim as u64);
        }
        if self.cfg.leaders && self.rng.chance(self.cfg.pause_pct_per_tick) {
            // A pause keeps every bit of state: the client wakes up as a possibly stale leader.
            let c = self.rng.below(self.cfg.clients as u64) as usize;
            self.leaders[c].paused = !self.leaders[c].paused;
            self.report.pauses += 1;
            self.trace(50 + c as u64);
        }
    }

    fn heal(&mut self) {
        self.side.iter_mut().for_each(|s| *s = false);
        for a in 0..self.acceptors.len() {
            self.restart_acceptor(a);
        }
        for client in &mut self.clients {
            if !client.up {
                client.up = true;
                client.incarnation += 1;
                client.next_round = 0;
            }
        }
        for client in &mut self.leaders {
            client.paused = false;
            if !client.up {
                client.restart();
            }
        }
    }

    fn node_up(&self, node: Node) -> bool {
        if node < self.cfg.acceptors {
            self.acceptors[node].up
        } else if self.cfg.leaders {
            let client = &self.leaders[node - self.cfg.acceptors];
            client.up && !client.paused
        } else {
            self.clients[node - self.cfg.acceptors].up
        }
    }

    fn deliver_due(&mut self) -> Result<(), String> {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].deliver_at <= self.now {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        // Deliver in a seeded random order: reordering on top of the random delays.
        while !due.is_empty() {
            let envelope = due.swap_remove(self.rng.below(due.len() as u64) as usize);
            if self.side[envelope.from] != self.side[envelope.to] || !self.node_up(envelope.to) {
                continue;
            }
            self.report.delivered += 1;
            self.trace(100 + envelope.to as u64 * 7 + envelope.from as u64);
            match envelope.msg {
                Msg::Request(request) => {
                    self.acceptor_receive(envelope.to, envelope.from, request)?
                }
                Msg::Reply(reply) => self.client_receive(envelope.to, envelope.from, reply)?,
                Msg::LeaseRequest {
                    ballot,
                    from,
                    known_below,
                } => self.acceptor_grant(envelope.to, envelope.from, ballot, from, known_below),
                Msg::LeaseReply { ballot, granted } => {
                    self.lease_reply(envelope.to, envelope.from, ballot, granted)
                }
                Msg::ReadIndexRequest { id, above } => {
                    self.answer_read_index(envelope.to, envelope.from, id, above)
                }
                Msg::ReadIndexReply {
                    id,
                    voted,
                    promised,
                } => self.read_index_reply(envelope.to, envelope.from, id, voted, promised)?,
            }
        }
        Ok(())
    }

    fn acceptor_receive(
        &mut self,
        me: Node,
        from: Node,
        request: Request<Value>,
    ) -> Result<(), String> {
        let round = request.round();
        if let Request::Learn { value, .. } = &request {
            self.check_chosen(round, value, "learn message")?;
            self.acceptors[me].learned.insert(round, value.clone());
            return Ok(());
        }
        let range_request = matches!(request, Request::PrepareRange { .. });
        if let Some(value) = self.acceptors[me]
            .learned
            .get(&round)
            .filter(|_| !range_request)
            .cloned()
        {
            self.send(me, from, Msg::Reply(Reply::Chosen { round, value }));
            return Ok(());
        }
        let range = self.acceptors[me].range.clone();
        let slot = self.acceptors[me]
            .slots
            .get(&round)
            .cloned()
            .unwrap_or_default()
            .under(range.as_ref(), round);
        // A crash may strike before the write (nothing changes) or after it (no reply).
        let crash_roll = if self.chaos() {
            self.rng.below(200)
        } else {
            200
        };
        if crash_roll == 0 {
            self.acceptors[me].up = false;
            return Ok(());
        }
        if let Some(refusal) = self.lease_refusal(me, &request) {
            self.send(me, from, Msg::Reply(refusal));
            return Ok(());
        }
        let reply = match request {
            Request::Prepare { ballot, .. } => {
                let step = if self.cfg.broken_acceptors {
                    let mut step = on_prepare(&SlotState::default(), &ballot);
                    step.reply = PromiseOutcome::Granted { accepted: None };
                    step
                } else {
                    on_prepare(&slot, &ballot)
                };
                if let Some(state) = step.persist {
                    self.acceptors[me].slots.insert(round, state);
                }
                Reply::Promise {
                    round,
                    ballot,
                    outcome: step.reply,
                }
            }
            Request::Accept { ballot, value, .. } => {
                let step = on_accept(&slot, &ballot, &value);
                if let Some(state) = step.persist {
                    self.acceptors[me].slots.insert(round, state);
                    self.record_vote(me, round, &ballot, &value)?;
                }
                Reply::Accept {
                    round,
                    ballot,
                    outcome: step.reply,
                }
            }
            Request::PrepareRange { from, ballot } => {
                let node = &self.acceptors[me];
                let step = on_prepare_range(
                    node.range.as_ref(),
                    node.slots.range(from..).map(|(r, s)| (*r, s)),
                    from,
                    &ballot,
                );
                if let Some(range) = step.persist {
                    self.acceptors[me].range = Some(range);
                }
                Reply::RangePromise {
                    from,
                    ballot,
                    outcome: step.reply,
                }
            }
            Request::Learn { .. } => unreachable!("handled above"),
        };
        if crash_roll == 1 {
            self.acceptors[me].up = false;
            return Ok(());
        }
        self.send(me, from, Msg::Reply(reply));
        Ok(())
    }

    /// The refusal a running lease grant (or the quiet time after a restart) gives a phase 1.
    fn lease_refusal(&mut self, me: Node, request: &Request<Value>) -> Option<Reply<Value>> {
        if self.cfg.lease_ticks == 0 {
            return None;
        }
        let now = self.clock(me);
        let (ballot, highest_round) = match request {
            Request::Prepare { ballot, round } => (ballot, *round),
            Request::PrepareRange { ballot, .. } => (ballot, u64::MAX),
            _ => return None,
        };
        let promised = self.acceptors[me]
            .lease
            .admit_phase1(ballot, highest_round, now)
            .err()?;
        if self.cfg.broken_lease == Some(BrokenLease::NotEnforced) {
            return None;
        }
        let ballot = ballot.clone();
        Some(match *request {
            Request::PrepareRange { from, .. } => Reply::RangePromise {
                from,
                ballot,
                outcome: RangeOutcome::Refused { promised },
            },
            _ => Reply::Promise {
                round: request.round(),
                ballot,
                outcome: PromiseOutcome::Refused { promised },
            },
        })
    }

    /// A lease request from leader node `from` for its range from `first` on. An acceptor its
    /// campaign did not reach promises the range first (reporting nothing), as in the extension.
    /// Higher slot promises count from `known_below` on, as in the extension: before it, the
    /// leader knows every chosen value, which no later proposal can change.
    fn acceptor_grant(
        &mut self,
        me: Node,
        from: Node,
        ballot: Ballot,
        first: u64,
        known_below: u64,
    ) {
        let ignore_slots = self.cfg.broken_lease == Some(BrokenLease::IgnoresHigherSlotPromises);
        let now = self.clock(me);
        let length = self.lease_length();
        let node = &mut self.acceptors[me];
        let behind = node.range.as_ref().is_none_or(|r| r.ballot < ballot);
        if behind && node.lease.admit_phase1(&ballot, u64::MAX, now).is_ok() {
            let step = on_prepare_range(
                node.range.as_ref(),
                node.slots.range(first..).map(|(r, s)| (*r, s)),
                first,
                &ballot,
            );
            if let Some(range) = step.persist {
                node.range = Some(range);
            }
        }
        let higher_slot_promise = !ignore_slots
            && node.range.as_ref().is_some_and(|range| {
                node.slots
                    .range(range.from.max(known_below)..)
                    .any(|(_, slot)| slot.promised.as_ref().is_some_and(|p| *p > ballot))
            });
        let granted = node.lease.request(
            &ballot,
            range_held_by(node.range.as_ref(), &ballot),
            higher_slot_promise,
            length,
            now,
        );
        self.trace(40_000 + granted as u64);
        self.send(me, from, Msg::LeaseReply { ballot, granted });
    }

    fn lease_reply(&mut self, me: Node, from: Node, ballot: Ballot, granted: bool) {
        let c = me - self.cfg.acceptors;
        let majority = self.cfg.acceptors / 2 + 1;
        let length = self.lease_length();
        let no_allowance = self.cfg.broken_lease == Some(BrokenLease::NoDriftAllowance);
        let client = &mut self.leaders[c];
        let Some((asked, sent_at, grants)) = client.lease_request.as_mut() else {
            return;
        };
        if *asked != ballot || !granted {
            return;
        }
        grants.insert(from);
        if grants.len() >= majority {
            client.lease = Some(LeaderLease {
                ballot,
                ends_at: if no_allowance {
                    *sent_at + length
                } else {
                    leader_lease_end(*sent_at, length)
                },
            });
            client.lease_request = None;
        }
    }

    /// A leader reads under its lease when it can: the lease covers its leadership and it has no
    /// recovered votes left to propose. It reads what it knows before its first unknown round, the
    /// cut; a cut below the last round it handed out is one of its own rounds in flight, which
    /// it may read past (as `apply_for_read_as_leader` in the extension) unless the round may be
    /// known elsewhere already (exposed). Such a read must see every value chosen so far, except
    /// for values of this leader in rounds from the cut on, and nobody may know the cut's round
    /// (with every round before it) yet: a member could have served it.
    fn lease_read(&mut self, c: usize) -> Result<(), String> {
        let me = self.client_node(c);
        let now = self.clock(me);
        let client = &self.leaders[c];
        let (Some(leadership), Some(lease)) = (&client.leadership, &client.lease) else {
            return Ok(());
        };
        if !lease.covers(&leadership.ballot, now) || !client.recovered.is_empty() {
            return Ok(());
        }
        let cut = client.first_unknown();
        if cut < leadership.next_free() {
            let exposed =
                client.exposes(cut) && self.cfg.broken_lease != Some(BrokenLease::IgnoresExposure);
            if cut < leadership.from || exposed {
                return Ok(());
            }
        }
        if let Some(missed) = missed_by_read(
            client,
            cut.checked_sub(1),
            &self.chosen,
            self.observed_below(c),
        ) {
            return Err(format!(
                "lease read: leader c{c} read at tick {} under {} {missed}",
                self.now, leadership.ballot
            ));
        }
        self.report.lease_reads += 1;
        if cut < leadership.next_free() {
            self.report.reads_past_rounds_in_flight += 1;
        }
        self.trace(45_000 + c as u64);
        Ok(())
    }

    /// The first round that some node other than leader `c` does not know: every round before it
    /// is known to one acceptor (from learn messages) or another leader.
    fn observed_below(&self, c: usize) -> u64 {
        let acceptors = self
            .acceptors
            .iter()
            .map(|a| (0..).find(|r| !a.learned.contains_key(r)).unwrap_or(0));
        let leaders = (0..self.leaders.len())
            .filter(|&x| x != c)
            .map(|x| self.leaders[x].first_unknown());
        acceptors.chain(leaders).max().unwrap_or(0)
    }

    /// Starts a strong read by read index on leader `c`, if it leads and has none in flight.
    fn start_read_index(&mut self, c: usize) {
        let me = self.client_node(c);
        let observed_below = self.observed_below(c);
        let chosen_at_start = self.chosen.clone();
        let id = self.rng.next_u64();
        let client = &mut self.leaders[c];
        let Some(leadership) = &client.leadership else {
            return;
        };
        if client.read.is_some() {
            return;
        }
        let above = client.first_unknown().saturating_sub(1);
        client.read = Some(ReadIndex {
            id,
            ballot: leadership.ballot.clone(),
            answered: BTreeSet::new(),
            top: None,
            challenged: false,
            chosen_at_start,
            observed_below,
        });
        for a in 0..self.cfg.acceptors {
            self.send(me, a, Msg::ReadIndexRequest { id, above });
        }
    }

    /// An acceptor's answer to a read index: its highest voted round and the highest ballot it
    /// promised for its range or a round after `above` (as `paxos.request_read_index`).
    fn answer_read_index(&mut self, me: Node, from: Node, id: u64, above: u64) {
        let node = &self.acceptors[me];
        let voted = node
            .slots
            .iter()
            .filter(|(_, s)| s.accepted.is_some())
            .map(|(r, _)| *r)
            .next_back();
        let slot_promises = node
            .slots
            .range(above + 1..)
            .filter_map(|(_, s)| s.promised.clone());
        let promised = slot_promises
            .chain(node.range.as_ref().map(|r| r.ballot.clone()))
            .max();
        self.send(
            me,
            from,
            Msg::ReadIndexReply {
                id,
                voted,
                promised,
            },
        );
    }

    /// A member answered leader `me`'s read index; once a majority did, the read is served (or
    /// dropped where the extension would learn rounds first) and checked: it must see every value
    /// chosen before it began, except for values of this leader in rounds from the first one it
    /// reads past, and nobody may have known that round, with every round before it, when the
    /// read began.
    fn read_index_reply(
        &mut self,
        me: Node,
        from: Node,
        id: u64,
        voted: Option<u64>,
        promised: Option<Ballot>,
    ) -> Result<(), String> {
        let c = me - self.cfg.acceptors;
        let majority = self.cfg.acceptors / 2 + 1;
        let ignore_promises = self.cfg.read_index_ignores_promises;
        let client = &mut self.leaders[c];
        let Some(read) = client.read.as_mut().filter(|r| r.id == id) else {
            return Ok(());
        };
        read.answered.insert(from);
        read.top = read.top.max(voted);
        if !ignore_promises && promised.is_some_and(|p| p > read.ballot) {
            read.challenged = true;
        }
        if read.answered.len() < majority {
            return Ok(());
        }
        let Some(read) = client.read.take() else {
            return Ok(());
        };
        let Some(leadership) = client
            .leadership
            .as_ref()
            .filter(|l| l.ballot == read.ballot)
        else {
            return Ok(());
        };
        let cut = client.first_unknown();
        let top = read.top.unwrap_or(0);
        let through = if read.top.is_none_or(|t| t < cut) {
            read.top
        } else {
            // The read would pass a round it does not know: only one of its own in flight.
            if read.challenged
                || top >= leadership.next_free()
                || cut < leadership.from
                || client.exposes(cut)
            {
                return Ok(());
            }
            cut.checked_sub(1)
        };
        if let Some(missed) =
            missed_by_read(client, through, &read.chosen_at_start, read.observed_below)
        {
            return Err(format!(
                "read index: leader c{c} read at tick {} under {} through {through:?} {missed} (when the read began)",
                self.now, read.ballot
            ));
        }
        self.report.read_index_reads += 1;
        if through.is_some_and(|t| t < top) {
            self.report.read_index_past_rounds_in_flight += 1;
        }
        self.trace(47_000 + c as u64);
        Ok(())
    }

    /// Asks for a lease when the current one is gone or past its middle and no request is open.
    fn renew_lease(&mut self, c: usize) {
        let me = self.client_node(c);
        let now = self.clock(me);
        let half = self.lease_length() / 2;
        let client = &mut self.leaders[c];
        let Some(leadership) = &client.leadership else {
            return;
        };
        let fresh = client
            .lease
            .as_ref()
            .is_some_and(|l| l.covers(&leadership.ballot, now + half));
        let open = client
            .lease_request
            .as_ref()
            .is_some_and(|(b, sent, _)| *b == leadership.ballot && now < sent + half);
        if fresh || open {
            return;
        }
        let (ballot, from) = (leadership.ballot.clone(), leadership.from);
        let known_below = client.first_unknown();
        client.lease_request = Some((ballot.clone(), now, BTreeSet::new()));
        for a in 0..self.cfg.acceptors {
            self.send(
                me,
                a,
                Msg::LeaseRequest {
                    ballot: ballot.clone(),
                    from,
                    known_below,
                },
            );
        }
    }

    /// The ground truth: a value is chosen once a majority of acceptors durably voted for it under
    /// one ballot.
    fn record_vote(
        &mut self,
        acceptor: Node,
        round: u64,
        ballot: &Ballot,
        value: &Value,
    ) -> Result<(), String> {
        let voters = self
            .votes
            .entry((round, ballot.clone(), value.clone()))
            .or_default();
        voters.insert(acceptor);
        if voters.len() > self.cfg.acceptors / 2 {
            match self.chosen.get(&round) {
                Some(existing) if existing != value => {
                    return Err(format!(
                    "safety: round {round} chose {existing:?} and then {value:?} (ballot {ballot})"
                ))
                }
                Some(_) => {}
                None => {
                    self.chosen.insert(round, value.clone());
                }
            }
        }
        Ok(())
    }

    /// No chained value takes effect after a chained value that does not.
    fn check_chains(&mut self) -> Result<(), String> {
        for (&round, value) in &self.chosen {
            let Some(previous) = round.checked_sub(1).and_then(|r| self.chosen.get(&r)) else {
                continue;
            };
            let before = round.checked_sub(2).and_then(|r| self.chosen.get(&r));
            let chained = chain_tags(value).1.is_some();
            if chained && takes_effect(value, Some(previous)) && !takes_effect(previous, before) {
                return Err(format!(
                    "chain: round {round} holds {value:?}, which takes effect, after {previous:?}, which does not"
                ));
            }
            if chained {
                self.report.chained += 1;
                if !takes_effect(value, Some(previous)) {
                    self.report.void += 1;
                }
            }
        }
        Ok(())
    }

    fn check_chosen(&self, round: u64, value: &Value, who: &str) -> Result<(), String> {
        match self.chosen.get(&round) {
            Some(chosen) if chosen == value => Ok(()),
            other => Err(format!(
                "safety: {who} reports {value:?} chosen in round {round}, but the votes say {other:?}"
            )),
        }
    }

    fn client_receive(&mut self, me: Node, from: Node, reply: Reply<Value>) -> Result<(), String> {
        let c = me - self.cfg.acceptors;
        if self.cfg.leaders {
            return self.leader_receive(c, from, reply);
        }
        let Some(proposer) = self.clients[c].proposer.as_mut() else {
            return Ok(());
        };
        let actions = proposer.handle(from, reply);
        self.apply_actions(c, actions)
    }

    fn drive_clients(&mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            if !client.up || client.pending.is_empty() || client.wake_at > self.now {
                continue;
            }
            let actions = match &client.proposer {
                None => {
                    let value = client.pending[0].clone();
                    let id = format!("c{c}.{}", client.incarnation);
                    let seed = self.rng.next_u64();
                    let acceptors = (0..self.cfg.acceptors).collect();
                    let backoff = BackoffPolicy {
                        base_ms: 4,
                        max_ms: 60,
                    };
                    let mut proposer =
                        Proposer::new(client.next_round, acceptors, id, value, seed, backoff);
                    let actions = proposer.start();
                    self.clients[c].proposer = Some(proposer);
                    self.clients[c].deadline = self.now + self.cfg.phase_timeout;
                    actions
                }
                Some(p) if !p.in_flight() && p.chosen().is_none() => {
                    self.clients[c].deadline = self.now + self.cfg.phase_timeout;
                    self.clients[c]
                        .proposer
                        .as_mut()
                        .map(|p| p.start())
                        .unwrap_or_default()
                }
                Some(p) if p.in_flight() && self.now >= client.deadline => self.clients[c]
                    .proposer
                    .as_mut()
                    .map(|p| p.timeout())
                    .unwrap_or_default(),
                Some(_) => continue,
            };
            self.apply_actions(c, actions)?;
        }
        Ok(())
    }

    fn apply_actions(&mut self, c: usize, actions: Vec<Action<Node, Value>>) -> Result<(), String> {
        let me = self.client_node(c);
        for action in actions {
            match action {
                Action::Send { to, request } => self.send(me, to, Msg::Request(request)),
                Action::BackOff { millis } => {
                    self.clients[c].wake_at = self.now + millis;
                    self.trace(10_000 + millis);
                }
                Action::Chosen { round, value } => {
                    self.check_chosen(round, &value, "proposer")?;
                    self.trace(20_000 + round);
                    let client = &mut self.clients[c];
                    client.proposer = None;
                    client.next_round = round + 1;
                    if client.pending.front() == Some(&value) {
                        client.pending.pop_front();
                    }
                }
            }
        }
        Ok(())
    }
}

impl Sim {
    fn leader_receive(&mut self, c: usize, from: Node, reply: Reply<Value>) -> Result<(), String> {
        if matches!(reply, Reply::RangePromise { .. }) {
            let Some((campaign, _)) = self.leaders[c].campaign.as_mut() else {
                return Ok(());
            };
            let actions = campaign.handle(from, reply);
            return self.campaign_actions(c, actions);
        }
        let round = match &reply {
            Reply::Promise { round, .. }
            | Reply::Accept { round, .. }
            | Reply::Chosen { round, .. } => *round,
            Reply::RangePromise { .. } => return Ok(()),
        };
        let Some(flight) = self.leaders[c].inflight.get_mut(&round) else {
            return Ok(());
        };
        let actions = flight.proposer.handle(from, reply);
        self.round_actions(c, round, actions)
    }

    fn campaign_actions(
        &mut self,
        c: usize,
        actions: Vec<CampaignAction<Node, Value>>,
    ) -> Result<(), String> {
        let me = self.client_node(c);
        for action in actions {
            match action {
                CampaignAction::Send { to, request } => self.send(me, to, Msg::Request(request)),
                CampaignAction::Elected {
                    ballot,
                    from,
                    recovered,
                } => {
                    self.report.elections += 1;
                    self.trace(30_000 + from);
                    let client = &mut self.leaders[c];
                    client.campaign = None;
                    client.leadership = Some(Leadership::new(ballot, from));
                    // A recovered vote may be a chosen value that others know already.
                    if let Some(&highest) = recovered.keys().next_back() {
                        if self.cfg.broken_lease != Some(BrokenLease::RecoveredNotExposed) {
                            client.exposed = client.exposed.max(Some(highest));
                        }
                    }
                    client.recovered = recovered;
                    client.cursor = from;
                }
                CampaignAction::Lost { promised_number } => {
                    let backoff = 1 + self.rng.below(30);
                    let client = &mut self.leaders[c];
                    client.campaign = None;
                    client.highest_number = client.highest_number.max(promised_number);
                    client.wake_at = self.now + backoff;
                }
            }
        }
        Ok(())
    }

    fn round_actions(
        &mut self,
        c: usize,
        round: u64,
        actions: Vec<Action<Node, Value>>,
    ) -> Result<(), String> {
        let me = self.client_node(c);
        for action in actions {
            match action {
                Action::Send { to, request } => self.send(me, to, Msg::Request(request)),
                Action::BackOff { millis } => {
                    // Refused or timed out: this client's leadership may be gone. The round goes on
                    // with both phases; a new campaign waits for the back-off.
                    let now = self.now;
                    let client = &mut self.leaders[c];
                    client.leadership = None;
                    client.wake_at = client.wake_at.max(now + millis);
                    if let Some(flight) = client.inflight.get_mut(&round) {
                        flight.wake_at = now + millis;
                        client.highest_number = client
                            .highest_number
                            .max(flight.proposer.ballot().map_or(0, |b| b.number));
                    }
                    self.trace(10_000 + millis);
                }
                Action::Chosen { round, value } => {
                    self.check_chosen(round, &value, "leader")?;
                    self.trace(20_000 + round);
                    // The learn messages left with this action: others may know the value before
                    // this leader records it, some ticks later.
                    let at = match self.cfg.recording_ticks {
                        0 => self.now,
                        ticks => self.now + self.rng.below(ticks + 1),
                    };
                    let client = &mut self.leaders[c];
                    client.exposed = client.exposed.max(Some(round));
                    client.recording.insert(round, (value.clone(), at));
                    if let Some(flight) = client.inflight.remove(&round) {
                        match flight.own {
                            Some(own) if flight.proposed != value => client.pending.push_front(own),
                            Some(own) if chain_tags(&value).1.is_some() => {
                                client.undecided.insert(round, own);
                            }
                            _ => {}
                        }
                    }
                    if at == self.now {
                        self.record_chosen(c);
                    }
                }
            }
        }
        Ok(())
    }

    /// Records the chosen values of leader `c` that are due: from now on it knows them.
    fn record_chosen(&mut self, c: usize) {
        let now = self.now;
        let client = &mut self.leaders[c];
        let due: Vec<u64> = client
            .recording
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(r, _)| *r)
            .collect();
        for round in due {
            let Some((value, _)) = client.recording.remove(&round) else {
                continue;
            };
            client.known.insert(round);
            client.learned.insert(round, value);
            // Own chained values whose round or predecessor is now known: appended if they take
            // effect, proposed again if void.
            for r in [round, round + 1] {
                let (Some(value), Some(previous)) = (
                    client.learned.get(&r),
                    r.checked_sub(1).and_then(|p| client.learned.get(&p)),
                ) else {
                    continue;
                };
                let effect = takes_effect(value, Some(previous));
                if let Some(own) = client.undecided.remove(&r) {
                    if !effect {
                        client.pending.push_front(own);
                    }
                }
            }
        }
    }

    fn drive_leaders(&mut self) -> Result<(), String> {
        for c in 0..self.leaders.len() {
            let me = self.client_node(c);
            let client = &self.leaders[c];
            if !client.up || client.paused {
                continue;
            }
            self.record_chosen(c);
            if self.cfg.read_index && self.rng.chance(20) {
                self.start_read_index(c);
            }
            if self.cfg.lease_ticks > 0 {
                self.renew_lease(c);
                if self.rng.chance(30) {
                    self.lease_read(c)?;
                }
            }
            let client = &self.leaders[c];
            // Campaign when there is work and no leadership.
            if client.leadership.is_none()
                && client.campaign.is_none()
                && client.busy()
                && client.wake_at <= self.now
            {
                let number = client.highest_number + 1;
                let ballot = Ballot::new(number, format!("c{c}.{}.L", client.incarnation));
                let from = client.first_unknown();
                let campaign = Campaign::new(from, (0..self.cfg.acceptors).collect(), ballot);
                let actions = campaign.start();
                let client = &mut self.leaders[c];
                client.highest_number = number;
                client.campaign = Some((campaign, self.now + self.cfg.phase_timeout));
                self.campaign_actions(c, actions)?;
            }
            let client = &mut self.leaders[c];
            if let Some((campaign, deadline)) = client.campaign.as_mut() {
                if self.now >= *deadline {
                    let actions = campaign.timeout();
                    self.campaign_actions(c, actions)?;
                }
            }
            // Fill the pipeline with phase-2-only rounds.
            loop {
                let client = &mut self.leaders[c];
                if client.inflight.len() >= self.cfg.pipeline {
                    break;
                }
                let Some(leadership) = client.leadership.as_mut() else {
                    break;
                };
                while client.known.contains(&client.cursor)
                    || (client.inflight.contains_key(&client.cursor)
                        && !self.cfg.reuse_leader_rounds)
                {
                    client.cursor += 1;
                }
                let round = client.cursor;
                let (value, own) = match client.recovered.remove(&round) {
                    Some(value) => (value, None),
                    None if client.recovered.keys().any(|&r| r > round) => {
                        (format!("noop-c{c}-r{round}"), None)
                    }
                    None => match client.pending.pop_front() {
                        Some(value) => (value.clone(), Some(value)),
                        None => break,
                    },
                };
                let value = match (&own, self.cfg.chaining) {
                    (Some(app), Some(chaining)) => {
                        let id = format!("c{c}.{}.p{}", client.incarnation, client.proposals + 1);
                        let behind = round
                            .checked_sub(1)
                            .and_then(|r| client.inflight.get(&r))
                            .filter(|f| f.own.is_some())
                            .map(|f| f.proposed.clone());
                        match behind {
                            None => format!("{app}@{id}"),
                            Some(previous) => {
                                // The value in flight before this one takes effect if chosen:
                                // it names nothing, or what it names is known to be chosen.
                                let sure = match chain_tags(&previous).1 {
                                    None => true,
                                    Some(after) => round
                                        .checked_sub(2)
                                        .and_then(|r| client.learned.get(&r))
                                        .is_some_and(|v| chain_tags(v).0 == Some(after)),
                                };
                                if chaining == Chaining::Sound && !sure {
                                    client.pending.push_front(app.clone());
                                    break;
                                }
                                let named = chain_tags(&previous).0.unwrap_or_default();
                                format!("{app}@{id}<{named}")
                            }
                        }
                    }
                    _ => value,
                };
                let ballot = if self.cfg.reuse_leader_rounds {
                    Some(leadership.ballot.clone())
                } else {
                    leadership.claim(round)
                };
                let Some(ballot) = ballot else {
                    client.leadership = None;
                    if let Some(own) = own {
                        client.pending.push_front(own);
                    }
                    break;
                };
                client.proposals += 1;
                let id = format!("c{c}.{}.p{}", client.incarnation, client.proposals);
                let seed = self.rng.next_u64();
                let backoff = BackoffPolicy {
                    base_ms: 4,
                    max_ms: 60,
                };
                let proposed = value.clone();
                let mut proposer = Proposer::new(
                    round,
                    (0..self.cfg.acceptors).collect(),
                    id,
                    value,
                    seed,
                    backoff,
                );
                let actions = proposer.start_accepting(ballot);
                let client = &mut self.leaders[c];
                if !self.cfg.reuse_leader_rounds {
                    client.cursor = round + 1;
                }
                client.inflight.insert(
                    round,
                    InFlight {
                        proposer,
                        own,
                        proposed,
                        deadline: self.now + self.cfg.phase_timeout,
                        wake_at: 0,
                    },
                );
                self.report.leader_rounds += 1;
                self.round_actions(c, round, actions)?;
                if self.cfg.reuse_leader_rounds {
                    // One proposal per tick, all of them in the same round.
                    break;
                }
            }
            // Rounds that were refused go on with both phases.
            let rounds: Vec<u64> = self.leaders[c].inflight.keys().copied().collect();
            for round in rounds {
                let now = self.now;
                let timeout = self.cfg.phase_timeout;
                let Some(flight) = self.leaders[c].inflight.get_mut(&round) else {
                    continue;
                };
                let actions = if flight.proposer.in_flight() {
                    if now < flight.deadline {
                        continue;
                    }
                    flight.proposer.timeout()
                } else if flight.proposer.chosen().is_none() && flight.wake_at <= now {
                    flight.deadline = now + timeout;
                    flight.proposer.start()
                } else {
                    continue;
                };
                self.round_actions(c, round, actions)?;
            }
            let _ = me;
        }
        Ok(())
    }
}

fn runs() -> u64 {
    std::env::var("PAXOS_SIM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn seeds() -> Vec<u64> {
    match std::env::var("PAXOS_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (0..runs()).collect(),
    }
}

fn check_many(cfg: Config) {
    let mut totals = Report::default();
    for seed in seeds() {
        match Sim::new(cfg, seed).run() {
            Ok(report) => {
                totals.chosen_rounds += report.chosen_rounds;
                totals.delivered += report.delivered;
                totals.crashes += report.crashes;
                totals.partitions += report.partitions;
                totals.elections += report.elections;
                totals.leader_rounds += report.leader_rounds;
                totals.pauses += report.pauses;
                totals.lease_reads += report.lease_reads;
                totals.read_index_reads += report.read_index_reads;
                totals.read_index_past_rounds_in_flight += report.read_index_past_rounds_in_flight;
                totals.reads_past_rounds_in_flight += report.reads_past_rounds_in_flight;
                totals.chained += report.chained;
                totals.void += report.void;
            }
            Err(failure) => panic!(
                "seed {seed} with {} acceptors failed: {failure}\n  replay: PAXOS_SIM_SEED={seed} cargo test -p paxos-core --test simulation",
                cfg.acceptors
            ),
        }
    }
    // The fault schedule must actually have struck, or the run proves nothing.
    assert!(totals.crashes > 0 && totals.partitions > 0, "{totals:?}");
    if cfg.leaders {
        assert!(
            totals.elections > 0 && totals.leader_rounds > 0 && totals.pauses > 0,
            "{totals:?}"
        );
    }
    if cfg.read_index {
        assert!(totals.read_index_past_rounds_in_flight > 0, "{totals:?}");
    }
    if cfg.lease_ticks > 0 {
        assert!(totals.lease_reads > 0, "{totals:?}");
        if cfg.recording_ticks > 0 {
            assert!(totals.reads_past_rounds_in_flight > 0, "{totals:?}");
        }
    }
    if cfg.chaining.is_some() {
        // Both sides of the rule must have been exercised.
        assert!(totals.chained > 0 && totals.void > 0, "{totals:?}");
    }
    assert!(totals.chosen_rounds >= cfg.clients * cfg.values_per_client);
    eprintln!("{} acceptors: {totals:?}", cfg.acceptors);
}

#[test]
fn three_acceptors_are_safe_and_live() {
    check_many(Config::new(3));
}

#[test]
fn five_acceptors_are_safe_and_live() {
    check_many(Config {
        clients: 4,
        ..Config::new(5)
    });
}

#[test]
fn heavy_loss_and_contention_stay_safe() {
    check_many(Config {
        clients: 5,
        values_per_client: 3,
        drop_pct: 30,
        dup_pct: 20,
        crash_pct_per_tick: 5,
        ..Config::new(5)
    });
}

#[test]
fn a_seed_replays_exactly() {
    let cfg = Config::new(3);
    for seed in [3, 17, 99] {
        let a = Sim::new(cfg, seed).run().expect("run succeeds");
        let b = Sim::new(cfg, seed).run().expect("run succeeds");
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.delivered, b.delivered);
    }
    let a = Sim::new(cfg, 1).run().expect("run succeeds");
    let b = Sim::new(cfg, 2).run().expect("run succeeds");
    assert_ne!(
        a.trace_hash, b.trace_hash,
        "different seeds explore different runs"
    );
}

#[test]
fn the_checker_catches_acceptors_that_forget() {
    let cfg = Config {
        broken_acceptors: true,
        clients: 4,
        ..Config::new(3)
    };
    let violations = (0..300)
        .filter_map(|seed| Sim::new(cfg, seed).run().err())
        .filter(|e| e.starts_with("safety"))
        .count();
    assert!(
        violations > 0,
        "a broken acceptor went unnoticed in 300 runs"
    );
}

#[test]
fn leaders_with_pipelined_rounds_are_safe_and_live() {
    check_many(Config::leaders(3));
}

#[test]
fn five_acceptors_with_leaders_stale_and_paused_stay_safe() {
    check_many(Config {
        clients: 4,
        pause_pct_per_tick: 4,
        ..Config::leaders(5)
    });
}

#[test]
fn the_checker_catches_a_leader_reusing_a_round() {
    let cfg = Config {
        reuse_leader_rounds: true,
        liveness_bound_ticks: 2_000,
        drop_pct: 0,
        crash_pct_per_tick: 0,
        partition_pct_per_tick: 0,
        ..Config::leaders(3)
    };
    let violations = (0..300)
        .filter_map(|seed| Sim::new(cfg, seed).run().err())
        .filter(|e| e.starts_with("safety"))
        .count();
    assert!(
        violations > 0,
        "a leader reusing rounds went unnoticed in 300 runs"
    );
}

#[test]
fn chained_values_take_effect_only_behind_values_that_do() {
    check_many(Config {
        chaining: Some(Chaining::Sound),
        ..Config::leaders(3)
    });
}

#[test]
fn five_acceptors_with_chained_values_and_paused_leaders_stay_safe() {
    check_many(Config {
        clients: 4,
        pause_pct_per_tick: 4,
        chaining: Some(Chaining::Sound),
        ..Config::leaders(5)
    });
}

/// Chaining behind a value whose own condition is not known to hold lets a value take effect
/// behind a void one: one look back would not be enough. The checker must see it.
#[test]
fn the_checker_catches_values_chained_behind_anything() {
    let cfg = Config {
        chaining: Some(Chaining::BehindAnything),
        ..Config::leaders(3)
    };
    let violations = (0..1000)
        .filter_map(|seed| Sim::new(cfg, seed).run().err())
        .filter(|e| e.starts_with("chain"))
        .count();
    assert!(
        violations > 0,
        "values chained behind anything went unnoticed"
    );
}

#[test]
fn leader_leases_on_drifting_clocks_read_everything_chosen() {
    check_many(Config {
        lease_ticks: 40,
        ..Config::leaders(3)
    });
}

#[test]
fn five_acceptors_with_leases_stale_and_paused_leaders_stay_safe() {
    check_many(Config {
        clients: 4,
        pause_pct_per_tick: 4,
        lease_ticks: 60,
        ..Config::leaders(5)
    });
}

/// Lease rules left out one at a time must each fail some seeded runs. Long leases and frequent
/// crashes make the windows they open (clock drift, a forgotten grant) wide enough to hit.
fn lease_violations(broken: BrokenLease, seeds: u64) -> usize {
    lease_violations_among(broken, seeds, 3)
}

fn lease_violations_among(broken: BrokenLease, seeds: u64, clients: usize) -> usize {
    // Only a read past an exposed round needs the window between choosing and recording.
    let recording_ticks = match broken {
        BrokenLease::IgnoresExposure | BrokenLease::RecoveredNotExposed => {
            Config::new(3).recording_ticks
        }
        _ => 0,
    };
    let cfg = Config {
        recording_ticks,
        clients,
        lease_ticks: 300,
        crash_pct_per_tick: 6,
        pause_pct_per_tick: 0,
        broken_lease: Some(broken),
        ..Config::leaders(3)
    };
    (0..seeds)
        .filter_map(|seed| Sim::new(cfg, seed).run().err())
        .filter(|e| e.starts_with("lease read"))
        .count()
}

#[test]
fn the_checker_catches_leases_that_do_not_refuse_phase_1() {
    assert!(lease_violations(BrokenLease::NotEnforced, 300) > 0);
}

#[test]
fn the_checker_catches_leases_without_drift_allowance() {
    assert!(lease_violations(BrokenLease::NoDriftAllowance, 1000) > 0);
}

#[test]
fn the_checker_catches_acceptors_that_forget_grants_in_a_restart() {
    assert!(lease_violations(BrokenLease::NoQuietAfterRestart, 1000) > 0);
}

/// A leader that reads past a round it found chosen, before recording it, misses what a member
/// learned from its learn messages.
#[test]
fn the_checker_catches_reads_past_exposed_rounds() {
    assert!(lease_violations(BrokenLease::IgnoresExposure, 1000) > 0);
}

/// A recovered vote may be a value chosen, and learned by members, before the campaign: reading
/// past it misses what a member may have served.
#[test]
fn the_checker_catches_reads_past_recovered_rounds() {
    assert!(lease_violations(BrokenLease::RecoveredNotExposed, 1000) > 0);
}

#[test]
fn leaders_reading_by_read_index_see_everything_chosen_before() {
    check_many(Config {
        read_index: true,
        ..Config::leaders(3)
    });
}

#[test]
fn five_acceptors_reading_by_read_index_with_paused_leaders_stay_safe() {
    check_many(Config {
        clients: 4,
        pause_pct_per_tick: 4,
        read_index: true,
        ..Config::leaders(5)
    });
}

/// A read index that does not ask for promises above the leader's ballot reads past rounds a newer
/// leader chose.
#[test]
fn the_checker_catches_a_read_index_that_ignores_higher_promises() {
    let cfg = Config {
        read_index: true,
        read_index_ignores_promises: true,
        ..Config::leaders(3)
    };
    let violations = (0..1000)
        .filter_map(|seed| Sim::new(cfg, seed).run().err())
        .filter(|e| e.starts_with("read index"))
        .count();
    assert!(
        violations > 0,
        "a read index ignoring promises went unnoticed"
    );
}

/// A slot promise from a leader that fell back to both phases in a round beyond what the lease
/// holder handed out: rarer, it needs a fourth leader (about 1 run in 1,000).
#[test]
fn the_checker_catches_grants_over_higher_slot_promises() {
    assert!(lease_violations_among(BrokenLease::IgnoresHigherSlotPromises, 3000, 4) > 0);
}
