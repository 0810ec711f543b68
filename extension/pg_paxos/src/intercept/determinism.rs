//! Making a write deterministic before it is planned. The planner hook gets the rewritten query
//! (column defaults filled in) and turns it into three trees:
//!
//! - the tree that runs here, where every *value site* (a maximal subexpression that calls only
//!   built-in functions, contains no column, parameter, aggregate or subquery, and is not
//!   immutable: `now()`, `random()`, `gen_random_uuid()`, `clock_timestamp() + interval '1h'`,
//!   `current_user`) is wrapped in `paxos.capture_value`, and every call of `nextval` (explicit, or
//!   a serial or identity default) in `paxos.capture_sequence`, which record what was drawn;
//! - the tree that is deparsed into the logged text, with a placeholder parameter per value site
//!   (filled with the recorded value after execution) and `nextval` left in place (every node
//!   restarts the sequence at the proposer's first value before replaying, so it draws the same
//!   values in the same order);
//! - the tree that is checked for remaining mutable functions, with every site replaced.
//!
//! A value site evaluated several times with different results (`random()` per row) cannot be
//! replayed and fails the statement; see [`super::capture`].

use std::ffi::{c_void, CStr};

use pgrx::pg_guard;
use pgrx::pg_sys;
use pgrx::pg_sys::NodeTag;

use crate::error::{PaxosError, Result};

/// Placeholder parameters of value sites are numbered from here (`$1000001` is site 0), far above
/// any parameter a client binds.
pub const SITE_PARAMETER_BASE: i32 = 1_000_000;

/// A value site: the type of its value and its expression (for error messages).
#[derive(Clone, Debug)]
pub struct Site {
    pub typid: pg_sys::Oid,
    pub typmod: i32,
    pub expression: String,
}

/// The trees of one write.
pub struct Deterministic {
    pub execute: *mut pg_sys::Query,
    pub deparse: *mut pg_sys::Query,
    pub check: *mut pg_sys::Query,
    pub sites: Vec<Site>,
    pub reads_tables: bool,
    /// Each sequence is drawn from at one place of the statement at most (a place in a
    /// multi-row statement draws once per row).
    pub draws_each_sequence_at_one_place: bool,
    /// The statement draws from sequences.
    pub draws_sequences: bool,
}

/// The functions the execution tree calls.
#[derive(Clone, Copy)]
pub struct CaptureFunctions {
    pub value: pg_sys::Oid,
    pub sequence: pg_sys::Oid,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Execute,
    Deparse,
    Check,
    /// Only draws from sequences are replaced (by placeholders).
    SequencesOnly,
}

struct Context {
    mode: Mode,
    tag: u64,
    functions: CaptureFunctions,
    sites: Vec<Site>,
    sequences: Vec<pg_sys::Oid>,
}

/// Builds the three trees of a write; `tag` identifies the write to the capture functions.
///
/// # Safety
/// `query` must be a rewritten INSERT, UPDATE, DELETE or SELECT with modifying CTEs.
pub unsafe fn make_deterministic(
    query: *mut pg_sys::Query,
    tag: u64,
    functions: CaptureFunctions,
) -> Result<Deterministic> {
    // SAFETY: every tree below is a copy of `query` made by PostgreSQL's own copy and mutator
    // functions, in the current memory context.
    unsafe {
        let query = pg_sys::copyObjectImpl(query as *const c_void) as *mut pg_sys::Query;
        let mut refused = None;
        for_each_insert(query, &mut |insert| {
            move_defaults_into_values(insert);
            align_values_with_target_list(insert);
            if let Err(e) = check_defaults_of_insert_select(insert) {
                refused.get_or_insert(e);
            }
        });
        if let Some(error) = refused {
            return Err(error);
        }
        let build = |mode| {
            let mut context = Context {
                mode,
                tag,
                functions,
                sites: Vec::new(),
                sequences: Vec::new(),
            };
            let tree = pg_sys::query_tree_mutator(
                query,
                mutator(),
                &mut context as *mut Context as *mut c_void,
                0,
            );
            (tree, context)
        };
        let (execute, executed) = build(Mode::Execute);
        let (deparse, deparsed) = build(Mode::Deparse);
        let (check, _) = build(Mode::Check);
        for &sequence in &executed.sequences {
            require_sequence_privilege(sequence)?;
        }
        for_each_insert(deparse, &mut |insert| {
            (*insert).override_ = pg_sys::OverridingKind::OVERRIDING_SYSTEM_VALUE;
            strip_defaults_of_insert_select(insert);
        });
        Ok(Deterministic {
            execute,
            deparse,
            check,
            sites: deparsed.sites,
            reads_tables: reads_tables(query as *mut pg_sys::Node),
            draws_each_sequence_at_one_place: {
                let mut distinct: Vec<u32> =
                    executed.sequences.iter().map(|s| s.to_u32()).collect();
                distinct.sort_unstable();
                distinct.dedup();
                distinct.len() == executed.sequences.len()
            },
            draws_sequences: !executed.sequences.is_empty(),
        })
    }
}

