//! A reference model of cancel-tree's public API, and an interpreter that runs
//! a sequence of operations on the real library and on the model side by
//! side, comparing everything observable after every step.
//!
//! Shared by `tests/model_check.rs` (stable `cargo test`) and
//! `fuzz/fuzz_targets/state_machine.rs` (cargo-fuzz), which include this file
//! as a module.
//!
//! The model is deliberately naive: an arena of nodes with parent indices and
//! child lists, recursive cancellation, linear scans for the next deadline.
//! It encodes Go's `context` semantics directly:
//!
//! * roots are never cancelled and have no deadline;
//! * cancellation flows down (through value nodes, stopping at
//!   `without_cancel`); the first cancellation of a scope wins, and every
//!   scope it reaches ends with the same err and cause;
//! * a child derived from a cancelled scope is born cancelled with its err and
//!   cause;
//! * `with_deadline(at)` under a parent whose deadline is not later than `at`
//!   is a plain cancel scope; otherwise it is born `DeadlineExceeded` if
//!   `at <= now`, else it is queued on its clock and ends at `at`;
//! * a merged context (`merge`) is a child of its first parent and also
//!   ends when its other parent does, with that parent's err and cause;
//!   its deadline is the earlier of the two, its values the first parent's
//!   chain's, then the other's. The library reaches it through the other
//!   parent in the notify phase of that parent's walk, where `after_func`
//!   closures also run: so a run never has merged contexts and closures that
//!   own a cancel handle at once (their order within a walk would decide
//!   which ending a merged context gets).
//! * `Done` futures wake their latest waker once; `after_func` closures run
//!   once; dropped futures are never woken; `stop` wins only if it prevented
//!   the closure.
//! * an `after_func` closure may own a cancel handle and a context clone; it
//!   drops them when it runs (inside the cancel walk or `Timers::fire`), when
//!   `stop()` wins, or at once on a context that can never be cancelled, so
//!   closures cancel other scopes and free nodes re-entrantly. Deadlines fire
//!   one at a time, each with all the cancellations its closures cause. A
//!   clock step that would fire two deadlines due at the same instant while
//!   such a closure is pending is skipped (ties may fire in either order).
//!   So is one that would fire two such deadlines above the two branches of
//!   a merged context that has not ended: the first to reach it decides its
//!   cause.
//!
//! Besides the API results it checks memory: which nodes are still reachable
//! (a node is held by context handles, undetached cancel handles, `Done`
//! futures, `AfterFunc` handles, pending registrations and what their
//! closures own, and holds its parent), `ManualClock::pending()` (the live queued deadlines), the number
//! of live values, causes and clock roots (drop counters), and — when
//! [`CountingAlloc`] is the global allocator — that a run that leaves nothing
//! reachable returns every allocation it made.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::SeqCst};
use std::task::{Context as TaskCx, Poll, Wake, Waker};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use cancel_tree::{
    AfterFunc, CancelHandle, Cause, Clock, Context, DoneOwned, Error, Instant, ManualClock, Timers,
};

// ---------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------

/// Clocks (each with its own queue); roots are made on them.
pub const CLOCKS: usize = 2;
/// Counting wakers shared by all `Done` futures.
pub const WAKERS: usize = 4;
/// Context handles held at once.
pub const MAX_CTXS: usize = 64;
/// Cancel handles held at once.
pub const MAX_HANDLES: usize = 64;
/// Model nodes ever made (each derivation and root makes one).
pub const MAX_NODES: usize = 160;
/// `Done` futures held at once.
pub const MAX_DONES: usize = 24;
/// `after_func` registrations ever made.
pub const MAX_AFS: usize = 48;
/// Operations decoded from one input (teardown not counted).
pub const MAX_OPS: usize = 400;

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

/// A point in time, relative to the clock of the context it is used on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Ago(u8),
    Now,
    In(u8),
    Abs(u16),
    Max,
}

impl At {
    fn resolve(self, now: u64) -> u64 {
        match self {
            At::Ago(x) => now.saturating_sub(u64::from(x)),
            At::Now => now,
            At::In(x) => now.saturating_add(u64::from(x)),
            At::Abs(x) => u64::from(x),
            At::Max => u64::MAX,
        }
    }
}

/// A duration (small ones, and the ones that saturate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dur {
    Zero,
    /// `x % 16` nanoseconds.
    Small(u8),
    Nanos(u8),
    Nanos16(u16),
    NearU64Max(u8),
    U64Max,
    Max,
}

impl Dur {
    fn real(self) -> Duration {
        match self {
            Dur::Zero => Duration::ZERO,
            Dur::Small(x) => Duration::from_nanos(u64::from(x % 16)),
            Dur::Nanos(x) => Duration::from_nanos(u64::from(x)),
            Dur::Nanos16(x) => Duration::from_nanos(u64::from(x)),
            Dur::NearU64Max(x) => Duration::from_nanos(u64::MAX - u64::from(x)),
            Dur::U64Max => Duration::from_nanos(u64::MAX),
            Dur::Max => Duration::MAX,
        }
    }
}

/// `now + d` in nanoseconds, saturating at `u64::MAX`, by u128 arithmetic.
fn sat_add(now: u64, d: Duration) -> u64 {
    let sum = u128::from(now) + d.as_nanos();
    if sum > u128::from(u64::MAX) {
        u64::MAX
    } else {
        sum as u64
    }
}

/// A cause to cancel with or to attach to a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseArg {
    /// A fresh `TagErr` (custom error; identified by downcast).
    Custom,
    /// A fresh `Cause::msg` (identified by its text).
    Msg,
    /// `Error::Canceled` as the cause.
    Canceled,
    /// `Error::DeadlineExceeded` as the cause.
    DeadlineExceeded,
}

/// What an `after_func` closure owns besides its probe. Whatever it owns it
/// drops when it runs, is stopped, or is dropped unrun (on a context that can
/// never be cancelled) — from inside the library's cancel walk, `fire` loop,
/// `stop()` or `after_func()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfExtra {
    None,
    /// A clone of the context it is registered on.
    KeepCtx,
    /// A cancel handle (taken from the handle list): dropping it cancels its
    /// scope, so the closure cancels another scope re-entrantly.
    Chain(u8),
    /// Both.
    Both(u8),
}

/// How to derive a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derive {
    Cancel,
    Deadline(At),
    Timeout(Dur),
    DeadlineCause(At, CauseArg),
    TimeoutCause(Dur, CauseArg),
    ValueA(u8),
    ValueB(u8),
    WithoutCancel,
    /// `ctx.merge(other)`: the other parent is context slot `other` (low 7
    /// bits, modulo the number of slots).
    Merge(u8),
}

/// One step. Indices are taken modulo the length of the list they index
/// (context indices: their low 7 bits, see `pick_ctx` for the high bit); a
/// step on an empty list, or one that would exceed a bound, does nothing.
///
/// `Arbitrary` is implemented by hand (below) for `Op` and the types in it,
/// one selector byte per enum with weights (`OP_W` etc.): the derived impl picks variants uniformly, which
/// makes derivations rare (1 step in 17) and sends the clock to
/// `Instant::MAX` in half of the `Advance` steps, so trees stay tiny and
/// most deadlines are born expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Derive { ctx: u8, how: Derive },
    NewRoot { clock: u8, tracked: bool },
    CloneCtx { ctx: u8 },
    DropCtx { ctx: u8 },
    HandleContext { handle: u8 },
    Cancel { handle: u8 },
    CancelWith { handle: u8, cause: CauseArg },
    Detach { handle: u8 },
    DropHandle { handle: u8 },
    Advance { clock: u8, by: Dur },
    Set { clock: u8, to: At },
    NewDone { ctx: u8 },
    Poll { done: u8, waker: u8 },
    DropDone { done: u8 },
    AfterFunc { ctx: u8, extra: AfExtra },
    Stop { af: u8 },
    DropAfterFunc { af: u8 },
}

// Variant weights (out of 256, one selector byte each), in declaration order.
const AT_W: [u16; 5] = [40, 24, 150, 36, 6];
const DUR_W: [u16; 7] = [8, 120, 104, 16, 3, 3, 2];
const CAUSE_W: [u16; 4] = [64, 64, 64, 64];
const EXTRA_W: [u16; 4] = [128, 32, 64, 32];
const DERIVE_W: [u16; 9] = [52, 34, 44, 22, 22, 20, 18, 24, 20];
const OP_W: [u16; 17] = [
    76, // Derive
    3,  // NewRoot
    8,  // CloneCtx
    20, // DropCtx
    5,  // HandleContext
    6,  // Cancel
    6,  // CancelWith
    6,  // Detach
    6,  // DropHandle
    14, // Advance
    6,  // Set
    16, // NewDone
    32, // Poll
    8,  // DropDone
    20, // AfterFunc
    14, // Stop
    10, // DropAfterFunc
];

