//! One tokio runtime and one connection per member, per backend, created lazily (never in the
//! postmaster). Waiting is interruptible: `statement_timeout` and `pg_cancel_backend` stop a call
//! within ~50 ms, and the queries it had sent to members are cancelled.
//!
//! Rule: no `pg_sys` call and no PostgreSQL error inside `block_on`; warnings collected while the
//! runtime runs are emitted afterwards by [`Net::emit_warnings`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::time::Instant;
use tokio_postgres::error::Severity;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use crate::error::{PaxosError, Result};

/// How long to let the runtime run before looking at PostgreSQL's interrupt flags again.
const INTERRUPT_POLL: Duration = Duration::from_millis(50);
const CANCEL_BUDGET: Duration = Duration::from_millis(200);

/// A parameter of a remote call, bound with an explicit type: a call is one message flight (no
/// prepare round trip), and it runs on the member even if the caller stops waiting for its answer
/// (a statement prepared first and run after would then never run). See [`Conn`] for how
/// statements are prepared without that round trip.
#[derive(Clone, Debug)]
pub enum Param {
    Text(Option<String>),
    Int(i64),
    Bool(bool),
}

impl Param {
    fn typed(&self) -> (&(dyn ToSql + Sync), Type) {
        match self {
            Param::Text(v) => (v, Type::TEXT),
            Param::Int(v) => (v, Type::INT8),
            Param::Bool(v) => (v, Type::BOOL),
        }
    }
}

#[derive(Debug, Clone)]
pub enum LinkError {
    /// No connection, or it broke: the member counts as down for a while.
    Unreachable(String),
    /// The member's reply could not be used (malformed, unexpected).
    Remote(String),
    /// The member answered with an SQL error: its SQLSTATE and message.
    Sql { code: String, message: String },
}

impl LinkError {
    pub fn message(&self) -> &str {
        match self {
            LinkError::Unreachable(m) | LinkError::Remote(m) => m,
            LinkError::Sql { message, .. } => message,
        }
    }
}

/// A pooled connection to a member, with the statements prepared on it so far.
///
/// A statement's first call on a connection goes unnamed while a task prepares it beside; later
/// calls run the prepared statement. On the member that saves parsing, analysing and planning
/// every call, about a third of what a vote cost there.
struct Conn {
    client: Client,
    /// `None` while the statement's preparation is under way.
    prepared: Mutex<HashMap<&'static str, Option<Statement>>>,
    /// The preparation tasks: each holds the connection, so they are stopped when it leaves the
    /// pool, to let its socket close at once.
    preparing: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// A preparation that gets no answer in this long is given up (and tried again on a later call).
const PREPARE_BUDGET: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Shared {
    conns: HashMap<String, Arc<Conn>>,
    /// Members that failed recently, with the time until which they are skipped.
    down_until: HashMap<String, Instant>,
    /// How long each member took to answer lately (a moving average).
    latency: HashMap<String, Duration>,
    warnings: Vec<String>,
}

#[derive(Clone)]
pub struct Net {
    rt: Rc<Runtime>,
    shared: Rc<RefCell<Shared>>,
}

thread_local! {
    static NET: RefCell<Option<Net>> = const { RefCell::new(None) };
}

/// This backend's network state, created on first use.
pub fn net() -> Result<Net> {
    NET.with(|cell| {
        let mut slot = cell.borrow_mut();
        if let Some(net) = slot.as_ref() {
            return Ok(net.clone());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PaxosError::Internal(format!("cannot start the network runtime: {e}")))?;
        let net = Net {
            rt: Rc::new(rt),
            shared: Rc::new(RefCell::new(Shared::default())),
        };
        *slot = Some(net.clone());
        Ok(net)
    })
}

/// An error with its causes ("error connecting to server: Connection refused (os error 111)").
/// tokio-postgres errors never include connection settings, so no credential can leak through here.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Reads one of PostgreSQL's interrupt flags.
fn flag(flag: *const pgrx::pg_sys::sig_atomic_t) -> bool {
    // SAFETY: a volatile read of a sig_atomic_t that signal handlers set.
    unsafe { std::ptr::read_volatile(flag) != 0 }
}

/// An interrupt of any kind is waiting (catch-up and barrier signals included).
fn interrupt_pending() -> bool {
    flag(std::ptr::addr_of!(pgrx::pg_sys::InterruptPending))
}

// Not in pgrx's bindings (pmsignal.h). Every backend has the death signal set up
// (InitPostmasterChild), so the flag is set when the postmaster may be gone.
extern "C" {
    static postmaster_possibly_dead: pgrx::pg_sys::sig_atomic_t;
    fn PostmasterIsAliveInternal() -> bool;
}

/// PostgreSQL's `PostmasterIsAlive()`: a flag read, and a pipe read only once the flag is set.
fn postmaster_alive() -> bool {
    if !flag(std::ptr::addr_of!(postmaster_possibly_dead)) {
        return true;
    }
    // SAFETY: a plain C function without arguments that reads the postmaster's pipe.
    unsafe { PostmasterIsAliveInternal() }
}

/// An interrupt that will end the statement is waiting: a cancel (pg_cancel_backend,
/// statement_timeout, lock_timeout) or a termination.
fn statement_ending_interrupt() -> bool {
    flag(std::ptr::addr_of!(pgrx::pg_sys::QueryCancelPending))
        || flag(std::ptr::addr_of!(pgrx::pg_sys::ProcDiePending))
}

impl Net {
    /// A handle on the member known as `key` (its connection string), reached with `config`.
    pub fn link(
        &self,
        key: &str,
        label: String,
        config: Config,
        connect_timeout: Duration,
        retry_interval: Duration,
    ) -> Link {
        Link {
            key: key.to_string(),
            label,
            config,
            connect_timeout,
            retry_interval,
            shared: self.shared.clone(),
        }
    }

