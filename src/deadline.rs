//! Deadline scopes and clock roots: `with_deadline`, `with_timeout`,
//! `background_with_clock`, and how a due deadline reaches its context.
//!
//! A deadline scope is a cancellation scope followed by its timer links, its
//! clock and the cause it ends with: one allocation. It is queued on its
//! clock's [`Timers`](crate::Timers) only if its deadline is earlier than its
//! parent's (otherwise it is a plain `with_cancel` child, as in Go) and still
//! in the future (otherwise it is born `DeadlineExceeded`). It leaves the
//! queue as soon as it ends (cancel, parent cancel, or firing) or is freed.

#[cfg(feature = "alloc")]
use alloc::boxed::Box;
#[cfg(feature = "alloc")]
use core::ptr;

use crate::clock::Clock;
#[cfg(feature = "alloc")]
use crate::context::Context;
#[cfg(feature = "alloc")]
use crate::handle::CancelHandle;
use crate::node::{self, Header, NodePtr, Scope};
use crate::state;
#[cfg(feature = "alloc")]
use crate::state::{REF_ONE, Word};
use crate::sync::UnsafeCell;
use crate::timer::TimerNode;
use crate::{Cause, Error, Instant};

#[repr(C)]
pub(crate) struct DeadlineScope {
    pub(crate) scope: Scope,
    pub(crate) timer: TimerNode,
    /// The tree's clock; alive as long as the tree's root, which this node
    /// keeps alive through its parent chain. Null data pointer: no clock.
    pub(crate) clock: *const dyn Clock,
    /// The cause when the deadline passes.
    pub(crate) cause: Cause,
    /// `false` only if the node can never be queued (no clock). Written
    /// before the node is shared, immutable after.
    pub(crate) ever_queued: UnsafeCell<bool>,
}

/// The fixed part of a clock root; the clock follows it.
#[repr(C)]
pub(crate) struct ClockRootHeader {
    hdr: Header,
    clock: *const dyn Clock,
    free: unsafe fn(*const ClockRootHeader),
}

#[cfg(feature = "alloc")]
#[repr(C)]
struct ClockRoot<C> {
    head: ClockRootHeader,
    clock: C,
}

/// A root whose subtree uses `clock`.
#[cfg(feature = "alloc")]
pub(crate) fn new_clock_root<C: Clock>(clock: C) -> Context {
    unsafe fn free<C>(h: *const ClockRootHeader) {
        // SAFETY: made by `Box::new(ClockRoot<C>)` below; no references left.
        #[cfg(not(cancel_tree_loom))]
        unsafe {
            drop(Box::from_raw(h.cast::<ClockRoot<C>>().cast_mut()))
        }
        // Loom: the clock is dropped, the block kept with its word poisoned
        // (see `state::checked`).
        // SAFETY: as above; nobody uses the root any more.
        #[cfg(cancel_tree_loom)]
        unsafe {
            ptr::drop_in_place(&raw mut (*h.cast::<ClockRoot<C>>().cast_mut()).clock);
            (*h).hdr.word.poison();
        }
    }
    let raw = Box::into_raw(Box::new(ClockRoot {
        head: ClockRootHeader {
            hdr: Header {
                word: Word::new(state::KIND_CLOCK_ROOT | REF_ONE),
                parent: node::BACKGROUND,
            },
            clock: ptr::null::<C>() as *const dyn Clock,
            free: free::<C>,
        },
        clock,
    }));
    // SAFETY: fresh allocation; the clock field never moves (heap).
    unsafe {
        (*raw).head.clock = &raw const (*raw).clock as *const dyn Clock;
    }
    Context {
        node: raw.cast_const().cast(),
        scope: ptr::null(),
    }
}

/// Frees a clock root.
///
/// # Safety
/// `node` is a clock root with no references left.
#[cfg(feature = "alloc")]
pub(crate) unsafe fn free_clock_root(node: NodePtr) {
    let h = node.cast::<ClockRootHeader>();
    // SAFETY: (caller).
    unsafe { ((*h).free)(h) }
}