/// Reads one byte and maps it to a variant index by `weights` (sum 256).
fn variant(u: &mut Unstructured<'_>, weights: &[u16]) -> arbitrary::Result<usize> {
    debug_assert_eq!(weights.iter().sum::<u16>(), 256);
    let mut b = u16::from(u.arbitrary::<u8>()?);
    for (i, &w) in weights.iter().enumerate() {
        if b < w {
            return Ok(i);
        }
        b -= w;
    }
    unreachable!("weights sum to 256")
}

/// The selector byte `variant` maps to index `i`.
fn selector(weights: &[u16], i: usize) -> u8 {
    weights[..i].iter().sum::<u16>() as u8
}

impl<'a> Arbitrary<'a> for At {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match variant(u, &AT_W)? {
            0 => At::Ago(u.arbitrary()?),
            1 => At::Now,
            2 => At::In(u.arbitrary()?),
            3 => At::Abs(u.arbitrary()?),
            _ => At::Max,
        })
    }
}

impl<'a> Arbitrary<'a> for Dur {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match variant(u, &DUR_W)? {
            0 => Dur::Zero,
            1 => Dur::Small(u.arbitrary()?),
            2 => Dur::Nanos(u.arbitrary()?),
            3 => Dur::Nanos16(u.arbitrary()?),
            4 => Dur::NearU64Max(u.arbitrary()?),
            5 => Dur::U64Max,
            _ => Dur::Max,
        })
    }
}

impl<'a> Arbitrary<'a> for CauseArg {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match variant(u, &CAUSE_W)? {
            0 => CauseArg::Custom,
            1 => CauseArg::Msg,
            2 => CauseArg::Canceled,
            _ => CauseArg::DeadlineExceeded,
        })
    }
}

impl<'a> Arbitrary<'a> for AfExtra {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match variant(u, &EXTRA_W)? {
            0 => AfExtra::None,
            1 => AfExtra::KeepCtx,
            2 => AfExtra::Chain(u.arbitrary()?),
            _ => AfExtra::Both(u.arbitrary()?),
        })
    }
}

impl<'a> Arbitrary<'a> for Derive {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match variant(u, &DERIVE_W)? {
            0 => Derive::Cancel,
            1 => Derive::Deadline(u.arbitrary()?),
            2 => Derive::Timeout(u.arbitrary()?),
            3 => Derive::DeadlineCause(u.arbitrary()?, u.arbitrary()?),
            4 => Derive::TimeoutCause(u.arbitrary()?, u.arbitrary()?),
            5 => Derive::ValueA(u.arbitrary()?),
            6 => Derive::ValueB(u.arbitrary()?),
            7 => Derive::WithoutCancel,
            _ => Derive::Merge(u.arbitrary()?),
        })
    }
}

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match variant(u, &OP_W)? {
            0 => Op::Derive {
                ctx: u.arbitrary()?,
                how: u.arbitrary()?,
            },
            1 => Op::NewRoot {
                clock: u.arbitrary()?,
                tracked: u.arbitrary()?,
            },
            2 => Op::CloneCtx {
                ctx: u.arbitrary()?,
            },
            3 => Op::DropCtx {
                ctx: u.arbitrary()?,
            },
            4 => Op::HandleContext {
                handle: u.arbitrary()?,
            },
            5 => Op::Cancel {
                handle: u.arbitrary()?,
            },
            6 => Op::CancelWith {
                handle: u.arbitrary()?,
                cause: u.arbitrary()?,
            },
            7 => Op::Detach {
                handle: u.arbitrary()?,
            },
            8 => Op::DropHandle {
                handle: u.arbitrary()?,
            },
            9 => Op::Advance {
                clock: u.arbitrary()?,
                by: u.arbitrary()?,
            },
            10 => Op::Set {
                clock: u.arbitrary()?,
                to: u.arbitrary()?,
            },
            11 => Op::NewDone {
                ctx: u.arbitrary()?,
            },
            12 => Op::Poll {
                done: u.arbitrary()?,
                waker: u.arbitrary()?,
            },
            13 => Op::DropDone {
                done: u.arbitrary()?,
            },
            14 => Op::AfterFunc {
                ctx: u.arbitrary()?,
                extra: u.arbitrary()?,
            },
            15 => Op::Stop { af: u.arbitrary()? },
            _ => Op::DropAfterFunc { af: u.arbitrary()? },
        })
    }
}

/// The inverse of the decoding above, for writing seed inputs by hand.
pub trait Encode {
    fn encode(&self, out: &mut Vec<u8>);
}

impl Encode for u8 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
}

impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl Encode for u16 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl Encode for At {
    fn encode(&self, out: &mut Vec<u8>) {
        let (i, x): (usize, Option<&dyn Encode>) = match self {
            At::Ago(x) => (0, Some(x)),
            At::Now => (1, None),
            At::In(x) => (2, Some(x)),
            At::Abs(x) => (3, Some(x)),
            At::Max => (4, None),
        };
        out.push(selector(&AT_W, i));
        if let Some(x) = x {
            x.encode(out);
        }
    }
}

impl Encode for Dur {
    fn encode(&self, out: &mut Vec<u8>) {
        let (i, x): (usize, Option<&dyn Encode>) = match self {
            Dur::Zero => (0, None),
            Dur::Small(x) => (1, Some(x)),
            Dur::Nanos(x) => (2, Some(x)),
            Dur::Nanos16(x) => (3, Some(x)),
            Dur::NearU64Max(x) => (4, Some(x)),
            Dur::U64Max => (5, None),
            Dur::Max => (6, None),
        };
        out.push(selector(&DUR_W, i));
        if let Some(x) = x {
            x.encode(out);
        }
    }
}

impl Encode for CauseArg {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(selector(&CAUSE_W, *self as usize));
    }
}

impl Encode for AfExtra {
    fn encode(&self, out: &mut Vec<u8>) {
        let (i, x) = match self {
            AfExtra::None => (0, None),
            AfExtra::KeepCtx => (1, None),
            AfExtra::Chain(h) => (2, Some(h)),
            AfExtra::Both(h) => (3, Some(h)),
        };
        out.push(selector(&EXTRA_W, i));
        if let Some(x) = x {
            x.encode(out);
        }
    }
}

impl Encode for Derive {
    fn encode(&self, out: &mut Vec<u8>) {
        let (i, fields): (usize, &[&dyn Encode]) = match self {
            Derive::Cancel => (0, &[]),
            Derive::Deadline(at) => (1, &[at]),
            Derive::Timeout(d) => (2, &[d]),
            Derive::DeadlineCause(at, c) => (3, &[at, c]),
            Derive::TimeoutCause(d, c) => (4, &[d, c]),
            Derive::ValueA(t) => (5, &[t]),
            Derive::ValueB(t) => (6, &[t]),
            Derive::WithoutCancel => (7, &[]),
            Derive::Merge(o) => (8, &[o]),
        };
        out.push(selector(&DERIVE_W, i));
        for f in fields {
            f.encode(out);
        }
    }
}

impl Encode for Op {
    fn encode(&self, out: &mut Vec<u8>) {
        let (i, fields): (usize, &[&dyn Encode]) = match self {
            Op::Derive { ctx, how } => (0, &[ctx, how]),
            Op::NewRoot { clock, tracked } => (1, &[clock, tracked]),
            Op::CloneCtx { ctx } => (2, &[ctx]),
            Op::DropCtx { ctx } => (3, &[ctx]),
            Op::HandleContext { handle } => (4, &[handle]),
            Op::Cancel { handle } => (5, &[handle]),
            Op::CancelWith { handle, cause } => (6, &[handle, cause]),
            Op::Detach { handle } => (7, &[handle]),
            Op::DropHandle { handle } => (8, &[handle]),
            Op::Advance { clock, by } => (9, &[clock, by]),
            Op::Set { clock, to } => (10, &[clock, to]),
            Op::NewDone { ctx } => (11, &[ctx]),
            Op::Poll { done, waker } => (12, &[done, waker]),
            Op::DropDone { done } => (13, &[done]),
            Op::AfterFunc { ctx, extra } => (14, &[ctx, extra]),
            Op::Stop { af } => (15, &[af]),
            Op::DropAfterFunc { af } => (16, &[af]),
        };
        out.push(selector(&OP_W, i));
        for f in fields {
            f.encode(out);
        }
    }
}

