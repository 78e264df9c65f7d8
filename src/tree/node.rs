//! Node layouts: what every heap node starts with, the cancellation scope,
//! value nodes, the cause cell, and value lookup.
//!
//! Every heap node starts with a [`Header`]: the state word (see
//! [`state_word`](crate::tree::state_word)) and a strong pointer to the
//! parent node. A child holds one reference on its parent, so a context
//! keeps its ancestors (and their values) alive; a parent holds no reference
//! on its children, which sit in its intrusive child list only while they
//! live (no cycles, no leaks).
//!
//! The two roots made by [`Context::background`](crate::Context::background)
//! and [`Context::todo`](crate::Context::todo) are sentinel pointers that are
//! never dereferenced, so roots cost nothing and need no statics.

use core::any::TypeId;
use core::ptr;

#[cfg(feature = "alloc")]
use alloc::boxed::Box;

use crate::Cause;
#[cfg(feature = "alloc")]
use crate::raw::arc::Arc;
use crate::raw::list::{Head, Linked, Links};
use crate::raw::sync::{AtomicPtr, Ordering};
use crate::tree::state_word::{self, CANCELLED, CAUSE_CUSTOM, END_BITS, Word};
use crate::tree::waiter_list::WaitLink;
#[cfg(feature = "alloc")]
use crate::types::cause::CustomCause;
use crate::types::cause::Repr;

/// A pointer to a node, or one of the two root sentinels.
pub(crate) type NodePtr = *const Header;

/// `Context::background()`: never dereferenced.
pub(crate) const BACKGROUND: NodePtr = ptr::without_provenance(1);
/// `Context::todo()`: never dereferenced.
pub(crate) const TODO: NodePtr = ptr::without_provenance(2);

/// `true` for a real heap node, `false` for a root sentinel.
#[inline(always)]
pub(crate) fn is_heap(node: NodePtr) -> bool {
    node.addr() > 2
}

/// The part every heap node starts with.
#[repr(C)]
pub(crate) struct Header {
    pub(crate) word: Word,
    /// Strong reference to the parent node (or a root sentinel). Immutable.
    pub(crate) parent: NodePtr,
}

/// A cancellation scope: `with_cancel` (and the first part of a deadline
/// node). 64 bytes on 64-bit targets with `std` (56 without).
#[repr(C)]
pub(crate) struct Scope {
    pub(crate) hdr: Header,
    /// Links in the parent scope's child list, guarded by that list's lock
    /// while `LINKED`; a cancel walk that popped the node uses them for its
    /// private work list (list invariant 3).
    pub(crate) siblings: Links<Scope>,
    /// The children; guarded by this node's lock.
    pub(crate) children: Head<Scope>,
    /// `Done` futures and `after_func` registrations; guarded by this node's
    /// lock.
    pub(crate) waiters: Head<WaitLink>,
    /// With `CAUSE_CUSTOM`: `Arc::into_raw` of the custom cause, written
    /// once, under the lock, before `CANCELLED` is published (state word,
    /// invariant 2). Without it: where the cancel that ended the scope was
    /// called (a `&'static Location`), or null; written under the lock
    /// before the ending is published, or right after a lock-free ending by
    /// the thread whose ending won (`Release`, read with `Acquire`); or
    /// an [`INHERIT`]-tagged ancestor scope in a child born under its ended
    /// parent. Read only after seeing `CANCELLED`.
    pub(crate) cause: AtomicPtr<()>,
    /// The shard array, installed the first time two threads derive from
    /// this scope at once (see [`shards`](crate::tree::shards)); null until
    /// then.
    #[cfg(cancel_tree_shards)]
    pub(crate) shards: crate::raw::sync::AtomicPtr<crate::tree::shards::Shards>,
}

// SAFETY: `links` projects from `p` itself, so the result keeps the
// provenance of the whole node.
unsafe impl Linked for Scope {
    #[inline(always)]
    unsafe fn links(p: *const Scope) -> *const Links<Scope> {
        // SAFETY: (caller) `p` is a live scope.
        unsafe { &raw const (*p).siblings }
    }
}