    /// Runs `fut` to completion, servicing PostgreSQL interrupts between slices.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        loop {
            let slice = self
                .rt
                .block_on(async { tokio::time::timeout(INTERRUPT_POLL, fut.as_mut()).await });
            if let Ok(out) = slice {
                return out;
            }
            if !postmaster_alive() {
                // As PostgreSQL's own waits do: a backend that outlives its postmaster keeps the
                // shared memory attached, and a restarted node would refuse to start.
                self.cancel_all();
                pgrx::ereport!(
                    pgrx::PgLogLevel::FATAL,
                    pgrx::PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN,
                    "terminating connection due to unexpected postmaster exit"
                );
            }
            if interrupt_pending() {
                // Only an interrupt that ends the statement cancels what members run for us; any
                // other (cache catch-up, barriers) is handled and the wait goes on.
                if statement_ending_interrupt() {
                    self.cancel_all();
                    self.emit_warnings();
                }
                pgrx::check_for_interrupts!();
            }
        }
    }

    /// Cancels whatever the members run for us and drops the connections: after an interrupt their
    /// state is unknown.
    fn cancel_all(&self) {
        let conns: Vec<Arc<Conn>> = self
            .shared
            .borrow_mut()
            .conns
            .drain()
            .map(|(_, c)| c)
            .collect();
        conns.iter().for_each(|c| c.stop_preparing());
        let tokens: Vec<_> = conns.iter().map(|c| c.client.cancel_token()).collect();
        self.rt.block_on(async {
            let cancels = futures::future::join_all(tokens.iter().map(|t| t.cancel_query(NoTls)));
            let _ = tokio::time::timeout(CANCEL_BUDGET, cancels).await;
        });
    }

    pub fn emit_warnings(&self) {
        let warnings = std::mem::take(&mut self.shared.borrow_mut().warnings);
        for w in warnings {
            pgrx::warning!("pg_paxos: {w}");
        }
    }
}