/// An input that `run` decodes to `flavor` (teardown order) and `ops`.
pub fn encode(flavor: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![flavor];
    for op in ops {
        op.encode(&mut out);
    }
    out
}

/// Decodes the operations `run` would execute (for printing reproducers).
pub fn decode(data: &[u8]) -> (u8, Vec<Op>) {
    let mut u = Unstructured::new(data);
    let flavor = u.arbitrary::<u8>().unwrap_or(0);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    (flavor, ops)
}

// ---------------------------------------------------------------------------
// Probes: values, causes, clocks and closures that count themselves
// ---------------------------------------------------------------------------

/// Live-object counters for things the library stores and must drop.
#[derive(Default)]
pub struct LiveCounts {
    pub values: AtomicIsize,
    pub causes: AtomicIsize,
    pub roots: AtomicIsize,
}

#[derive(Clone, Copy)]
enum Counter {
    Values,
    Causes,
    Roots,
}

/// Counts one live object in `LiveCounts` while it exists.
struct Token(Arc<LiveCounts>, Counter);

impl Token {
    fn new(live: &Arc<LiveCounts>, which: Counter) -> Token {
        Token::counter(live, which).fetch_add(1, SeqCst);
        Token(live.clone(), which)
    }
    fn counter(live: &LiveCounts, which: Counter) -> &AtomicIsize {
        match which {
            Counter::Values => &live.values,
            Counter::Causes => &live.causes,
            Counter::Roots => &live.roots,
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        Token::counter(&self.0, self.1).fetch_sub(1, SeqCst);
    }
}

/// Value type A.
pub struct ValA(pub u8, Token);
/// Value type B.
pub struct ValB(pub u8, Token);

/// A custom cause.
pub struct TagErr {
    pub id: u32,
    _token: Token,
}

impl fmt::Debug for TagErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagErr({})", self.id)
    }
}

impl fmt::Display for TagErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "err#{}", self.id)
    }
}

impl std::error::Error for TagErr {}

/// The body of a `Cause::msg`.
struct MsgBody {
    id: u32,
    _token: Token,
}

impl fmt::Display for MsgBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "msg#{}", self.id)
    }
}

/// A `ManualClock` in a wrapper whose drop is counted, so the model can check
/// when a clock root is freed.
struct TrackedClock {
    inner: ManualClock,
    _token: Token,
}

impl Clock for TrackedClock {
    fn now(&self) -> Instant {
        Clock::now(&self.inner)
    }
    fn timers(&self) -> &Timers {
        Clock::timers(&self.inner)
    }
    fn set_alarm(&self, at: Option<Instant>) {
        Clock::set_alarm(&self.inner, at)
    }
}

/// A waker that counts wakes.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// What an `after_func` closure reports.
#[derive(Default)]
struct AfProbe {
    runs: AtomicUsize,
    dropped: AtomicBool,
}

/// Sets `dropped` when the closure (which owns it) is dropped.
struct AfGuard(Arc<AfProbe>);

impl Drop for AfGuard {
    fn drop(&mut self) {
        self.0.dropped.store(true, SeqCst);
    }
}

// ---------------------------------------------------------------------------
// Allocation counting (per thread)
// ---------------------------------------------------------------------------

/// A global allocator that counts live allocations per thread. Install it
/// with `#[global_allocator]` to let `run` check that a run which leaves
/// nothing reachable frees everything it allocated.
pub struct CountingAlloc;

static COUNTING_INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static NET_ALLOCS: Cell<isize> = const { Cell::new(0) };
}

fn bump(d: isize) {
    let _ = NET_ALLOCS.try_with(|c| c.set(c.get() + d));
}