type Mutator = unsafe extern "C-unwind" fn() -> *mut pg_sys::Node;
type MutatorWithArguments =
    unsafe extern "C-unwind" fn(*mut pg_sys::Node, *mut c_void) -> *mut pg_sys::Node;

fn mutator() -> Option<Mutator> {
    let f: MutatorWithArguments = mutate;
    // SAFETY: PostgreSQL's mutators call this pointer with exactly (node, context); the binding
    // declares it without arguments, as C does for generic callbacks.
    Some(unsafe { std::mem::transmute::<MutatorWithArguments, Mutator>(f) })
}

unsafe fn is(node: *const pg_sys::Node, tag: NodeTag) -> bool {
    // SAFETY: callers pass a valid node.
    !node.is_null() && unsafe { (*node).type_ } == tag
}

#[pg_guard]
unsafe extern "C-unwind" fn mutate(
    node: *mut pg_sys::Node,
    context: *mut c_void,
) -> *mut pg_sys::Node {
    // SAFETY: called by PostgreSQL's mutators with a valid node and our context.
    unsafe {
        if node.is_null() {
            return node;
        }
        let context = &mut *(context as *mut Context);
        if is(node, NodeTag::T_Query) {
            return pg_sys::query_tree_mutator(
                node as *mut pg_sys::Query,
                mutator(),
                context as *mut Context as *mut c_void,
                0,
            ) as *mut pg_sys::Node;
        }
        if let Some(sequence) = sequence_drawn(node) {
            return context.sequence_site(node, sequence);
        }
        if context.mode != Mode::SequencesOnly && is_value_site(node) {
            return context.value_site(node);
        }
        pg_sys::expression_tree_mutator(node, mutator(), context as *mut Context as *mut c_void)
    }
}

impl Context {
    /// A value site: captured when executed, a placeholder when deparsed or checked.
    unsafe fn value_site(&mut self, node: *mut pg_sys::Node) -> *mut pg_sys::Node {
        // SAFETY: `node` is a valid expression without columns (see `is_value_site`).
        unsafe {
            let index = self.sites.len();
            let typid = pg_sys::exprType(node);
            let typmod = pg_sys::exprTypmod(node);
            let collation = pg_sys::exprCollation(node);
            let expression = if self.mode == Mode::Deparse {
                let text = pg_sys::deparse_expression(node, std::ptr::null_mut(), false, false);
                CStr::from_ptr(text).to_string_lossy().into_owned()
            } else {
                String::new()
            };
            self.sites.push(Site {
                typid,
                typmod,
                expression,
            });
            match self.mode {
                Mode::Execute => capture_call(
                    self.functions.value,
                    typid,
                    collation,
                    [
                        int8_const(self.tag as i64),
                        int4_const(index as i32),
                        copy(node),
                    ],
                ),
                Mode::Deparse | Mode::Check | Mode::SequencesOnly => placeholder(
                    SITE_PARAMETER_BASE + 1 + index as i32,
                    typid,
                    typmod,
                    collation,
                ),
            }
        }
    }