impl Conn {
    fn prepared(&self) -> MutexGuard<'_, HashMap<&'static str, Option<Statement>>> {
        // Nothing panics while holding the lock, so it is never poisoned; if it were, the map
        // would still be whole.
        self.prepared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `sql`: its call is handed to the connection at the first poll, as one message flight.
    async fn run(
        self: &Arc<Self>,
        sql: &'static str,
        typed: &[(&(dyn ToSql + Sync), Type)],
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let known = self.prepared().get(sql).cloned();
        match known {
            Some(Some(statement)) => {
                let values: Vec<&(dyn ToSql + Sync)> = typed.iter().map(|(v, _)| *v).collect();
                let rows = self.client.query(&statement, &values).await;
                if rows.is_err() {
                    // Prepared again on a later call, in case the error came from the preparation
                    // (a function of the extension replaced since, say).
                    self.prepared().remove(sql);
                }
                rows
            }
            Some(None) => self.client.query_typed(sql, typed).await,
            None => {
                self.prepare_beside(sql, typed.iter().map(|(_, t)| t.clone()).collect());
                self.client.query_typed(sql, typed).await
            }
        }
    }

    /// Prepares `sql` in a task of its own: callers that do not wait for their answer (learn
    /// messages) would otherwise drop the preparation with their call.
    fn prepare_beside(self: &Arc<Self>, sql: &'static str, types: Vec<Type>) {
        self.prepared().insert(sql, None);
        let conn = Arc::clone(self);
        let task = tokio::spawn(async move {
            let prepared =
                tokio::time::timeout(PREPARE_BUDGET, conn.client.prepare_typed(sql, &types)).await;
            let mut known = conn.prepared();
            match prepared {
                Ok(Ok(statement)) => known.insert(sql, Some(statement)),
                _ => known.remove(sql),
            };
        });
        let mut preparing = self.preparing.lock().unwrap_or_else(|e| e.into_inner());
        preparing.retain(|t| !t.is_finished());
        preparing.push(task.abort_handle());
    }

    /// Stops the preparations under way, which hold this connection: called when it leaves the
    /// pool.
    fn stop_preparing(&self) {
        let preparing =
            std::mem::take(&mut *self.preparing.lock().unwrap_or_else(|e| e.into_inner()));
        preparing.iter().for_each(|t| t.abort());
    }
}

impl Shared {
    /// Takes the connection to `key` out of the pool, stopping what still holds it.
    fn retire(&mut self, key: &str) {
        if let Some(conn) = self.conns.remove(key) {
            conn.stop_preparing();
        }
    }
}

/// One member, as seen from this backend.
#[derive(Clone)]
pub struct Link {
    pub key: String,
    /// Credential-free description for messages.
    pub label: String,
    config: Config,
    connect_timeout: Duration,
    retry_interval: Duration,
    shared: Rc<RefCell<Shared>>,
}

impl Link {
    /// True while the member is skipped after a recent failure.
    pub fn recently_down(&self) -> bool {
        self.shared
            .borrow()
            .down_until
            .get(&self.key)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Skips this member for the retry interval (see [`Link::recently_down`]), warning once.
    pub fn mark_down(&self, why: &str) {
        let mut shared = self.shared.borrow_mut();
        let was_down = shared.down_until.contains_key(&self.key);
        shared
            .down_until
            .insert(self.key.clone(), Instant::now() + self.retry_interval);
        shared.retire(&self.key);
        if !was_down {
            let msg = format!(
                "member {} is unreachable ({why}); it is skipped for {} ms at a time while a majority answers without it",
                self.label,
                self.retry_interval.as_millis()
            );
            shared.warnings.push(msg);
        }
    }

    /// How long the member took to answer lately (zero when it was not asked yet).
    pub fn recent_latency(&self) -> Duration {
        self.shared
            .borrow()
            .latency
            .get(&self.key)
            .copied()
            .unwrap_or_default()
    }

    /// The member did not answer within `waited`: count it as at least that slow.
    pub fn note_slow(&self, waited: Duration) {
        let mut shared = self.shared.borrow_mut();
        let entry = shared.latency.entry(self.key.clone()).or_default();
        *entry = (*entry).max(waited);
    }

    fn note_latency(&self, took: Duration) {
        let mut shared = self.shared.borrow_mut();
        let entry = shared.latency.entry(self.key.clone()).or_insert(took);
        *entry = (*entry * 3 + took) / 4;
    }

    fn mark_up(&self) {
        let mut shared = self.shared.borrow_mut();
        if shared.down_until.remove(&self.key).is_some() {
            shared
                .warnings
                .push(format!("member {} is reachable again", self.label));
        }
    }

    async fn client(&self) -> std::result::Result<(Arc<Conn>, bool), LinkError> {
        let pooled = self.shared.borrow().conns.get(&self.key).cloned();
        if let Some(conn) = pooled {
            if !conn.client.is_closed() {
                return Ok((conn, true));
            }
            self.shared.borrow_mut().retire(&self.key);
        }
        let connect = self.config.connect(NoTls);
        let (client, connection) = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(LinkError::Unreachable(describe(&e))),
            Err(_) => {
                return Err(LinkError::Unreachable(format!(
                    "no connection within {} ms",
                    self.connect_timeout.as_millis()
                )))
            }
        };
        tokio::spawn(async move {
            // The connection ends when the client is dropped or the member goes away; the next
            // call notices through `is_closed` and reconnects.
            let _ = connection.await;
        });
        let conn = Arc::new(Conn {
            client,
            prepared: Mutex::new(HashMap::new()),
            preparing: Mutex::new(Vec::new()),
        });
        self.shared
            .borrow_mut()
            .conns
            .insert(self.key.clone(), conn.clone());
        Ok((conn, false))
    }