// SAFETY: forwards to `System`, only counting.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            COUNTING_INSTALLED.store(true, std::sync::atomic::Ordering::Relaxed);
            bump(1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            COUNTING_INSTALLED.store(true, std::sync::atomic::Ordering::Relaxed);
            bump(1);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        bump(-1);
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Net allocations on this thread, if `CountingAlloc` is installed.
pub fn net_allocs() -> Option<isize> {
    if COUNTING_INSTALLED.load(std::sync::atomic::Ordering::Relaxed) {
        NET_ALLOCS.try_with(|c| c.get()).ok()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

/// A cause, as the model sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MCause {
    Canceled,
    DeadlineExceeded,
    Custom(u32),
    Msg(u32),
}

impl MCause {
    fn of(e: Error) -> MCause {
        match e {
            Error::Canceled => MCause::Canceled,
            Error::DeadlineExceeded => MCause::DeadlineExceeded,
        }
    }
    /// The id of a stored (counted) cause object.
    fn object(self) -> Option<u32> {
        match self {
            MCause::Custom(id) | MCause::Msg(id) => Some(id),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Root {
        tracked: bool,
    },
    Cancel,
    Deadline {
        at: u64,
        cause: MCause,
    },
    Value {
        b: bool,
        tag: u8,
    },
    Without,
    /// A merged context; its first parent is `parent`.
    Merge {
        other: usize,
    },
}

/// What a context on a node reports (see `Model::view`).
#[derive(Clone, Copy, Default, Debug)]
struct View {
    status: Option<(Error, MCause)>,
    deadline: Option<u64>,
    a: Option<u8>,
    b: Option<u8>,
}

#[derive(Debug)]
struct MNode {
    parent: Option<usize>,
    children: Vec<usize>,
    kind: Kind,
    clock: usize,
    /// How the scope ended (scope kinds only).
    end: Option<(Error, MCause)>,
    /// On its clock's queue (a live deadline that has not ended).
    queued: bool,
    /// Unreachable, so freed by the library; never reachable again.
    freed: bool,
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[derive(Default)]
struct Model {
    nodes: Vec<MNode>,
    now: [u64; CLOCKS],
    fired: u64,
}

impl Model {
    fn add(&mut self, parent: Option<usize>, kind: Kind, clock: usize) -> usize {
        let n = self.nodes.len();
        self.nodes.push(MNode {
            parent,
            children: Vec::new(),
            kind,
            clock,
            end: None,
            queued: false,
            freed: false,
        });
        if let Some(p) = parent {
            self.nodes[p].children.push(n);
        }
        n
    }

    fn is_scope(&self, n: usize) -> bool {
        matches!(
            self.nodes[n].kind,
            Kind::Cancel | Kind::Deadline { .. } | Kind::Merge { .. }
        )
    }

    /// The nearest scope that can cancel `n` (itself, or through value nodes).
    fn scope_of(&self, n: usize) -> Option<usize> {
        match self.nodes[n].kind {
            Kind::Cancel | Kind::Deadline { .. } | Kind::Merge { .. } => Some(n),
            Kind::Value { .. } => self.scope_of(self.nodes[n].parent.unwrap()),
            Kind::Root { .. } | Kind::Without => None,
        }
    }

    fn status(&self, n: usize) -> Option<(Error, MCause)> {
        self.scope_of(n).and_then(|s| self.nodes[s].end)
    }

    fn deadline(&self, n: usize) -> Option<u64> {
        match self.nodes[n].kind {
            Kind::Deadline { at, .. } => Some(at),
            Kind::Cancel | Kind::Value { .. } => self.deadline(self.nodes[n].parent.unwrap()),
            Kind::Merge { other } => earliest(
                self.deadline(self.nodes[n].parent.unwrap()),
                self.deadline(other),
            ),
            Kind::Root { .. } | Kind::Without => None,
        }
    }

    /// Depth first: a merged node's first parent's chain, then its other's.
    fn value(&self, n: usize, want_b: bool) -> Option<u8> {
        let mut cur = Some(n);
        while let Some(c) = cur {
            match self.nodes[c].kind {
                Kind::Value { b, tag } if b == want_b => return Some(tag),
                Kind::Merge { other } => {
                    let first = self.nodes[c].parent.unwrap();
                    return self
                        .value(first, want_b)
                        .or_else(|| self.value(other, want_b));
                }
                _ => {}
            }
            cur = self.nodes[c].parent;
        }
        None
    }

    /// Ends scope `s` (if it has not ended) and every scope below it.
    fn cancel(&mut self, s: usize, err: Error, cause: MCause) {
        assert!(self.is_scope(s));
        if self.nodes[s].end.is_some() {
            return;
        }
        self.nodes[s].end = Some((err, cause));
        self.nodes[s].queued = false;
        self.cancel_below(s, err, cause);
    }

    fn cancel_below(&mut self, n: usize, err: Error, cause: MCause) {
        for c in self.nodes[n].children.clone() {
            match self.nodes[c].kind {
                Kind::Cancel | Kind::Deadline { .. } | Kind::Merge { .. } => {
                    self.cancel(c, err, cause)
                }
                Kind::Value { .. } => self.cancel_below(c, err, cause),
                Kind::Root { .. } | Kind::Without => {}
            }
        }
    }

    fn derive_cancel(&mut self, p: usize) -> usize {
        let n = self.add(Some(p), Kind::Cancel, self.nodes[p].clock);
        self.nodes[n].end = self.status(p);
        n
    }

    /// `p.merge(q)`: a child of `p` that `q` also ends (listed among `q`'s
    /// children for that); born with `p`'s ending, else `q`'s.
    fn derive_merge(&mut self, p: usize, q: usize) -> usize {
        let n = self.add(Some(p), Kind::Merge { other: q }, self.nodes[p].clock);
        self.nodes[q].children.push(n);
        self.nodes[n].end = self.status(p).or(self.status(q));
        n
    }

    fn derive_deadline(&mut self, p: usize, at: u64, cause: MCause) -> usize {
        if self.deadline(p).is_some_and(|d| d <= at) {
            return self.derive_cancel(p);
        }
        let clock = self.nodes[p].clock;
        let n = self.add(Some(p), Kind::Deadline { at, cause }, clock);
        if let Some(end) = self.status(p) {
            self.nodes[n].end = Some(end);
        } else if at <= self.now[clock] {
            self.nodes[n].end = Some((Error::DeadlineExceeded, cause));
        } else {
            self.nodes[n].queued = true;
        }
        n
    }

    /// The queued deadlines of `clock` that are due at `now`, as (at, node).
    fn due(&self, clock: usize, now: u64) -> Vec<(u64, usize)> {
        let mut due = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if let Kind::Deadline { at, .. } = n.kind {
                if n.clock == clock && n.queued && !n.freed && at <= now {
                    due.push((at, i));
                }
            }
        }
        due
    }

    /// `true` if a merged scope that has not ended has two of the `due`
    /// deadlines with the same instant among its ancestors (through either
    /// parent): the queue may fire ties in either order, and the first to
    /// reach the merged scope decides its cause. (A deadline that is not
    /// before an ancestor's has no timer of its own, so only the two
    /// branches of a merge can hold such a tie.)
    fn merge_sees_a_tie(&self, due: &[(u64, usize)]) -> bool {
        let at_of = |i: usize| due.iter().find(|d| d.1 == i).map(|d| d.0);
        self.nodes.iter().enumerate().any(|(m, n)| {
            if !matches!(n.kind, Kind::Merge { .. }) || n.end.is_some() || n.freed {
                return false;
            }
            // Every ancestor, through both links of every merged scope.
            let mut seen = vec![false; self.nodes.len()];
            let mut stack = vec![m];
            let mut ats = Vec::new();
            while let Some(x) = stack.pop() {
                if std::mem::replace(&mut seen[x], true) {
                    continue;
                }
                if let Some(at) = at_of(x) {
                    ats.push(at);
                }
                stack.extend(self.nodes[x].parent);
                if let Kind::Merge { other } = self.nodes[x].kind {
                    stack.push(other);
                }
            }
            ats.sort_unstable();
            ats.windows(2).any(|w| w[0] == w[1])
        })
    }

    /// Ends the earliest due deadline of `clock`; `false` if none is due.
    fn fire_one(&mut self, clock: usize) -> bool {
        let Some(&(_, i)) = self.due(clock, self.now[clock]).iter().min() else {
            return false;
        };
        let Kind::Deadline { cause, .. } = self.nodes[i].kind else {
            unreachable!()
        };
        self.cancel(i, Error::DeadlineExceeded, cause);
        self.fired += 1;
        true
    }

    /// `status`, `deadline` and `value` of every node in one pass (parents
    /// come before children in the arena), so the per-step check is linear.
    /// Debug builds (not fuzzing) assert it agrees with the definitions above.
    fn view(&self) -> Vec<View> {
        let mut v: Vec<View> = Vec::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            let up = n.parent.map(|p| v[p]).unwrap_or_default();
            let mut x = match n.kind {
                Kind::Root { .. } => View::default(),
                Kind::Without => View {
                    a: up.a,
                    b: up.b,
                    ..View::default()
                },
                Kind::Value { .. } => up,
                Kind::Cancel => View {
                    status: n.end,
                    ..up
                },
                Kind::Deadline { at, .. } => View {
                    status: n.end,
                    deadline: Some(at),
                    ..up
                },
                Kind::Merge { other } => {
                    let o = v[other];
                    View {
                        status: n.end,
                        deadline: earliest(up.deadline, o.deadline),
                        a: up.a.or(o.a),
                        b: up.b.or(o.b),
                    }
                }
            };
            if let Kind::Value { b, tag } = n.kind {
                if b {
                    x.b = Some(tag);
                } else {
                    x.a = Some(tag);
                }
            }
            // (Skipped under cargo-fuzz, which builds with debug assertions:
            // the stable test does it, and the fuzzer's time is better spent
            // on the library.)
            #[allow(unexpected_cfgs)]
            let cross_check = cfg!(debug_assertions) && !cfg!(fuzzing);
            if cross_check {
                assert_eq!(x.status, self.status(i), "model view: status of {i}");
                assert_eq!(x.deadline, self.deadline(i), "model view: deadline of {i}");
                assert_eq!(x.a, self.value(i, false), "model view: value A of {i}");
                assert_eq!(x.b, self.value(i, true), "model view: value B of {i}");
            }
            v.push(x);
        }
        v
    }

    fn pending(&self, clock: usize) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.clock == clock && n.queued && !n.freed)
            .count()
    }
}

// ---------------------------------------------------------------------------
// The interpreter
// ---------------------------------------------------------------------------

/// What a run exercised (summed over runs by the callers for reports).
#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub runs: u64,
    /// Steps executed (including teardown).
    pub steps: u64,
    /// Steps that did something (not skipped for an empty list or a bound).
    pub effective: u64,
    pub derived: u64,
    pub born_cancelled: u64,
    /// Of those, deadlines already due (the rest had a cancelled parent).
    pub born_expired: u64,
    /// Scopes that ended (by handle, parent, or deadline).
    pub scopes_ended: u64,
    pub deadlines_fired: u64,
    pub wakes: u64,
    pub after_funcs_ran: u64,
    pub stops_won: u64,
    /// after_func closures that dropped a cancel handle they owned.
    pub chained_cancels: u64,
    /// Clock steps skipped because tied deadlines could fire in either order.
    pub skipped_ties: u64,
    pub max_depth: u64,
    pub max_pending: u64,
    /// Runs whose teardown left after_func registrations nothing can cancel.
    pub leftover_runs: u64,
    /// Runs whose allocations were checked to be all freed.
    pub alloc_checked_runs: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.runs += o.runs;
        self.steps += o.steps;
        self.effective += o.effective;
        self.derived += o.derived;
        self.born_cancelled += o.born_cancelled;
        self.born_expired += o.born_expired;
        self.scopes_ended += o.scopes_ended;
        self.deadlines_fired += o.deadlines_fired;
        self.wakes += o.wakes;
        self.after_funcs_ran += o.after_funcs_ran;
        self.stops_won += o.stops_won;
        self.chained_cancels += o.chained_cancels;
        self.skipped_ties += o.skipped_ties;
        self.max_depth = self.max_depth.max(o.max_depth);
        self.max_pending = self.max_pending.max(o.max_pending);
        self.leftover_runs += o.leftover_runs;
        self.alloc_checked_runs += o.alloc_checked_runs;
    }
}