    /// A draw from a sequence: captured when executed, kept when deparsed, a placeholder when
    /// checked (nextval is volatile, but replays deterministically).
    unsafe fn sequence_site(
        &mut self,
        node: *mut pg_sys::Node,
        sequence: pg_sys::Oid,
    ) -> *mut pg_sys::Node {
        // SAFETY: `node` is a nextval call or a NextValueExpr.
        unsafe {
            self.sequences.push(sequence);
            let typid = pg_sys::exprType(node);
            match self.mode {
                Mode::Execute => capture_call(
                    self.functions.sequence,
                    typid,
                    pg_sys::Oid::INVALID,
                    [int8_const(self.tag as i64), oid_const(sequence), copy(node)],
                ),
                Mode::Deparse => copy(node),
                Mode::Check | Mode::SequencesOnly => {
                    placeholder(SITE_PARAMETER_BASE, typid, -1, pg_sys::Oid::INVALID)
                }
            }
        }
    }
}

unsafe fn copy(node: *mut pg_sys::Node) -> *mut pg_sys::Node {
    // SAFETY: copyObjectImpl deep-copies any node.
    unsafe { pg_sys::copyObjectImpl(node as *const c_void) as *mut pg_sys::Node }
}

unsafe fn capture_call<const N: usize>(
    function: pg_sys::Oid,
    typid: pg_sys::Oid,
    collation: pg_sys::Oid,
    args: [*mut pg_sys::Node; N],
) -> *mut pg_sys::Node {
    // SAFETY: builds a FuncExpr of the polymorphic capture function; its result type is the type
    // of its last argument.
    unsafe {
        let mut list = std::ptr::null_mut();
        for arg in args {
            list = pg_sys::lappend(list, arg as *mut c_void);
        }
        pg_sys::makeFuncExpr(
            function,
            typid,
            list,
            collation,
            collation,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        ) as *mut pg_sys::Node
    }
}

unsafe fn placeholder(
    id: i32,
    typid: pg_sys::Oid,
    typmod: i32,
    collation: pg_sys::Oid,
) -> *mut pg_sys::Node {
    // SAFETY: a zeroed Param node with its tag and fields set, as makeNode does.
    unsafe {
        let param = pg_sys::palloc0(std::mem::size_of::<pg_sys::Param>()) as *mut pg_sys::Param;
        (*param).xpr.type_ = NodeTag::T_Param;
        (*param).paramkind = pg_sys::ParamKind::PARAM_EXTERN;
        (*param).paramid = id;
        (*param).paramtype = typid;
        (*param).paramtypmod = typmod;
        (*param).paramcollid = collation;
        (*param).location = -1;
        param as *mut pg_sys::Node
    }
}

/// A constant of a pass-by-value type (int8, int4, oid) of `len` bytes.
unsafe fn by_value_const(typid: pg_sys::Oid, len: i32, value: pg_sys::Datum) -> *mut pg_sys::Node {
    // SAFETY: the three types used here are passed by value on every 64-bit platform PostgreSQL
    // 15 supports.
    unsafe {
        pg_sys::makeConst(typid, -1, pg_sys::Oid::INVALID, len, value, false, true)
            as *mut pg_sys::Node
    }
}

unsafe fn int8_const(value: i64) -> *mut pg_sys::Node {
    // SAFETY: see by_value_const.
    unsafe { by_value_const(pg_sys::INT8OID, 8, pg_sys::Datum::from(value)) }
}

unsafe fn int4_const(value: i32) -> *mut pg_sys::Node {
    // SAFETY: see by_value_const.
    unsafe { by_value_const(pg_sys::INT4OID, 4, pg_sys::Datum::from(value)) }
}

unsafe fn oid_const(value: pg_sys::Oid) -> *mut pg_sys::Node {
    // SAFETY: see by_value_const.
    unsafe { by_value_const(pg_sys::OIDOID, 4, pg_sys::Datum::from(value)) }
}