    /// Opens the pooled connection now if there is none, so that many requests sent at once share
    /// it instead of each opening its own. A failure is left for the requests to report.
    pub async fn warm_up(&self) {
        if self.recently_down() {
            return;
        }
        if let Err(e) = self.client().await {
            self.mark_down(e.message());
        }
    }

    /// Like [`Link::query`], but gives up after `limit` (the member counts as not answering).
    pub async fn query_within(
        &self,
        limit: Duration,
        sql: &'static str,
        params: &[Param],
    ) -> std::result::Result<Vec<Row>, LinkError> {
        Self::within(limit, self.query(sql, params)).await
    }

    /// Like [`Link::query_within`], but never sends the statement a second time: for a request
    /// that must not run twice (a pooled connection that broke may have run it already).
    pub async fn query_within_once(
        &self,
        limit: Duration,
        sql: &'static str,
        params: &[Param],
    ) -> std::result::Result<Vec<Row>, LinkError> {
        Self::within(limit, self.query_with(sql, params, false)).await
    }

    async fn within(
        limit: Duration,
        call: impl Future<Output = std::result::Result<Vec<Row>, LinkError>>,
    ) -> std::result::Result<Vec<Row>, LinkError> {
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(LinkError::Unreachable(format!(
                "no answer within {} ms",
                limit.as_millis()
            )))
        })
    }

    /// Runs one statement on the member. A pooled connection that turns out to be broken (the
    /// member restarted) is replaced once before the member counts as unreachable.
    pub async fn query(
        &self,
        sql: &'static str,
        params: &[Param],
    ) -> std::result::Result<Vec<Row>, LinkError> {
        self.query_with(sql, params, true).await
    }

    async fn query_with(
        &self,
        sql: &'static str,
        params: &[Param],
        resend: bool,
    ) -> std::result::Result<Vec<Row>, LinkError> {
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = params.iter().map(Param::typed).collect();
        loop {
            let (conn, was_pooled) = match self.client().await {
                Ok(c) => c,
                Err(e) => {
                    self.mark_down(e.message());
                    return Err(e);
                }
            };
            let started = Instant::now();
            match conn.run(sql, &typed).await {
                Ok(rows) => {
                    self.note_latency(started.elapsed());
                    self.mark_up();
                    return Ok(rows);
                }
                Err(e) => {
                    // An SQL error on a connection that stays open is the member's answer; a
                    // fatal one (the member shut down, the session was terminated) ends the
                    // connection like a broken socket does.
                    let ends_session = |db: &tokio_postgres::error::DbError| {
                        matches!(
                            db.parsed_severity(),
                            Some(Severity::Fatal | Severity::Panic)
                        )
                    };
                    if let Some(db) = e.as_db_error().filter(|db| !ends_session(db)) {
                        return Err(LinkError::Sql {
                            code: db.code().code().to_string(),
                            message: db.message().to_string(),
                        });
                    }
                    self.shared.borrow_mut().retire(&self.key);
                    if was_pooled && resend {
                        continue;
                    }
                    let err = LinkError::Unreachable(describe(&e));
                    self.mark_down(err.message());
                    return Err(err);
                }
            }
        }
    }
}