struct DoneSlot {
    node: usize,
    fut: Pin<Box<DoneOwned>>,
    /// Model: the latest waker, while registered (polled Pending on a
    /// cancellable context and not woken yet).
    registered: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfState {
    /// On a context that can never be cancelled.
    Inert {
        stopped: bool,
    },
    /// Registered on `scope`, waiting.
    Pending {
        scope: usize,
    },
    Ran,
    Stopped,
}

struct AfSlot {
    probe: Arc<AfProbe>,
    handle: Option<AfterFunc>,
    state: AfState,
    /// The scope the (undropped) handle keeps alive.
    handle_scope: Option<usize>,
    /// The node of the cancel handle the closure owns.
    chain: Option<usize>,
    /// The node of the context clone the closure owns.
    keeps: Option<usize>,
}

/// The real objects and the model, side by side.
pub struct Machine {
    model: Model,
    clocks: Vec<ManualClock>,
    wakers: Vec<Arc<CountingWaker>>,
    /// Model: expected wakes per waker.
    wakes: Vec<usize>,
    live: Arc<LiveCounts>,
    next_id: u32,
    ctxs: Vec<(usize, Context)>,
    handles: Vec<(usize, CancelHandle)>,
    dones: Vec<DoneSlot>,
    afs: Vec<AfSlot>,
    trace: Vec<Op>,
    pub stats: Stats,
    /// `MODEL_VERBOSE` set: print every step and the resulting state.
    verbose: bool,
}

/// A context slot for a step that makes something new from it. With the
/// high bit of `i` clear: one of the slots whose context is still live (if
/// any; without this bias most derivations in a long run hit contexts that
/// have already been cancelled). With it set: slot `(i & 0x7f) % len`.
fn pick_ctx(m: &Machine, i: u8) -> Option<usize> {
    if i & 0x80 == 0 {
        let live: Vec<usize> = (0..m.ctxs.len())
            .filter(|&s| m.model.status(m.ctxs[s].0).is_none())
            .collect();
        if !live.is_empty() {
            return Some(live[usize::from(i) % live.len()]);
        }
    }
    pick(i & 0x7f, m.ctxs.len())
}

fn pick(i: u8, len: usize) -> Option<usize> {
    if len == 0 {
        None
    } else {
        Some(usize::from(i) % len)
    }
}

impl Default for Machine {
    fn default() -> Self {
        Machine::new()
    }
}

impl Machine {
    /// One root on each clock (the first untracked, the others tracked).
    pub fn new() -> Machine {
        let mut m = Machine {
            model: Model::default(),
            clocks: (0..CLOCKS).map(|_| ManualClock::new()).collect(),
            wakers: (0..WAKERS).map(|_| Arc::default()).collect(),
            wakes: vec![0; WAKERS],
            live: Arc::default(),
            next_id: 0,
            ctxs: Vec::new(),
            handles: Vec::new(),
            dones: Vec::new(),
            afs: Vec::new(),
            trace: Vec::new(),
            stats: Stats::default(),
            verbose: std::env::var_os("MODEL_VERBOSE").is_some(),
        };
        for c in 0..CLOCKS {
            m.new_root(c, c != 0);
        }
        m.check();
        m
    }

    #[track_caller]
    fn fail(&self, what: String) -> ! {
        let mut ops = String::new();
        for (i, op) in self.trace.iter().enumerate() {
            ops.push_str(&format!("  {i:3}: {op:?}\n"));
        }
        panic!(
            "model mismatch after step {}: {what}\nsteps:\n{ops}",
            self.trace.len().saturating_sub(1)
        );
    }

    fn new_root(&mut self, clock: usize, tracked: bool) {
        let ctx = if tracked {
            Context::background_with_clock(TrackedClock {
                inner: self.clocks[clock].clone(),
                _token: Token::new(&self.live, Counter::Roots),
            })
        } else {
            Context::background_with_clock(self.clocks[clock].clone())
        };
        let n = self.model.add(None, Kind::Root { tracked }, clock);
        self.ctxs.push((n, ctx));
    }

    fn make_cause(&mut self, arg: CauseArg) -> (Cause, MCause) {
        match arg {
            CauseArg::Custom => {
                self.next_id += 1;
                let id = self.next_id;
                let e = TagErr {
                    id,
                    _token: Token::new(&self.live, Counter::Causes),
                };
                (Cause::new(e), MCause::Custom(id))
            }
            CauseArg::Msg => {
                self.next_id += 1;
                let id = self.next_id;
                let body = MsgBody {
                    id,
                    _token: Token::new(&self.live, Counter::Causes),
                };
                (Cause::msg(body), MCause::Msg(id))
            }
            CauseArg::Canceled => (Cause::from(Error::Canceled), MCause::Canceled),
            CauseArg::DeadlineExceeded => (
                Cause::from(Error::DeadlineExceeded),
                MCause::DeadlineExceeded,
            ),
        }
    }

    /// Runs one operation on both sides, then compares them.
    pub fn step(&mut self, op: Op) {
        self.trace.push(op);
        let before = self.fingerprint();
        self.apply(op);
        self.settle();
        self.check();
        self.stats.steps += 1;
        if self.verbose {
            self.describe();
        }
        if self.fingerprint() != before {
            self.stats.effective += 1;
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Derive { ctx, how } => self.derive(ctx, how),
            Op::NewRoot { clock, tracked } => {
                if self.ctxs.len() < MAX_CTXS && self.model.nodes.len() < MAX_NODES {
                    self.new_root(usize::from(clock) % CLOCKS, tracked);
                }
            }
            Op::CloneCtx { ctx } => {
                if self.ctxs.len() < MAX_CTXS {
                    if let Some(i) = pick(ctx & 0x7f, self.ctxs.len()) {
                        let (n, c) = &self.ctxs[i];
                        let pair = (*n, c.clone());
                        self.ctxs.push(pair);
                    }
                }
            }
            Op::DropCtx { ctx } => {
                if let Some(i) = pick(ctx & 0x7f, self.ctxs.len()) {
                    drop(self.ctxs.remove(i));
                }
            }
            Op::HandleContext { handle } => {
                if self.ctxs.len() < MAX_CTXS {
                    if let Some(i) = pick(handle, self.handles.len()) {
                        let (n, h) = &self.handles[i];
                        let pair = (*n, h.context());
                        self.ctxs.push(pair);
                    }
                }
            }
            Op::Cancel { handle } => {
                if let Some(i) = pick(handle, self.handles.len()) {
                    let n = self.handles[i].0;
                    self.handles[i].1.cancel();
                    self.model.cancel(n, Error::Canceled, MCause::Canceled);
                }
            }
            Op::CancelWith { handle, cause } => {
                if let Some(i) = pick(handle, self.handles.len()) {
                    let n = self.handles[i].0;
                    let (real, model) = self.make_cause(cause);
                    self.handles[i].1.cancel_with(real);
                    self.model.cancel(n, Error::Canceled, model);
                }
            }
            Op::Detach { handle } => {
                if let Some(i) = pick(handle, self.handles.len()) {
                    let (_, h) = self.handles.remove(i);
                    h.detach();
                }
            }
            Op::DropHandle { handle } => {
                if let Some(i) = pick(handle, self.handles.len()) {
                    let (n, h) = self.handles.remove(i);
                    drop(h);
                    self.model.cancel(n, Error::Canceled, MCause::Canceled);
                }
            }
            Op::Advance { clock, by } => {
                let c = usize::from(clock) % CLOCKS;
                let d = by.real();
                let now = sat_add(self.model.now[c], d);
                if self.order_matters(c, now) {
                    self.stats.skipped_ties += 1;
                } else {
                    self.clocks[c].advance(d);
                    self.model.now[c] = now;
                    self.fire(c);
                }
            }
            Op::Set { clock, to } => {
                let c = usize::from(clock) % CLOCKS;
                let t = to.resolve(self.model.now[c]);
                let now = self.model.now[c].max(t);
                if self.order_matters(c, now) {
                    self.stats.skipped_ties += 1;
                } else {
                    self.clocks[c].set(Instant::from_nanos(t));
                    self.model.now[c] = now;
                    self.fire(c);
                }
            }
            Op::NewDone { ctx } => {
                if self.dones.len() < MAX_DONES {
                    if let Some(i) = pick_ctx(self, ctx) {
                        let (n, c) = &self.ctxs[i];
                        let slot = DoneSlot {
                            node: *n,
                            fut: Box::pin(c.done_owned()),
                            registered: None,
                        };
                        self.dones.push(slot);
                    }
                }
            }
            Op::Poll { done, waker } => {
                if let Some(i) = pick(done, self.dones.len()) {
                    let w = usize::from(waker) % WAKERS;
                    let waker = Waker::from(self.wakers[w].clone());
                    let mut cx = TaskCx::from_waker(&waker);
                    let got = self.dones[i].fut.as_mut().poll(&mut cx);
                    let node = self.dones[i].node;
                    let want = match self.model.status(node) {
                        Some((e, _)) => Poll::Ready(e),
                        None => {
                            if self.model.scope_of(node).is_some() {
                                self.dones[i].registered = Some(w);
                            }
                            Poll::Pending
                        }
                    };
                    if got != want {
                        self.fail(format!(
                            "done #{i} (node {node}) polled {got:?}, model {want:?}"
                        ));
                    }
                }
            }
            Op::DropDone { done } => {
                if let Some(i) = pick(done, self.dones.len()) {
                    drop(self.dones.remove(i));
                }
            }
            Op::AfterFunc { ctx, extra } => {
                if self.afs.len() < MAX_AFS {
                    if let Some(i) = pick_ctx(self, ctx) {
                        self.after_func(i, extra);
                    }
                }
            }
            Op::Stop { af } => {
                if let Some(i) = pick(af, self.afs.len()) {
                    let slot = &mut self.afs[i];
                    if let Some(h) = &slot.handle {
                        let got = h.stop();
                        let (want, next) = match slot.state {
                            AfState::Inert { stopped } => {
                                (!stopped, AfState::Inert { stopped: true })
                            }
                            AfState::Pending { .. } => (true, AfState::Stopped),
                            s @ (AfState::Ran | AfState::Stopped) => (false, s),
                        };
                        let before = slot.state;
                        slot.state = next;
                        self.stats.stops_won += u64::from(want);
                        if matches!(before, AfState::Pending { .. }) {
                            // The closure was dropped: so was what it owned.
                            self.closure_dropped(i);
                        }
                        if got != want {
                            self.fail(format!(
                                "after_func #{i} ({before:?}) stop() = {got}, model {want}"
                            ));
                        }
                    }
                }
            }
            Op::DropAfterFunc { af } => {
                if let Some(i) = pick(af, self.afs.len()) {
                    let slot = &mut self.afs[i];
                    slot.handle = None;
                    slot.handle_scope = None;
                }
            }
        }
    }