/// The clock of the tree `node` is in: the nearest deadline scope's or clock
/// root's, else the default (`StdClock` with `std`, none without).
///
/// # Safety
/// `node` is a sentinel or alive.
pub(crate) unsafe fn clock_of(mut node: NodePtr) -> Option<*const dyn Clock> {
    while node::is_heap(node) {
        // SAFETY: ancestors of a live node are alive; kinds are immutable.
        unsafe {
            match state::kind((*node).word.load()) {
                state::KIND_DEADLINE => {
                    let c = (*node.cast::<DeadlineScope>()).clock;
                    return if c.is_null() { None } else { Some(c) };
                }
                state::KIND_CLOCK_ROOT => return Some((*node.cast::<ClockRootHeader>()).clock),
                _ => node = (*node).parent,
            }
        }
    }
    default_clock()
}

fn default_clock() -> Option<*const dyn Clock> {
    #[cfg(all(feature = "std", not(cancel_tree_loom)))]
    {
        Some(&crate::clock::std_clock::STD_CLOCK as &dyn Clock as *const dyn Clock)
    }
    #[cfg(not(all(feature = "std", not(cancel_tree_loom))))]
    {
        None
    }
}

/// The nearest deadline of the scope chain starting at `scope`.
///
/// # Safety
/// `scope` is null or alive.
pub(crate) unsafe fn deadline_of(mut scope: *const Scope) -> Option<Instant> {
    while !scope.is_null() {
        // SAFETY: a live scope's ancestors are alive; kinds are immutable.
        unsafe {
            if state::kind((*scope).hdr.word.load()) == state::KIND_DEADLINE {
                return Some((*scope.cast::<DeadlineScope>()).timer.at);
            }
            scope = node::scope_of((*scope).hdr.parent);
        }
    }
    None
}

/// `with_deadline_cause`.
#[cfg(feature = "alloc")]
///
/// `now`: the clock reading a timeout was computed from, so the clock is
/// read once per derivation (`None`: read it here).
pub(crate) fn with_deadline(
    parent: &Context,
    at: Instant,
    cause: Cause,
    now: Option<Instant>,
) -> *const Scope {
    if parent.deadline().is_some_and(|d| d <= at) {
        // The parent ends first: the child just follows it (Go).
        return parent.new_cancel_scope();
    }
    // SAFETY: `parent` keeps its node alive.
    let clock = unsafe { clock_of(parent.node) };
    #[allow(clippy::let_unit_value)] // `()` without shard arrays
    let hint = parent.shard_hint();
    // Built in place, field by field: `Box::new(DeadlineScope { .. })`
    // assembled the 144 bytes on the stack and copied them with `memcpy`.
    let mut ds = Box::<DeadlineScope>::new_uninit();
    let p = ds.as_mut_ptr();
    // SAFETY: `p` points to the box's uninitialised block, of the right
    // layout; each field is written exactly once, and nothing between the
    // writes can panic (a panic would only leak the block).
    let ds: *const DeadlineScope = unsafe {
        (&raw mut (*p).scope).write(Scope::new(
            state::KIND_DEADLINE | (2 * REF_ONE),
            parent.node,
        ));
        (&raw mut (*p).timer).write(TimerNode::new(at));
        (&raw mut (*p).clock).write(clock.unwrap_or_else(crate::clock::no_clock));
        (&raw mut (*p).cause).write(cause);
        // Set before the node is shared (attach links it under the parent,
        // whose walk reads this), and never written again: "maybe queued".
        // A `true` for a deadline that never enters the queue only costs a
        // lock in `dequeue`.
        (&raw mut (*p).ever_queued).write(UnsafeCell::new(clock.is_some()));
        Box::into_raw(ds.assume_init())
    };
    let s: *const Scope = ds.cast();
    // SAFETY: fresh node; `parent` holds a reference on its node.
    unsafe { parent.attach_acquiring(s, hint) };
    let ctx = Context {
        node: s.cast(),
        scope: s,
    };
    let handle = CancelHandle::new(s);
    if ctx.is_cancelled() {
        return into_scope(ctx, handle); // born cancelled by the parent
    }
    let Some(clock) = clock else {
        return into_scope(ctx, handle); // no clock: the deadline is reported, never fires
    };
    // SAFETY: the clock lives as long as the tree (see `DeadlineScope`).
    let clock = unsafe { &*clock };
    if at <= now.unwrap_or_else(|| clock.now()) {
        // SAFETY: `ctx` holds a reference on `s`.
        unsafe { crate::cancel::cancel(s, Error::DeadlineExceeded, &(*ds).cause) };
        return into_scope(ctx, handle);
    }
    // SAFETY: the node outlives its queue entry (removed in `free`).
    unsafe { clock.timers().insert(&raw const (*ds).timer, clock) };
    if ctx.is_cancelled() {
        // Cancelled by the parent between `attach` and `insert`: its walk may
        // have missed the entry, so remove it now (O(live timers)).
        // SAFETY: we hold references on the node.
        unsafe { dequeue(ds) };
    }
    into_scope(ctx, handle)
}