/// The sequence a node draws from: `nextval('constant'::regclass)` or an identity column's
/// NextValueExpr.
unsafe fn sequence_drawn(node: *mut pg_sys::Node) -> Option<pg_sys::Oid> {
    // SAFETY: the casts follow the node tags.
    unsafe {
        if is(node, NodeTag::T_NextValueExpr) {
            return Some((*(node as *mut pg_sys::NextValueExpr)).seqid);
        }
        if !is(node, NodeTag::T_FuncExpr) {
            return None;
        }
        let call = node as *mut pg_sys::FuncExpr;
        if (*call).funcid != pg_sys::Oid::from(pg_sys::F_NEXTVAL) || (*(*call).args).length != 1 {
            return None;
        }
        let arg = pg_sys::list_nth((*call).args, 0) as *mut pg_sys::Node;
        if !is(arg, NodeTag::T_Const) {
            return None;
        }
        let constant = arg as *mut pg_sys::Const;
        if (*constant).constisnull || (*constant).consttype != pg_sys::REGCLASSOID {
            return None;
        }
        Some(pg_sys::Oid::from((*constant).constvalue.value() as u32))
    }
}

/// Whether a node is a value site: an expression of a type with a text form, not immutable, whose
/// every part is foldable.
unsafe fn is_value_site(node: *mut pg_sys::Node) -> bool {
    use NodeTag::*;
    // SAFETY: node is valid; the lookups read the catalogs.
    unsafe {
        let expression = matches!(
            (*node).type_,
            T_FuncExpr
                | T_OpExpr
                | T_DistinctExpr
                | T_NullIfExpr
                | T_ScalarArrayOpExpr
                | T_BoolExpr
                | T_CaseExpr
                | T_CoalesceExpr
                | T_MinMaxExpr
                | T_SQLValueFunction
                | T_CoerceViaIO
                | T_RelabelType
                | T_ArrayCoerceExpr
                | T_ArrayExpr
                | T_CoerceToDomain
                | T_NullTest
                | T_BooleanTest
        );
        if !expression {
            return false;
        }
        let typid = pg_sys::exprType(node);
        if typid == pg_sys::RECORDOID || pg_sys::get_typtype(typid) as u8 == pg_sys::TYPTYPE_PSEUDO
        {
            return false;
        }
        pg_sys::contain_mutable_functions(node) && !unfoldable(node, std::ptr::null_mut())
    }
}

/// Whether an expression contains something that is not a constant of the statement: a column,
/// a parameter, an aggregate, a subquery, a set-returning or user-defined function, or a draw
/// from a sequence (those are sites of their own).
#[pg_guard]
unsafe extern "C-unwind" fn unfoldable(node: *mut pg_sys::Node, context: *mut c_void) -> bool {
    use NodeTag::*;
    // SAFETY: called with valid nodes; the casts follow the node tags.
    unsafe {
        if node.is_null() {
            return false;
        }
        let user_function = |oid: pg_sys::Oid| oid.to_u32() >= pg_sys::FirstNormalObjectId;
        let stop = match (*node).type_ {
            T_Var
            | T_Param
            | T_Aggref
            | T_WindowFunc
            | T_GroupingFunc
            | T_SubLink
            | T_SubPlan
            | T_NextValueExpr
            | T_CaseTestExpr
            | T_CoerceToDomainValue
            | T_SetToDefault
            | T_CurrentOfExpr
            | T_PlaceHolderVar
            | T_Query => true,
            T_FuncExpr => {
                let call = node as *mut pg_sys::FuncExpr;
                (*call).funcretset
                    || user_function((*call).funcid)
                    || (*call).funcid == pg_sys::Oid::from(pg_sys::F_NEXTVAL)
            }
            T_OpExpr | T_DistinctExpr | T_NullIfExpr => {
                let op = node as *mut pg_sys::OpExpr;
                pg_sys::set_opfuncid(op);
                (*op).opretset || user_function((*op).opfuncid)
            }
            T_ScalarArrayOpExpr => {
                let op = node as *mut pg_sys::ScalarArrayOpExpr;
                pg_sys::set_sa_opfuncid(op);
                user_function((*op).opfuncid)
            }
            _ => false,
        };
        stop || pg_sys::expression_tree_walker(node, Some(unfoldable), context)
    }
}