    /// Registers an `after_func` on context slot `i`, with a closure that
    /// owns what `extra` says.
    fn after_func(&mut self, i: usize, extra: AfExtra) {
        let node = self.ctxs[i].0;
        let (keep, mut chain) = match extra {
            AfExtra::None => (false, None),
            AfExtra::KeepCtx => (true, None),
            AfExtra::Chain(h) => (false, pick(h, self.handles.len())),
            AfExtra::Both(h) => (true, pick(h, self.handles.len())),
        };
        // No closure that cancels beside a live merged context (module docs).
        let merges_live = self
            .model
            .nodes
            .iter()
            .any(|n| !n.freed && matches!(n.kind, Kind::Merge { .. }));
        if merges_live {
            chain = None;
        }
        let kept = keep.then(|| self.ctxs[i].1.clone());
        let (chain, owned) = match chain {
            Some(h) => {
                let (n, h) = self.handles.remove(h);
                (Some(n), Some(h))
            }
            None => (None, None),
        };
        let probe = Arc::new(AfProbe::default());
        let guard = AfGuard(probe.clone());
        let handle = self.ctxs[i].1.after_func(move || {
            let guard = guard;
            guard.0.runs.fetch_add(1, SeqCst);
            drop(owned);
            drop(kept);
        });
        let (state, handle_scope) = match self.model.scope_of(node) {
            None => (AfState::Inert { stopped: false }, None),
            Some(s) => match self.model.nodes[s].end {
                Some(_) => (AfState::Ran, None),
                None => (AfState::Pending { scope: s }, Some(s)),
            },
        };
        self.afs.push(AfSlot {
            probe,
            handle: Some(handle),
            state,
            handle_scope,
            chain,
            keeps: keep.then_some(node),
        });
        if !matches!(state, AfState::Pending { .. }) {
            // Ran at once, or dropped at once (never cancellable).
            self.closure_dropped(self.afs.len() - 1);
        }
    }

    /// A pending after_func closure owns a cancel handle.
    fn chains_pending(&self) -> bool {
        self.afs
            .iter()
            .any(|a| a.chain.is_some() && matches!(a.state, AfState::Pending { .. }))
    }

    /// Model: after_func `i`'s closure ran or was dropped; dropping the cancel
    /// handle it owned cancels that scope.
    fn closure_dropped(&mut self, i: usize) {
        if let Some(t) = self.afs[i].chain {
            self.stats.chained_cancels += 1;
            self.model.cancel(t, Error::Canceled, MCause::Canceled);
        }
    }

    /// Runs (in the model) every pending after_func whose scope has ended,
    /// until none is left: their closures may cancel more scopes.
    fn run_after_funcs(&mut self) {
        loop {
            let mut ran = false;
            for i in 0..self.afs.len() {
                if let AfState::Pending { scope } = self.afs[i].state {
                    if self.model.nodes[scope].end.is_some() {
                        self.afs[i].state = AfState::Ran;
                        self.stats.after_funcs_ran += 1;
                        self.closure_dropped(i);
                        ran = true;
                    }
                }
            }
            if !ran {
                return;
            }
        }
    }

    /// Fires the due deadlines of `clock` one at a time, earliest first, each
    /// with everything its after_func closures do (as `Timers::fire` does).
    fn fire(&mut self, clock: usize) {
        self.run_after_funcs();
        while self.model.fire_one(clock) {
            self.run_after_funcs();
        }
    }

    /// `true` if moving `clock` to `now` would fire two deadlines due at the
    /// same instant while some after_func closure can cancel another scope:
    /// the library may fire such ties in either order, and the closure of
    /// the first can change how the second ends. The step is then skipped.
    fn order_matters(&self, clock: usize, now: u64) -> bool {
        let due = self.model.due(clock, now);
        let chains = self
            .afs
            .iter()
            .any(|a| a.chain.is_some() && matches!(a.state, AfState::Pending { .. }));
        if chains {
            let mut ats: Vec<u64> = due.iter().map(|d| d.0).collect();
            ats.sort_unstable();
            if ats.windows(2).any(|w| w[0] == w[1]) {
                return true;
            }
        }
        self.model.merge_sees_a_tie(&due)
    }

    fn derive(&mut self, ctx: u8, how: Derive) {
        if self.ctxs.len() >= MAX_CTXS || self.model.nodes.len() >= MAX_NODES {
            return;
        }
        let Some(i) = pick_ctx(self, ctx) else {
            return;
        };
        let makes_handle = !matches!(
            how,
            Derive::ValueA(_) | Derive::ValueB(_) | Derive::WithoutCancel
        );
        if makes_handle && self.handles.len() >= MAX_HANDLES {
            return;
        }
        let p = self.ctxs[i].0;
        let now = self.model.now[self.model.nodes[p].clock];
        let (n, c, h) = match how {
            Derive::Cancel => {
                let (c, h) = self.ctxs[i].1.with_cancel();
                (self.model.derive_cancel(p), c, Some(h))
            }
            Derive::Deadline(at) => {
                let at = at.resolve(now);
                let (c, h) = self.ctxs[i].1.with_deadline(Instant::from_nanos(at));
                let n = self.model.derive_deadline(p, at, MCause::DeadlineExceeded);
                (n, c, Some(h))
            }
            Derive::Timeout(d) => {
                let (c, h) = self.ctxs[i].1.with_timeout(d.real());
                let at = sat_add(now, d.real());
                let n = self.model.derive_deadline(p, at, MCause::DeadlineExceeded);
                (n, c, Some(h))
            }
            Derive::DeadlineCause(at, cause) => {
                let at = at.resolve(now);
                let (real, model) = self.make_cause(cause);
                let (c, h) = self.ctxs[i]
                    .1
                    .with_deadline_cause(Instant::from_nanos(at), real);
                (self.model.derive_deadline(p, at, model), c, Some(h))
            }
            Derive::TimeoutCause(d, cause) => {
                let (real, model) = self.make_cause(cause);
                let (c, h) = self.ctxs[i].1.with_timeout_cause(d.real(), real);
                let at = sat_add(now, d.real());
                (self.model.derive_deadline(p, at, model), c, Some(h))
            }
            Derive::ValueA(tag) => {
                let v = ValA(tag, Token::new(&self.live, Counter::Values));
                let c = self.ctxs[i].1.with_value(v);
                let clock = self.model.nodes[p].clock;
                let n = self
                    .model
                    .add(Some(p), Kind::Value { b: false, tag }, clock);
                (n, c, None)
            }
            Derive::ValueB(tag) => {
                let v = ValB(tag, Token::new(&self.live, Counter::Values));
                let c = self.ctxs[i].1.with_value(v);
                let clock = self.model.nodes[p].clock;
                let n = self.model.add(Some(p), Kind::Value { b: true, tag }, clock);
                (n, c, None)
            }
            Derive::WithoutCancel => {
                let c = self.ctxs[i].1.without_cancel();
                let clock = self.model.nodes[p].clock;
                (self.model.add(Some(p), Kind::Without, clock), c, None)
            }
            Derive::Merge(o) => {
                // Not beside closures that own cancel handles (module docs).
                if self.chains_pending() {
                    return;
                }
                let Some(j) = pick(o & 0x7f, self.ctxs.len()) else {
                    return;
                };
                let q = self.ctxs[j].0;
                let (c, h) = self.ctxs[i].1.merge(&self.ctxs[j].1);
                (self.model.derive_merge(p, q), c, Some(h))
            }
        };
        self.stats.derived += 1;
        self.stats.born_cancelled += u64::from(self.model.status(n).is_some());
        self.stats.born_expired +=
            u64::from(self.model.status(p).is_none() && self.model.status(n).is_some());
        let mut depth = 0;
        let mut cur = self.model.nodes[n].parent;
        while let Some(c) = cur {
            depth += 1;
            cur = self.model.nodes[c].parent;
        }
        self.stats.max_depth = self.stats.max_depth.max(depth);
        self.ctxs.push((n, c));
        if let Some(h) = h {
            self.handles.push((n, h));
        }
    }