/// Gives up the pair's references to the caller, which rebuilds it (see
/// `Context::pair`: building it in the caller avoids returning it through
/// memory). Until then the pair owns them, so a panicking clock unwinds
/// without a leak.
#[cfg(feature = "alloc")]
fn into_scope(ctx: Context, handle: CancelHandle) -> *const Scope {
    let s = ctx.scope;
    core::mem::forget(ctx);
    core::mem::forget(handle);
    s
}

/// The deadline node around a timer entry, with a reference taken, or `None`
/// if it is being freed.
///
/// # Safety
/// The queue lock is held and `node` was just popped from it.
pub(crate) unsafe fn claim(node: *const TimerNode) -> Option<*const DeadlineScope> {
    let offset = core::mem::offset_of!(DeadlineScope, timer);
    // SAFETY: every queued `TimerNode` is the `timer` field of a
    // `DeadlineScope` (the only place one is built), so stepping back by its
    // offset stays in the same allocation.
    let ds = unsafe { node.byte_sub(offset).cast::<DeadlineScope>() };
    // SAFETY: alive: a dying node waits for the queue lock before freeing.
    if unsafe { (*ds).scope.hdr.word.try_acquire_ref() } {
        Some(ds)
    } else {
        None
    }
}

/// Ends a deadline node whose time came.
///
/// # Safety
/// The caller owns a reference on `ds` (from `claim`), given up here.
pub(crate) unsafe fn expire(ds: *const DeadlineScope) {
    struct Release(*const DeadlineScope);
    impl Drop for Release {
        fn drop(&mut self) {
            // SAFETY: the reference from `claim`.
            unsafe { node::release(self.0.cast()) }
        }
    }
    let _release = Release(ds);
    // SAFETY: we hold a reference.
    unsafe { crate::cancel::cancel(ds.cast(), Error::DeadlineExceeded, &(*ds).cause) };
}

/// Takes an ended deadline scope out of its clock's queue.
///
/// # Safety
/// `ds` is alive.
pub(crate) unsafe fn dequeue(ds: *const DeadlineScope) {
    // SAFETY: `ever_queued` is written before the node is shared and never
    // after; the clock outlives the node.
    unsafe {
        if (*ds).ever_queued.with(|q| *q) {
            let clock = &*(*ds).clock;
            clock.timers().remove(&raw const (*ds).timer);
        }
    }
}

/// Frees a deadline node.
///
/// # Safety
/// No references remain on `ds`.
#[cfg(feature = "alloc")]
pub(crate) unsafe fn free(ds: *const DeadlineScope) -> node::Parent {
    // SAFETY: (caller) last reference.
    unsafe {
        // A node that ended has left the queue already: whoever ended it
        // (its cancel, a parent walk's notify phase, the firing timer, or
        // `with_deadline` itself when a parent walk raced the insert)
        // dequeued it while holding a reference, so before this free.
        if (*ds).scope.hdr.word.load() & state::CANCELLED == 0 {
            dequeue(ds);
        }
        let guard = node::SettleOnUnwind(node::detach_from_parent(ds.cast(), true));
        node::drop_cause(&(*ds).scope);
        #[cfg(cancel_tree_shards)]
        crate::shards::free(&(*ds).scope);
        #[cfg(not(cancel_tree_loom))]
        drop(Box::from_raw(ds.cast_mut()));
        // Loom: poisoned and kept, so a late access is caught; the cause
        // (user code in its `Drop`) is dropped as a free would.
        #[cfg(cancel_tree_loom)]
        {
            ptr::drop_in_place(&raw mut (*ds.cast_mut()).cause);
            (*ds).scope.hdr.word.poison();
        }
        guard.defuse()
    }
}

/// Dequeues `scope` if it is a deadline scope (the cancel walk calls this
/// for every node it ended, so a cancelled timeout leaves the queue at once).
///
/// # Safety
/// `scope` is alive.
pub(crate) unsafe fn dequeue_if_deadline(scope: *const Scope) {
    // SAFETY: (caller); the kind is immutable.
    unsafe {
        if state::kind((*scope).hdr.word.load()) == state::KIND_DEADLINE {
            dequeue(scope.cast());
        }
    }
}