/// The fixed part of a `with_value` node; the value follows it.
#[repr(C)]
pub(crate) struct ValueHeader {
    pub(crate) hdr: Header,
    /// The nearest cancellation scope above (null if none can cancel).
    pub(crate) scope: *const Scope,
    pub(crate) type_id: TypeId,
    /// Frees the whole `ValueNode<T>`.
    pub(crate) free: unsafe fn(*const ValueHeader),
}

#[repr(C)]
pub(crate) struct ValueNode<T> {
    pub(crate) head: ValueHeader,
    pub(crate) value: T,
}

impl Scope {
    crate::raw::sync::const_unless_loom! {
        pub(crate) fn new(initial_word: usize, parent: NodePtr) -> Scope {
            Scope {
                hdr: Header {
                    word: Word::new(initial_word),
                    parent,
                },
                siblings: Links::new(),
                children: Head::new(),
                waiters: Head::new(),
                cause: AtomicPtr::new(ptr::null_mut()),
                #[cfg(cancel_tree_shards)]
                shards: crate::raw::sync::AtomicPtr::new(ptr::null_mut()),
            }
        }
    }

    /// Writes the cause cell for an ending with `cause`. The caller holds
    /// the lock and the node is not cancelled yet (or is not shared yet), so
    /// the `Release` RMW that publishes the ending publishes this too.
    pub(crate) fn write_cause(&self, cause: &Cause) {
        let raw: *const () = match &cause.0 {
            #[cfg(feature = "alloc")]
            Repr::Custom(arc) => Arc::into_raw(arc.clone()),
            Repr::Kind(_, Some(at)) => (*at as *const core::panic::Location<'static>).cast(),
            Repr::Kind(_, None) => return,
        };
        self.cause.store(raw.cast_mut(), Ordering::Relaxed);
    }

    /// After a lock-free ending with `cause` that this thread won: records
    /// where the cancel was called (kind causes only: a custom cause never
    /// ends a node without its lock). Nobody else writes the cell once the
    /// node has ended.
    #[inline]
    pub(crate) fn record_location(&self, cause: &Cause) {
        if let Repr::Kind(_, Some(at)) = &cause.0 {
            let raw = (*at as *const core::panic::Location<'static>).cast_mut();
            // Release: pairs with the Acquire in `read_cause`.
            self.cause.store(raw.cast(), Ordering::Release);
        }
    }

    /// The cause of a node whose word `word` has `CANCELLED` (loaded with
    /// `Acquire`, so the cause cell is visible: state word, invariant 2).
    pub(crate) fn read_cause(&self, word: usize) -> Cause {
        debug_assert!(word & CANCELLED != 0);
        // Without `alloc` no custom cause can exist, so the bit is never set.
        // Acquire: pairs with `record_location`'s Release (the other writers
        // are published by the ending's Release RMW, seen by `word`).
        let mut raw = self.cause.load(Ordering::Acquire);
        #[cfg(feature = "alloc")]
        if word & CAUSE_CUSTOM != 0 {
            // The cell was written before CANCELLED was published and is
            // never written again while the node lives.
            // SAFETY: `raw` came from `Arc::into_raw` and the node still owns
            // that reference, so taking another one is sound.
            let arc = unsafe { Arc::<CustomCause>::clone_raw(raw) };
            return Cause(Repr::Custom(arc));
        }
        if raw.addr() & INHERIT != 0 {
            // Born under an ended scope: its location is that scope's
            // (`inherit_end`). One step: that scope's cell is never tagged.
            let origin = raw.map_addr(|a| a & !INHERIT).cast::<Scope>();
            // SAFETY: `origin` is an ancestor scope, alive while `self` is
            // (a node holds its parent; a `LocalScope` borrows it).
            raw = unsafe { (*origin).cause.load(Ordering::Acquire) };
            debug_assert_eq!(raw.addr() & INHERIT, 0);
        }
        let kind = if word & state_word::CAUSE_DEADLINE != 0 {
            crate::Error::DeadlineExceeded
        } else {
            crate::Error::Canceled
        };
        // SAFETY: without CAUSE_CUSTOM the cell is null or a `&'static
        // Location` (`write_cause`, `record_location`).
        let at =
            (!raw.is_null()).then(|| unsafe { &*raw.cast::<core::panic::Location<'static>>() });
        Cause(Repr::Kind(kind, at))
    }

    /// Copies the ending of `from` (cancelled, word `from_word`) into `self`,
    /// which is not yet shared: a child born under a cancelled parent.
    ///
    /// `from` is an ancestor scope of `self` (its parent's scope). A kind
    /// cause with no location yet may be a lock-free ending whose winner
    /// writes the location right after its compare-and-swap
    /// (`record_location`): the child then keeps a pointer to the scope
    /// that ended, tagged [`INHERIT`], and reads the location there when
    /// asked, rather than keep none for good. The scope that ended is
    /// `from`, or the one `from` itself was born under: one step, however
    /// long a chain of born-cancelled scopes.
    pub(crate) fn inherit_end(&self, from: &Scope, from_word: usize) {
        let cause = from.read_cause(from_word);
        if matches!(cause.0, Repr::Kind(_, None)) {
            let raw = from.cause.load(Ordering::Acquire);
            let origin = if raw.addr() & INHERIT != 0 {
                raw
            } else {
                (from as *const Scope)
                    .cast::<()>()
                    .cast_mut()
                    .map_addr(|a| a | INHERIT)
            };
            self.cause.store(origin, Ordering::Relaxed);
        } else {
            self.write_cause(&cause);
        }
        self.hdr.word.set_unshared(from_word & END_BITS);
    }

    /// Gives up the node's count on its custom cause.
    ///
    /// # Safety
    /// No reference to the node remains and nothing can reach it any more
    /// (it is off every list and queue), so its cause cell is final, and
    /// `word` is a load of its word made after that (its `CAUSE_CUSTOM` is
    /// final too). Called once per node.
    #[inline(always)]
    pub(crate) unsafe fn drop_cause(&self, word: usize) {
        #[cfg(not(feature = "alloc"))]
        let _ = word;
        #[cfg(feature = "alloc")]
        if word & CAUSE_CUSTOM != 0 {
            // No other reference to the node remains (caller).
            let raw = self.cause.load(Ordering::Acquire);
            // SAFETY: `raw` came from `Arc::into_raw` in `write_cause` and
            // this node owns that count.
            unsafe { drop(Arc::<CustomCause>::from_raw(raw)) };
        }
    }
}

/// The tag of a cause cell that holds, beside a kind cause, a pointer to
/// the ancestor scope whose location is this node's (see
/// [`Scope::inherit_end`]): the low bit, which a `Scope` or a `Location`
/// (both aligned to more than 1) never has.
const INHERIT: usize = 1;

/// The nearest cancellation scope of `node` itself (null if it cannot be
/// cancelled).
///
/// # Safety
/// `node` is a sentinel or a live node.
pub(crate) unsafe fn scope_of(node: NodePtr) -> *const Scope {
    if !is_heap(node) {
        return ptr::null();
    }
    // SAFETY: live node (caller); the kind bits are immutable.
    let word = unsafe { (*node).word.load() };
    match state_word::kind(word) {
        state_word::KIND_CANCEL | state_word::KIND_DEADLINE | state_word::KIND_MERGE => {
            node.cast::<Scope>()
        }
        // SAFETY: the kind says this is a value node.
        state_word::KIND_VALUE => unsafe { (*node.cast::<ValueHeader>()).scope },
        _ => ptr::null(),
    }
}

/// Allocates a value node holding `value`, child of `parent` (whose
/// reference the caller has taken for it).
#[cfg(feature = "alloc")]
pub(crate) fn new_value_node<T: Send + Sync + 'static>(
    parent: NodePtr,
    scope: *const Scope,
    value: T,
) -> NodePtr {
    unsafe fn free_value<T>(vh: *const ValueHeader) {
        // SAFETY: `vh` is the header of a `ValueNode<T>` made by `Box::new`
        // below (repr(C), header first), and no references remain.
        #[cfg(not(cancel_tree_loom))]
        unsafe {
            drop(Box::from_raw(vh.cast::<ValueNode<T>>().cast_mut()))
        }
        // Under loom the value is dropped and the block kept with its word
        // poisoned, so a late access is caught (see `state_word::checked`).
        // SAFETY: as above; nobody uses the node any more.
        #[cfg(cancel_tree_loom)]
        unsafe {
            ptr::drop_in_place(&raw mut (*vh.cast::<ValueNode<T>>().cast_mut()).value);
            (*vh).hdr.word.poison();
        }
    }
    let node = Box::new(ValueNode {
        head: ValueHeader {
            hdr: Header {
                word: Word::new(state_word::KIND_VALUE | state_word::REF_ONE),
                parent,
            },
            scope,
            type_id: TypeId::of::<T>(),
            free: free_value::<T>,
        },
        value,
    });
    Box::into_raw(node).cast_const().cast()
}

/// Allocates a `without_cancel` node: a bare header under `parent` (whose
/// reference the caller has taken for it).
#[cfg(feature = "alloc")]
pub(crate) fn new_without_cancel_node(parent: NodePtr) -> NodePtr {
    let header = Box::new(Header {
        word: Word::new(state_word::KIND_WITHOUT | state_word::REF_ONE),
        parent,
    });
    Box::into_raw(header).cast_const()
}

/// Looks `T` up from `node` towards the root, iteratively. Past a merged
/// scope the search goes depth first: its first parent's ancestors, then
/// each other parent's, in order (a stack of the parents still to search is
/// allocated only when a merged scope is met). Each merged scope is searched
/// from once, so a lookup is linear in the nodes above `node`, however many
/// paths lead to them.
///
/// # Safety
/// `node` is a sentinel or alive, and stays alive for `'a`.
#[cfg_attr(not(feature = "alloc"), allow(clippy::never_loop))]
pub(crate) unsafe fn lookup_value<'a, T: 'static>(mut node: NodePtr) -> Option<&'a T> {
    let want = TypeId::of::<T>();
    #[cfg(feature = "alloc")]
    let mut later: alloc::vec::Vec<NodePtr> = alloc::vec::Vec::new();
    // Merged scopes already searched from: the graph above a merged scope
    // is a DAG whose paths can share ancestors (a diamond per level makes
    // 2^levels paths). Meeting one again, every ancestor of it has been
    // searched already (depth first, and no node is its own ancestor), so
    // that path stops there. Allocates only when a merged scope is met.
    #[cfg(feature = "alloc")]
    let mut searched: alloc::collections::BTreeSet<usize> = alloc::collections::BTreeSet::new();
    loop {
        while is_heap(node) {
            // SAFETY: every ancestor of a live node is alive (children hold
            // their parents, merged scopes all of theirs), and the kind bits
            // and parent pointers are immutable.
            unsafe {
                match state_word::kind((*node).word.load()) {
                    state_word::KIND_VALUE => {
                        let vh = node.cast::<ValueHeader>();
                        if (*vh).type_id == want {
                            return Some(&(*vh.cast::<ValueNode<T>>()).value);
                        }
                    }
                    #[cfg(feature = "alloc")]
                    state_word::KIND_MERGE => {
                        if !searched.insert(node.addr()) {
                            break; // searched from already (see above)
                        }
                        later.extend(crate::tree::merge::other_parents(node.cast()).rev());
                    }
                    _ => {}
                }
                node = (*node).parent;
            }
        }
        #[cfg(feature = "alloc")]
        if let Some(next) = later.pop() {
            node = next;
            continue;
        }
        return None;
    }
}

/// The name of a node's kind, for `Debug`.
///
/// # Safety
/// `node` is a sentinel or alive.
pub(crate) unsafe fn kind_name(node: NodePtr) -> &'static str {
    if node == BACKGROUND {
        return "background";
    }
    if node == TODO {
        return "todo";
    }
    // SAFETY: a live node (caller); kind bits are immutable.
    match state_word::kind(unsafe { (*node).word.load() }) {
        state_word::KIND_CANCEL => "with_cancel",
        state_word::KIND_DEADLINE => "with_deadline",
        state_word::KIND_VALUE => "with_value",
        state_word::KIND_WITHOUT => "without_cancel",
        state_word::KIND_MERGE => "merge",
        _ => "background_with_clock",
    }
}