    /// Prints the last step and the model's view of every held object.
    fn describe(&self) {
        let m = &self.model;
        eprintln!(
            "step {}: {:?}",
            self.trace.len() - 1,
            self.trace.last().unwrap()
        );
        eprintln!(
            "  now {:?}, pending {:?}",
            m.now,
            (0..CLOCKS).map(|c| m.pending(c)).collect::<Vec<_>>()
        );
        for (i, (n, _)) in self.ctxs.iter().enumerate() {
            eprintln!(
                "  ctx #{i}: node {n} {:?} parent {:?} status {:?} deadline {:?}",
                m.nodes[*n].kind,
                m.nodes[*n].parent,
                m.status(*n),
                m.deadline(*n)
            );
        }
        for (i, (n, _)) in self.handles.iter().enumerate() {
            eprintln!("  handle #{i}: node {n}");
        }
        for (i, d) in self.dones.iter().enumerate() {
            eprintln!("  done #{i}: node {} registered {:?}", d.node, d.registered);
        }
        for (i, a) in self.afs.iter().enumerate() {
            eprintln!(
                "  after_func #{i}: {:?}, handle {}",
                a.state,
                a.handle.is_some()
            );
        }
    }

    /// A cheap summary of the model's state, to tell effective steps apart.
    fn fingerprint(
        &self,
    ) -> (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        [u64; CLOCKS],
        usize,
        u64,
    ) {
        (
            self.model.nodes.len(),
            self.ctxs.len(),
            self.handles.len(),
            self.dones.len(),
            self.dones.iter().filter(|d| d.registered.is_some()).count(),
            self.afs.iter().filter(|a| a.handle.is_some()).count()
                + 100
                    * self
                        .afs
                        .iter()
                        .filter(|a| {
                            matches!(
                                a.state,
                                AfState::Pending { .. } | AfState::Inert { stopped: false }
                            )
                        })
                        .count(),
            self.model.now,
            self.model.nodes.iter().filter(|n| n.end.is_some()).count(),
            self.stats.wakes,
        )
    }

    /// Model side of what the library does synchronously inside every call:
    /// wake registered futures and run pending closures of ended scopes, then
    /// free what became unreachable.
    fn settle(&mut self) {
        self.run_after_funcs();
        for d in &mut self.dones {
            if let Some(w) = d.registered {
                if self.model.status(d.node).is_some() {
                    self.wakes[w] += 1;
                    self.stats.wakes += 1;
                    d.registered = None;
                }
            }
        }
        let ended = self.model.nodes.iter().filter(|n| n.end.is_some()).count() as u64;
        self.stats.scopes_ended = self.stats.scopes_ended.max(ended);
        self.stats.deadlines_fired = self.model.fired;
        for c in 0..CLOCKS {
            self.stats.max_pending = self.stats.max_pending.max(self.model.pending(c) as u64);
        }
        let alive = self.reachable();
        for (i, n) in self.model.nodes.iter_mut().enumerate() {
            if alive[i] {
                assert!(!n.freed, "model bug: node {i} reachable after it was freed");
            } else {
                n.freed = true;
            }
        }
    }

    /// Which nodes something still holds (directly or through a child).
    fn reachable(&self) -> Vec<bool> {
        let mut alive = vec![false; self.model.nodes.len()];
        let mut held: Vec<usize> = Vec::new();
        held.extend(self.ctxs.iter().map(|(n, _)| *n));
        held.extend(self.handles.iter().map(|(n, _)| *n));
        held.extend(self.dones.iter().map(|d| d.node));
        for a in &self.afs {
            held.extend(a.handle_scope);
            if let AfState::Pending { scope } = a.state {
                held.push(scope);
                held.extend(a.chain);
                held.extend(a.keeps);
            }
        }
        // A node holds its parent, and a merged node its other parent too.
        while let Some(c) = held.pop() {
            if alive[c] {
                continue;
            }
            alive[c] = true;
            held.extend(self.model.nodes[c].parent);
            if let Kind::Merge { other } = self.model.nodes[c].kind {
                held.push(other);
            }
        }
        alive
    }

    fn check(&self) {
        let m = &self.model;
        for c in 0..CLOCKS {
            let now = self.clocks[c].now().as_nanos();
            if now != m.now[c] {
                self.fail(format!("clock {c}: now {now}, model {}", m.now[c]));
            }
            let pending = self.clocks[c].pending();
            if pending != m.pending(c) {
                self.fail(format!(
                    "clock {c}: pending() = {pending}, model {} (queued live deadlines: {:?})",
                    m.pending(c),
                    m.nodes
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| n.clock == c && n.queued && !n.freed)
                        .map(|(i, _)| i)
                        .collect::<Vec<_>>()
                ));
            }
        }
        let view = m.view();
        for (slot, (n, ctx)) in self.ctxs.iter().enumerate() {
            self.check_ctx(slot, *n, ctx, view[*n]);
        }
        for (slot, (n, h)) in self.handles.iter().enumerate() {
            let want = view[*n].status.is_some();
            if h.is_cancelled() != want {
                self.fail(format!(
                    "handle #{slot} (node {n}): is_cancelled {}, model {want}",
                    h.is_cancelled()
                ));
            }
        }
        for w in 0..WAKERS {
            let got = self.wakers[w].0.load(SeqCst);
            if got != self.wakes[w] {
                self.fail(format!(
                    "waker {w}: woken {got} times, model {}",
                    self.wakes[w]
                ));
            }
        }
        for (i, a) in self.afs.iter().enumerate() {
            let runs = a.probe.runs.load(SeqCst);
            let want_runs = usize::from(a.state == AfState::Ran);
            if runs != want_runs {
                self.fail(format!(
                    "after_func #{i} ({:?}): ran {runs} times, model {want_runs}",
                    a.state
                ));
            }
            let dropped = a.probe.dropped.load(SeqCst);
            let want_dropped = !matches!(a.state, AfState::Pending { .. });
            if dropped != want_dropped {
                self.fail(format!(
                    "after_func #{i} ({:?}): closure dropped {dropped}, model {want_dropped}",
                    a.state
                ));
            }
        }
        self.check_live();
    }

    fn check_ctx(&self, slot: usize, n: usize, ctx: &Context, view: View) {
        let m = &self.model;
        let status = view.status;
        let who = Who(slot, n, m.nodes[n].kind);
        if ctx.is_cancelled() != status.is_some() {
            self.fail(format!(
                "{who}: is_cancelled {}, model {status:?}",
                ctx.is_cancelled()
            ));
        }
        let err = ctx.err();
        if err != status.map(|s| s.0) {
            self.fail(format!("{who}: err {err:?}, model {status:?}"));
        }
        let cause = ctx.cause();
        match (&cause, status) {
            (None, None) => {}
            (Some(c), Some((_, want))) => {
                if !cause_matches(c, want) {
                    self.fail(format!("{who}: cause {c:?}, model {want:?}"));
                }
            }
            _ => self.fail(format!("{who}: cause {cause:?}, model {status:?}")),
        }
        drop(cause);
        let deadline = ctx.deadline().map(Instant::as_nanos);
        if deadline != view.deadline {
            self.fail(format!(
                "{who}: deadline {deadline:?}, model {:?}",
                view.deadline
            ));
        }
        let a = ctx.value::<ValA>().map(|v| v.0);
        let b = ctx.value::<ValB>().map(|v| v.0);
        if a != view.a || b != view.b {
            self.fail(format!(
                "{who}: values {a:?}/{b:?}, model {:?}/{:?}",
                view.a, view.b
            ));
        }
        let now = ctx.now().as_nanos();
        if now != m.now[m.nodes[n].clock] {
            self.fail(format!(
                "{who}: now {now}, model {}",
                m.now[m.nodes[n].clock]
            ));
        }
    }