/// Calls `f` on every INSERT of the query: itself and its modifying CTEs.
unsafe fn for_each_insert(query: *mut pg_sys::Query, f: &mut dyn FnMut(*mut pg_sys::Query)) {
    // SAFETY: cteList holds CommonTableExprs whose ctequery is a Query.
    unsafe {
        if (*query).commandType == pg_sys::CmdType::CMD_INSERT {
            f(query);
        }
        for cte in super::list_items::<pg_sys::CommonTableExpr>((*query).cteList) {
            let inner = (*cte).ctequery as *mut pg_sys::Query;
            if is(inner as *mut pg_sys::Node, NodeTag::T_Query) {
                for_each_insert(inner, f);
            }
        }
    }
}

/// The range table entry an INSERT takes its rows from (a multi-row VALUES or a SELECT), with its
/// index; none for a single-row VALUES.
unsafe fn insert_source(insert: *mut pg_sys::Query) -> Option<(i32, *mut pg_sys::RangeTblEntry)> {
    // SAFETY: rtable holds RangeTblEntries.
    unsafe {
        super::list_items::<pg_sys::RangeTblEntry>((*insert).rtable)
            .into_iter()
            .enumerate()
            .find(|(_, rte)| {
                matches!(
                    (**rte).rtekind,
                    pg_sys::RTEKind::RTE_VALUES | pg_sys::RTEKind::RTE_SUBQUERY
                )
            })
            .map(|(i, rte)| (i as i32 + 1, rte))
    }
}

/// Whether a target entry of an INSERT with a source takes its value from the source (else the
/// rewriter put a column default there).
unsafe fn from_source(tle: *mut pg_sys::TargetEntry, source: i32) -> bool {
    // SAFETY: the expression of a target entry is a valid node.
    unsafe {
        let expr = (*tle).expr as *mut pg_sys::Node;
        is(expr, NodeTag::T_Var) && (*(expr as *mut pg_sys::Var)).varno == source
    }
}

/// In a multi-row INSERT ... VALUES, moves the defaults the rewriter put into the target list
/// into every row, so that each row's default is a site of its own (evaluated once) and the
/// deparsed rows list every column.
unsafe fn move_defaults_into_values(insert: *mut pg_sys::Query) {
    // SAFETY: the VALUES entry's lists are parallel (one element per column); this extends each
    // by one column per default and points the target entry at it, as the parser would have.
    unsafe {
        let Some((index, values)) = insert_source(insert) else {
            return;
        };
        if (*values).rtekind != pg_sys::RTEKind::RTE_VALUES {
            return;
        }
        for tle in super::list_items::<pg_sys::TargetEntry>((*insert).targetList) {
            if (*tle).resjunk || from_source(tle, index) {
                continue;
            }
            let expr = (*tle).expr as *mut pg_sys::Node;
            let (typid, typmod, collation) = (
                pg_sys::exprType(expr),
                pg_sys::exprTypmod(expr),
                pg_sys::exprCollation(expr),
            );
            let mut rows = std::ptr::null_mut();
            for row in super::list_items::<pg_sys::List>((*values).values_lists) {
                rows = pg_sys::lappend(
                    rows,
                    pg_sys::lappend(row, copy(expr) as *mut c_void) as *mut c_void,
                );
            }
            (*values).values_lists = rows;
            (*values).coltypes = pg_sys::lappend_oid((*values).coltypes, typid);
            (*values).coltypmods = pg_sys::lappend_int((*values).coltypmods, typmod);
            (*values).colcollations = pg_sys::lappend_oid((*values).colcollations, collation);
            let name = format!("paxos_default_{}\0", (*tle).resno);
            (*(*values).eref).colnames = pg_sys::lappend(
                (*(*values).eref).colnames,
                pg_sys::makeString(pg_sys::pstrdup(name.as_ptr() as *const i8)) as *mut c_void,
            );
            let column = (*(*(*values).eref).colnames).length as i16;
            (*tle).expr =
                pg_sys::makeVar(index, column, typid, typmod, collation, 0) as *mut pg_sys::Expr;
        }
    }
}

