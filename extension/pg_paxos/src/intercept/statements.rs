//! Which tables are replicated, and the writes to them the planner hook has deparsed, by the query
//! id it tagged them with (a prepared statement is executed long after it was planned).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};

use crate::error::OrRaise;
use crate::paxos::apply::as_extension_owner;

/// Query ids this extension gives to intercepted statements have the top bit set.
const TAG: u64 = 1 << 63;

/// A write to replicated tables: its group, its deparsed text (`$n` for the user's parameters and
/// `$(SITE_PARAMETER_BASE + 1 + k)` for the value of site `k`), its value sites, and whether it
/// reads tables (then rows may reach `nextval` in another order on another node, so a sequence
/// may be drawn from only once).
#[derive(Clone, Debug)]
pub struct Intercepted {
    pub group: String,
    pub sql: String,
    pub sites: Vec<super::determinism::Site>,
    pub reads_tables: bool,
    /// A blind insert (see `planner::is_blind_insert`): it may share a round with others.
    pub batchable: bool,
    /// A blind insert that draws from no sequence: a member that does not lead may send it to the
    /// leader (see `paxos::forwarding`). The leader's own inserts draw from its sequences too.
    pub forwardable: bool,
}

thread_local! {
    static NEXT_TAG: RefCell<u64> = const { RefCell::new(0) };
    /// Intercepted statements by query id; prepared statements are executed long after analysis.
    static INTERCEPTED: RefCell<HashMap<u64, Intercepted>> = RefCell::new(HashMap::new());
    /// Replicated tables (oid -> group), as of the version they were read at.
    static REPLICATED: RefCell<Option<(TablesVersion, HashMap<pg_sys::Oid, String>)>> = const { RefCell::new(None) };
    /// A relation changed (created, dropped, renamed...) since the tables were read: their oids
    /// are read again.
    static RELATIONS_CHANGED: Cell<bool> = const { Cell::new(false) };
    /// This transaction registered tables: others read them again once it ends.
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Bumped whenever any backend of the node registers replicated tables (and again when its
/// transaction ends): a backend keeps its map of replicated tables across transactions until
/// then, or until a relation changes.
static TABLES_GENERATION: PgAtomic<AtomicU64> =
    unsafe { PgAtomic::new(c"pg_paxos_tables_generation") };
static SHARED: AtomicBool = AtomicBool::new(false);

/// What a map of replicated tables was read at: the extension object and the generation (or,
/// without shared memory, the local transaction: then it is read once per transaction).
#[derive(Clone, Copy, PartialEq, Eq)]
struct TablesVersion {
    extension: pg_sys::Oid,
    generation: u64,
    transaction: Option<u32>,
}

/// Reserves the shared memory; call from `_PG_init`.
pub fn init() {
    // SAFETY: reads a flag the postmaster sets while loading preloaded libraries; the callback
    // only sets a flag of this backend.
    unsafe {
        if pg_sys::process_shared_preload_libraries_in_progress {
            pg_shmem_init!(TABLES_GENERATION);
            SHARED.store(true, Ordering::Relaxed);
        }
        pg_sys::CacheRegisterRelcacheCallback(Some(relation_changed), pg_sys::Datum::from(0));
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn relation_changed(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    RELATIONS_CHANGED.with(|c| c.set(true));
    super::forget_extension_oid();
}

/// Tables were registered in this transaction: every backend reads them again (now, and once the
/// transaction ended, when they are visible).
pub fn tables_registered() {
    REGISTERED.with(|r| r.set(true));
    bump_generation();
}

/// At the end of a transaction.
pub fn transaction_ended() {
    if REGISTERED.with(|r| r.replace(false)) {
        bump_generation();
    }
}

fn bump_generation() {
    if SHARED.load(Ordering::Relaxed) {
        TABLES_GENERATION.get().fetch_add(1, Ordering::SeqCst);
    }
}

fn tables_version() -> TablesVersion {
    // SAFETY: MyProc is set for every backend that runs queries.
    let lxid = unsafe { (*pg_sys::MyProc).lxid };
    let shared = SHARED.load(Ordering::Relaxed);
    TablesVersion {
        extension: super::extension_oid(),
        generation: if shared {
            TABLES_GENERATION.get().load(Ordering::SeqCst)
        } else {
            0
        },
        transaction: (!shared).then_some(lxid),
    }
}

pub fn intercepted(query_id: u64) -> Option<Intercepted> {
    if query_id & TAG == 0 {
        return None;
    }
    INTERCEPTED.with(|m| m.borrow().get(&query_id).cloned())
}

/// The group a table is replicated in, if any.
pub fn replicated_group(relid: pg_sys::Oid) -> Option<String> {
    // The version is taken before reading, so a change made meanwhile is read again next time.
    let version = tables_version();
    let relations_changed = RELATIONS_CHANGED.with(|c| c.replace(false));
    let fresh = !relations_changed
        && REPLICATED.with(|r| r.borrow().as_ref().is_some_and(|(v, _)| *v == version));
    if !fresh {
        let tables =
            super::bypassing(|| super::with_snapshot(|| as_extension_owner(load_replicated)))
                .or_raise();
        REPLICATED.with(|r| *r.borrow_mut() = Some((version, tables)));
    }
    REPLICATED.with(|r| {
        r.borrow()
            .as_ref()
            .and_then(|(_, t)| t.get(&relid).cloned())
    })
}

fn load_replicated() -> crate::error::Result<HashMap<pg_sys::Oid, String>> {
    let mut out = HashMap::new();
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT group_id, pg_catalog.to_regclass(table_name)::pg_catalog.oid FROM paxos.replicated_tables",
            None,
            &[],
        )?;
        for row in rows {
            if let (Some(group), Some(oid)) = (row.get::<String>(1)?, row.get::<pg_sys::Oid>(2)?) {
                out.insert(oid, group);
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })?;
    Ok(out)
}

/// A new query id for a write's plan.
pub fn next_tag() -> u64 {
    NEXT_TAG.with(|t| {
        let mut t = t.borrow_mut();
        *t += 1;
        *t | TAG
    })
}

/// Registers a deparsed write under the query id its plan carries.
pub fn register(tag: u64, write: Intercepted) {
    INTERCEPTED.with(|m| {
        let mut m = m.borrow_mut();
        // Prepared statements keep their tag; a session preparing without end is bounded here.
        if m.len() > 10_000 {
            m.clear();
        }
        m.insert(tag, write);
    });
}

/// The query as SQL, schema-qualified and with unambiguous literals: `search_path`, `DateStyle`,
/// `IntervalStyle` and `extra_float_digits` are pinned while deparsing, as postgres_fdw does.
pub unsafe fn deparse(query: *mut pg_sys::Query) -> String {
    // SAFETY: GUC changes are undone at the same nest level before returning.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        for (name, value) in [
            (c"search_path", c"pg_catalog"),
            (c"DateStyle", c"ISO"),
            (c"IntervalStyle", c"postgres"),
            (c"extra_float_digits", c"3"),
        ] {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        let text = pg_sys::pg_get_querydef(query, false);
        let sql = CStr::from_ptr(text).to_string_lossy().into_owned();
        pg_sys::AtEOXact_GUC(true, level);
        sql
    }
}