    /// Values, causes and tracked clock roots alive exactly while reachable.
    fn check_live(&self) {
        let m = &self.model;
        let mut values = 0isize;
        let mut roots = 0isize;
        let mut causes = BTreeSet::new();
        for n in m.nodes.iter().filter(|n| !n.freed) {
            match n.kind {
                Kind::Value { .. } => values += 1,
                Kind::Root { tracked: true } => roots += 1,
                Kind::Deadline { cause, .. } => causes.extend(cause.object()),
                _ => {}
            }
            if let Some((_, c)) = n.end {
                causes.extend(c.object());
            }
        }
        let got = (
            self.live.values.load(SeqCst),
            self.live.causes.load(SeqCst),
            self.live.roots.load(SeqCst),
        );
        let want = (values, causes.len() as isize, roots);
        if got != want {
            self.fail(format!(
                "live (values, causes, tracked roots) = {got:?}, model {want:?}"
            ));
        }
    }

    /// Drops everything (checking after each drop), in an order chosen by
    /// `flavor`. Returns `true` if the model says nodes stay reachable
    /// (after_func registrations on scopes nothing can cancel any more).
    pub fn teardown(&mut self, flavor: u8) -> bool {
        if flavor & 1 != 0 {
            for c in 0..CLOCKS {
                self.step(Op::Set {
                    clock: c as u8,
                    to: At::Max,
                });
            }
        }
        let drop_handles = |m: &mut Machine| {
            while !m.handles.is_empty() {
                let i = m.handles.len() - 1;
                m.step(Op::DropHandle { handle: i as u8 });
            }
        };
        if flavor & 2 != 0 {
            drop_handles(self);
        }
        if flavor & 4 != 0 {
            for i in 0..self.afs.len() {
                if self.afs[i].handle.is_some() {
                    self.step(Op::Stop { af: i as u8 });
                }
            }
        }
        for i in 0..self.afs.len() {
            if self.afs[i].handle.is_some() {
                self.step(Op::DropAfterFunc { af: i as u8 });
            }
        }
        while !self.dones.is_empty() {
            self.step(Op::DropDone { done: 0 });
        }
        while !self.ctxs.is_empty() {
            let i = if flavor & 8 != 0 {
                0
            } else {
                self.ctxs.len() - 1
            };
            self.step(Op::DropCtx { ctx: i as u8 });
        }
        drop_handles(self);
        self.model.nodes.iter().any(|n| !n.freed)
    }
}

/// A short `Display` rendering on the stack (compared without allocating).
#[derive(PartialEq, Eq)]
struct Text {
    buf: [u8; 32],
    len: usize,
    overflow: bool,
}

impl Text {
    fn of(x: impl fmt::Display) -> Text {
        use fmt::Write;
        let mut t = Text {
            buf: [0; 32],
            len: 0,
            overflow: false,
        };
        let _ = write!(t, "{x}");
        t
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            self.overflow = true;
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Names a context slot in failure messages (formatted only on failure).
struct Who(usize, usize, Kind);

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ctx #{} (node {}, {:?})", self.0, self.1, self.2)
    }
}

fn cause_matches(c: &Cause, want: MCause) -> bool {
    match want {
        MCause::Canceled => *c == Error::Canceled && c.as_error() == Some(Error::Canceled),
        MCause::DeadlineExceeded => {
            *c == Error::DeadlineExceeded && c.as_error() == Some(Error::DeadlineExceeded)
        }
        MCause::Custom(id) => {
            c.as_error().is_none() && c.downcast_ref::<TagErr>().is_some_and(|e| e.id == id)
        }
        MCause::Msg(id) => {
            c.as_error().is_none()
                && c.downcast_ref::<TagErr>().is_none()
                && Text::of(c) == Text::of(format_args!("msg#{id}"))
        }
    }
}

/// Runs one input: decodes operations until the input is used up, runs each
/// on the library and the model with a full comparison after every step,
/// then tears everything down (also checked) and, when nothing should stay
/// reachable and `CountingAlloc` is installed, checks that every allocation
/// made during the run was freed.
pub fn run(data: &[u8]) -> Stats {
    // Nodes the thread caches for reuse are not leaks: count without them.
    cancel_tree::trim_thread_cache();
    let before = net_allocs();
    let (leftover, mut stats) = {
        let mut u = Unstructured::new(data);
        let flavor = u.arbitrary::<u8>().unwrap_or(0);
        let mut m = Machine::new();
        let mut ops = 0;
        while !u.is_empty() && ops < MAX_OPS {
            let Ok(op) = Op::arbitrary(&mut u) else { break };
            m.step(op);
            ops += 1;
        }
        let leftover = m.teardown(flavor);
        (leftover, m.stats)
    };
    stats.runs = 1;
    stats.leftover_runs = u64::from(leftover);
    if !leftover {
        cancel_tree::trim_thread_cache();
        if let (Some(b), Some(a)) = (before, net_allocs()) {
            stats.alloc_checked_runs = 1;
            assert_eq!(
                a - b,
                0,
                "allocations not freed after a run that leaves nothing reachable \
                 (ops: {:?})",
                decode(data)
            );
        }
    }
    stats
}

// ---------------------------------------------------------------------------
// Instant arithmetic against u128 math
// ---------------------------------------------------------------------------

/// Input of the `Instant` arithmetic check.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct InstantCase {
    pub a: u64,
    pub b: u64,
    pub secs: u64,
    pub subsec: u32,
    pub small: bool,
}

/// Checks `Instant`'s saturating and checked arithmetic, `ManualClock`
/// advancing/setting and `with_timeout`'s deadline against u128 math.
pub fn check_instant(case: InstantCase) {
    let InstantCase {
        a,
        b,
        secs,
        subsec,
        small,
    } = case;
    let (a, b) = if small { (a % 4096, b % 4096) } else { (a, b) };
    let d = Duration::new(secs, subsec % 1_000_000_000);
    let d = if small {
        Duration::from_nanos(d.as_nanos() as u64 % 4096)
    } else {
        d
    };
    let ia = Instant::from_nanos(a);
    let ib = Instant::from_nanos(b);
    assert_eq!(ia.as_nanos(), a);

    let sum = u128::from(a) + d.as_nanos();
    let max = u128::from(u64::MAX);
    let sat = if sum > max { u64::MAX } else { sum as u64 };
    let checked = if sum > max { None } else { Some(sum as u64) };
    assert_eq!(ia.saturating_add(d).as_nanos(), sat, "{a} + {d:?}");
    assert_eq!((ia + d).as_nanos(), sat, "{a} + {d:?}");
    let mut ic = ia;
    ic += d;
    assert_eq!(ic.as_nanos(), sat, "{a} += {d:?}");
    assert_eq!(
        ia.checked_add(d).map(Instant::as_nanos),
        checked,
        "{a} + {d:?}"
    );

    let diff = Duration::from_nanos(a.saturating_sub(b));
    assert_eq!(ia.saturating_duration_since(ib), diff, "{a} - {b}");
    assert_eq!(ia - ib, diff, "{a} - {b}");
    assert_eq!(ia.cmp(&ib), a.cmp(&b));
    assert_eq!(ia == ib, a == b);

    // A manual clock moves by the same saturating rule, never backwards.
    let clock = ManualClock::starting_at(ia);
    assert_eq!(clock.now(), ia);
    clock.set(ib);
    assert_eq!(clock.now().as_nanos(), a.max(b));
    let start = a.max(b);
    clock.advance(d);
    let want = (u128::from(start) + d.as_nanos()).min(max) as u64;
    assert_eq!(clock.now().as_nanos(), want, "{start} advanced by {d:?}");

    // with_timeout's deadline is now + d, saturating; due at once if not later.
    let clock = ManualClock::starting_at(ia);
    let root = Context::background_with_clock(clock.clone());
    let (ctx, cancel) = root.with_timeout(d);
    assert_eq!(ctx.deadline(), Some(Instant::from_nanos(sat)));
    let born = sat <= a;
    assert_eq!(
        ctx.err(),
        born.then_some(Error::DeadlineExceeded),
        "{a} + {d:?}"
    );
    assert_eq!(clock.pending(), usize::from(!born));
    let (ctx2, cancel2) = root.with_deadline(ib);
    assert_eq!(ctx2.deadline(), Some(ib));
    assert_eq!(ctx2.err(), (b <= a).then_some(Error::DeadlineExceeded));
    drop(cancel);
    drop(cancel2);
    assert_eq!(clock.pending(), 0);
}