/// The defaults the rewriter added to an INSERT ... SELECT: each node's rewriter adds them again
/// when replaying, which is deterministic only for immutable defaults and sequences (restarted at
/// the proposer's numbers). Others are refused.
unsafe fn check_defaults_of_insert_select(insert: *mut pg_sys::Query) -> Result<()> {
    // SAFETY: the target list is a List of TargetEntries.
    unsafe {
        let Some((index, source)) = insert_source(insert) else {
            return Ok(());
        };
        if (*source).rtekind != pg_sys::RTEKind::RTE_SUBQUERY {
            return Ok(());
        }
        for tle in super::list_items::<pg_sys::TargetEntry>((*insert).targetList) {
            if (*tle).resjunk || from_source(tle, index) {
                continue;
            }
            if mutable_apart_from_sequences((*tle).expr as *mut pg_sys::Node) {
                let column = CStr::from_ptr((*tle).resname)
                    .to_string_lossy()
                    .into_owned();
                return Err(PaxosError::NotSupported {
                    message: format!(
                        "the default of column {column:?} differs between nodes and cannot be made deterministic in INSERT ... SELECT"
                    ),
                    hint: "Give the column's value in the SELECT list, or insert with VALUES.",
                });
            }
        }
        Ok(())
    }
}

/// In a deparsed INSERT ... SELECT, drops the defaults the rewriter added to the target list (the
/// deparser would list them as columns the SELECT does not produce) and puts the rest back in the
/// order of the SELECT's columns (the rewriter sorted them by column number; the deparser pairs
/// the n-th listed column with the n-th selected one).
unsafe fn strip_defaults_of_insert_select(insert: *mut pg_sys::Query) {
    // SAFETY: the target list is a List of TargetEntries owned by this (copied) tree.
    unsafe {
        let Some((index, source)) = insert_source(insert) else {
            return;
        };
        if (*source).rtekind != pg_sys::RTEKind::RTE_SUBQUERY {
            return;
        }
        let mut kept: Vec<_> = super::list_items::<pg_sys::TargetEntry>((*insert).targetList)
            .into_iter()
            .filter(|&tle| !(*tle).resjunk && from_source(tle, index))
            .collect();
        kept.sort_by_key(|&tle| (*((*tle).expr as *mut pg_sys::Var)).varattno);
        let mut list = std::ptr::null_mut();
        for tle in kept {
            list = pg_sys::lappend(list, tle as *mut c_void);
        }
        (*insert).targetList = list;
    }
}

/// Whether an expression calls mutable functions other than `nextval`.
unsafe fn mutable_apart_from_sequences(expr: *mut pg_sys::Node) -> bool {
    let mut context = Context {
        mode: Mode::SequencesOnly,
        tag: 0,
        functions: CaptureFunctions {
            value: pg_sys::Oid::INVALID,
            sequence: pg_sys::Oid::INVALID,
        },
        sites: Vec::new(),
        sequences: Vec::new(),
    };
    // SAFETY: mutates a copy of a valid expression.
    unsafe {
        let replaced = mutate(copy(expr), &mut context as *mut Context as *mut c_void);
        pg_sys::contain_mutable_functions(replaced)
    }
}

/// In a multi-row INSERT ... VALUES, puts the VALUES columns in the order of the target list:
/// the deparser prints the column list from the target list and each row as it is stored, and
/// the rewriter sorted the target list by column number.
unsafe fn align_values_with_target_list(insert: *mut pg_sys::Query) {
    // SAFETY: after `move_defaults_into_values`, every target entry is a Var of the VALUES entry,
    // each of its columns referenced once; the parallel lists are rebuilt in target-list order.
    unsafe {
        let Some((index, values)) = insert_source(insert) else {
            return;
        };
        if (*values).rtekind != pg_sys::RTEKind::RTE_VALUES {
            return;
        }
        let mut order = Vec::new();
        for tle in super::list_items::<pg_sys::TargetEntry>((*insert).targetList) {
            if (*tle).resjunk || !from_source(tle, index) {
                return;
            }
            let var = (*tle).expr as *mut pg_sys::Var;
            order.push((*var).varattno as i32 - 1);
            (*var).varattno = order.len() as i16;
            (*var).varattnosyn = order.len() as i16;
        }
        let pick = |list: *mut pg_sys::List| {
            let mut out = std::ptr::null_mut();
            for &i in &order {
                out = pg_sys::lappend(out, pg_sys::list_nth(list, i));
            }
            out
        };
        let pick_oids = |list: *mut pg_sys::List| {
            let mut out = std::ptr::null_mut();
            for &i in &order {
                out = pg_sys::lappend_oid(out, pg_sys::list_nth_oid(list, i));
            }
            out
        };
        let mut rows = std::ptr::null_mut();
        for row in super::list_items::<pg_sys::List>((*values).values_lists) {
            rows = pg_sys::lappend(rows, pick(row) as *mut c_void);
        }
        (*values).values_lists = rows;
        (*values).coltypes = pick_oids((*values).coltypes);
        (*values).colcollations = pick_oids((*values).colcollations);
        let mut typmods = std::ptr::null_mut();
        for &i in &order {
            typmods = pg_sys::lappend_int(typmods, pg_sys::list_nth_int((*values).coltypmods, i));
        }
        (*values).coltypmods = typmods;
        (*(*values).eref).colnames = pick((*(*values).eref).colnames);
    }
}

/// Whether the statement reads any table besides the ones it writes (then rows may reach it in
/// a different order on another node).
unsafe fn reads_tables(node: *mut pg_sys::Node) -> bool {
    // SAFETY: a walker over a valid query tree.
    unsafe { reads_tables_walker(node, std::ptr::null_mut()) }
}

#[pg_guard]
unsafe extern "C-unwind" fn reads_tables_walker(
    node: *mut pg_sys::Node,
    context: *mut c_void,
) -> bool {
    // SAFETY: the casts follow the node tags.
    unsafe {
        if node.is_null() {
            return false;
        }
        if !is(node, NodeTag::T_Query) {
            return pg_sys::expression_tree_walker(node, Some(reads_tables_walker), context);
        }
        let query = node as *mut pg_sys::Query;
        let excluded = if (*query).onConflict.is_null() {
            0
        } else {
            (*(*query).onConflict).exclRelIndex
        };
        let rtes = super::list_items::<pg_sys::RangeTblEntry>((*query).rtable);
        for (i, rte) in rtes.into_iter().enumerate() {
            let index = i as i32 + 1;
            if (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION
                && index != (*query).resultRelation
                && index != excluded
            {
                return true;
            }
        }
        pg_sys::query_tree_walker(query, Some(reads_tables_walker), context, 0)
    }
}

/// Every node replays `nextval` as the writing role, which an identity column does not require
/// here: check now rather than fail on the other nodes.
unsafe fn require_sequence_privilege(sequence: pg_sys::Oid) -> Result<()> {
    // SAFETY: an ACL check and a name lookup in the catalogs.
    unsafe {
        let mode = pg_sys::ACL_USAGE | pg_sys::ACL_UPDATE;
        if pg_sys::pg_class_aclcheck(sequence, pg_sys::GetUserId(), mode)
            == pg_sys::AclResult::ACLCHECK_OK
        {
            return Ok(());
        }
        let name = pg_sys::get_rel_name(sequence);
        let name = if name.is_null() {
            format!("{sequence:?}")
        } else {
            CStr::from_ptr(name).to_string_lossy().into_owned()
        };
        Err(PaxosError::PermissionDenied {
            message: format!("permission denied for sequence {name}"),
            hint: "Every node of the group draws from the sequence as the writing role: GRANT USAGE ON SEQUENCE to it.",
        })
    }
}
