//! Node layouts, the child list, reference counting and the (iterative) free
//! path.
//!
//! Every heap node starts with a [`Header`]: the state word (see
//! [`state`](crate::state)) and a strong pointer to the parent node. A child
//! holds one reference on its parent, so a context keeps its ancestors (and
//! their values) alive; a parent holds no reference on its children, which sit
//! in its intrusive child list only while they live (no cycles, no leaks).
//!
//! The two root kinds made by [`Context::background`](crate::Context::background)
//! and [`Context::todo`](crate::Context::todo) are sentinel pointers that are
//! never dereferenced, so roots cost nothing and need no statics.

use core::any::TypeId;
use core::ptr;

#[cfg(feature = "alloc")]
use alloc::boxed::Box;

#[cfg(feature = "alloc")]
use crate::arc::Arc;
#[cfg(feature = "alloc")]
use crate::cause::CustomCause;
use crate::cause::{Cause, Repr};
use crate::state::{self, CANCELLED, CAUSE_CUSTOM, END_BITS, LINKED, Released, Word};
use crate::sync::UnsafeCell;
use crate::waiters::WaitLink;

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
    /// Sibling links in the parent scope's child list, guarded by the
    /// parent scope's lock while `LINKED`; after a cancel walk unlinks the
    /// node they are the walker's private work-list links.
    pub(crate) prev: UnsafeCell<*const Scope>,
    pub(crate) next: UnsafeCell<*const Scope>,
    /// First child; guarded by this node's lock.
    pub(crate) children: UnsafeCell<*const Scope>,
    /// First waiter (`Done` futures and `after_func` registrations); guarded
    /// by this node's lock.
    pub(crate) waiters: UnsafeCell<*const WaitLink>,
    /// `Arc::into_raw` of the custom cause when `CAUSE_CUSTOM` is set.
    /// Written once, under the lock, before `CANCELLED` is published; read
    /// only after seeing `CANCELLED` with `Acquire`.
    pub(crate) cause: UnsafeCell<*const ()>,
    /// The shard array, installed the first time two threads derive from
    /// this scope at once (see [`shards`](crate::shards)); null until then.
    #[cfg(cancel_tree_shards)]
    pub(crate) shards: crate::sync::AtomicPtr<crate::shards::Shards>,
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
    /// `new` for statics (not under loom, whose cells are not const).
    #[cfg(not(cancel_tree_loom))]
    pub(crate) const fn new_const(initial_word: usize, parent: NodePtr) -> Scope {
        Scope {
            hdr: Header {
                word: Word::new_const(initial_word),
                parent,
            },
            prev: UnsafeCell::new(ptr::null()),
            next: UnsafeCell::new(ptr::null()),
            children: UnsafeCell::new(ptr::null()),
            waiters: UnsafeCell::new(ptr::null()),
            cause: UnsafeCell::new(ptr::null()),
            #[cfg(cancel_tree_shards)]
            shards: crate::sync::AtomicPtr::new(ptr::null_mut()),
        }
    }

    pub(crate) fn new(initial_word: usize, parent: NodePtr) -> Scope {
        #[cfg(not(cancel_tree_loom))]
        return Scope::new_const(initial_word, parent);
        #[cfg(cancel_tree_loom)]
        Scope {
            hdr: Header {
                word: Word::new(initial_word),
                parent,
            },
            prev: UnsafeCell::new(ptr::null()),
            next: UnsafeCell::new(ptr::null()),
            children: UnsafeCell::new(ptr::null()),
            waiters: UnsafeCell::new(ptr::null()),
            cause: UnsafeCell::new(ptr::null()),
            #[cfg(cancel_tree_shards)]
            shards: crate::sync::AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Writes the cause cell for an ending with `cause`. Caller holds the lock
    /// and the node is not cancelled yet (or is not shared yet).
    pub(crate) fn write_cause(&self, cause: &Cause) {
        #[cfg(feature = "alloc")]
        if let Repr::Custom(arc) = &cause.0 {
            let raw = Arc::into_raw(arc.clone());
            // SAFETY: the caller holds the lock and the node is not yet
            // cancelled, so nobody reads the cell concurrently.
            self.cause.with_mut(|c| unsafe { *c = raw });
        }
        #[cfg(not(feature = "alloc"))]
        let _ = cause;
    }

    /// The cause of a node whose word `word` has `CANCELLED` (loaded with
    /// `Acquire`, so the cause cell is visible).
    pub(crate) fn read_cause(&self, word: usize) -> Cause {
        debug_assert!(word & CANCELLED != 0);
        // Without `alloc` no custom cause can exist, so the bit is never set.
        #[cfg(feature = "alloc")]
        if word & CAUSE_CUSTOM != 0 {
            // SAFETY: the cell was written before CANCELLED was published
            // and is never written again while the node lives.
            let raw = self.cause.with(|c| unsafe { *c });
            // SAFETY: `raw` came from `Arc::into_raw` and the node still owns
            // that reference, so taking another one is sound.
            return Cause(Repr::Custom(unsafe { Arc::<CustomCause>::clone_raw(raw) }));
        }
        let kind = if word & state::CAUSE_DEADLINE != 0 {
            crate::Error::DeadlineExceeded
        } else {
            crate::Error::Canceled
        };
        Cause(Repr::Kind(kind))
    }

    /// Copies the ending of `from` (cancelled, word `from_word`) into `self`,
    /// which is not yet shared. Used for children born under a cancelled
    /// parent.
    pub(crate) fn inherit_end(&self, from: &Scope, from_word: usize) {
        let cause = from.read_cause(from_word);
        self.write_cause(&cause);
        self.hdr.word.set_unshared(from_word & END_BITS);
    }

    /// Links `child` at the front of this scope's own child list.
    ///
    /// # Safety
    /// The caller holds this scope's lock and `seen` is the word as seen
    /// under it; `child` is alive, in no list, and not yet visible to any
    /// other thread (its `LINKED` is set with a plain store).
    pub(crate) unsafe fn link_child(&self, child: *const Scope, seen: usize) {
        self.hdr.word.mark_locked(state::HAS_KIDS, seen);
        // SAFETY: (caller) the lock guards the list.
        unsafe { link(&self.children, child) }
    }
}

/// Links `child` at the front of the child list headed by `head`.
///
/// # Safety
/// The caller holds the lock guarding that list; `child` is alive, in no
/// list, and not yet visible to any other thread.
pub(crate) unsafe fn link(head: &UnsafeCell<*const Scope>, child: *const Scope) {
    // SAFETY: all four cells are guarded by the list's lock, which the caller
    // holds; `child` and the old head are alive (listed nodes unlink
    // themselves, under this lock, before they are freed).
    unsafe {
        let first = head.with(|h| *h);
        (*child).prev.with_mut(|p| *p = ptr::null());
        (*child).next.with_mut(|n| *n = first);
        if !first.is_null() {
            (*first).prev.with_mut(|p| *p = child);
        }
        head.with_mut(|h| *h = child);
        (*child).hdr.word.set_unshared(LINKED);
    }
}

/// Removes `child` from the list headed by `head` without touching its word
/// (the caller clears `LINKED`, or the child is being freed).
///
/// # Safety
/// The caller holds the lock guarding that list and `child` is in it.
pub(crate) unsafe fn unlink(head: &UnsafeCell<*const Scope>, child: *const Scope) {
    // SAFETY: as in `link`: the lock guards every cell touched, and listed
    // neighbours are alive.
    unsafe {
        let prev = (*child).prev.with(|p| *p);
        let next = (*child).next.with(|n| *n);
        if prev.is_null() {
            head.with_mut(|h| *h = next);
        } else {
            (*prev).next.with_mut(|n| *n = next);
        }
        if !next.is_null() {
            (*next).prev.with_mut(|p| *p = prev);
        }
    }
}

/// Pops the first child of the list headed by `head`, if any, leaving its
/// `LINKED` set: the caller clears it before releasing the list's lock (a
/// walker folds that into the step that flags the child).
///
/// # Safety
/// The caller holds the lock guarding that list.
pub(crate) unsafe fn pop(head: &UnsafeCell<*const Scope>) -> *const Scope {
    // SAFETY: guarded by the lock, held by the caller.
    let first = head.with(|h| unsafe { *h });
    if !first.is_null() {
        // SAFETY: `first` is in this list; lock held.
        unsafe { unlink(head, first) };
    }
    first
}

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
    match state::kind(word) {
        state::KIND_CANCEL | state::KIND_DEADLINE => node.cast::<Scope>(),
        // SAFETY: the kind says this is a value node.
        state::KIND_VALUE => unsafe { (*node.cast::<ValueHeader>()).scope },
        _ => ptr::null(),
    }
}

/// Adds a strong reference to `node` (no-op for sentinels).
///
/// # Safety
/// `node` is a sentinel or a node the caller holds a reference on.
#[inline]
pub(crate) unsafe fn acquire(node: NodePtr) {
    if is_heap(node) {
        // SAFETY: caller holds a reference, so the node is alive.
        unsafe { (*node).word.acquire_ref() }
    }
}

/// Drops a strong reference on `node`, freeing it and, iteratively, every
/// ancestor whose last reference that was.
///
/// # Safety
/// The caller owns one reference on `node`, which it gives up.
pub(crate) unsafe fn release(node: NodePtr) {
    if !is_heap(node) {
        return;
    }
    // SAFETY: (caller) our reference keeps the node alive until this call.
    let (released, seen) = unsafe { (*node).word.release_ref_seen() };
    let next = match released {
        Released::Kept => return,
        // SAFETY: that was the last reference; `seen` is its word.
        #[cfg(feature = "alloc")]
        Released::Last => unsafe { free_seen(node, seen) },
        #[cfg(not(feature = "alloc"))]
        Released::Last => Parent::Dead(node),
        #[cfg(cancel_tree_shards)]
        Released::Collapse => Parent::Collapse(node),
    };
    #[cfg(not(feature = "alloc"))]
    let _ = seen;
    // SAFETY: `next` is what freeing (or releasing) left to settle.
    unsafe { finish(next) }
}

/// What freeing a node did with its reference on its parent.
pub(crate) enum Parent {
    /// Still held: give it up.
    Held(NodePtr),
    /// Given up, and it was the last one: the parent must be freed.
    Dead(NodePtr),
    /// Given up; others remain.
    Gone,
    /// Given up, leaving only the parent's shard array's reference: the
    /// caller owns the collapse of that array (see
    /// [`Released::Collapse`](crate::state::Released::Collapse) and
    /// [`shards`](crate::shards)), which keeps the parent alive meanwhile.
    #[cfg(cancel_tree_shards)]
    Collapse(NodePtr),
}

impl Parent {
    /// What is left to do after dropping a reference on `node`.
    fn after_release(node: NodePtr, r: Released) -> Parent {
        match r {
            Released::Kept => Parent::Gone,
            Released::Last => Parent::Dead(node),
            #[cfg(cancel_tree_shards)]
            Released::Collapse => Parent::Collapse(node),
        }
    }
}

/// Settles a parent reference, freeing every node whose last reference goes,
/// iteratively (a 10M-deep chain frees on a small stack).
///
/// # Safety
/// `Held`: the caller owns that reference. `Dead`: no references remain.
#[cfg_attr(not(feature = "alloc"), allow(unused_mut, clippy::never_loop))]
pub(crate) unsafe fn finish(mut next: Parent) {
    loop {
        let node = match next {
            Parent::Gone => return,
            Parent::Held(node) => {
                if !is_heap(node) {
                    return;
                }
                // SAFETY: (caller) a reference keeps the node alive until this
                // call.
                next = Parent::after_release(node, unsafe { (*node).word.release_ref() });
                continue;
            }
            #[cfg(cancel_tree_shards)]
            Parent::Collapse(node) => {
                // SAFETY: the release that returned `Collapse` made us the
                // collapse owner; the array's reference keeps the node alive
                // and nobody else can drop it.
                next = unsafe { crate::shards::collapse(node.cast()) };
                continue;
            }
            Parent::Dead(node) => node,
        };
        #[cfg(feature = "alloc")]
        {
            // Only a walker holding the lock of the list the node is in can
            // still reach it, and `free` takes that lock.
            // SAFETY: we hold the last reference (see above).
            next = unsafe { free(node) };
        }
        // Without `alloc` every node is static or local (IMMORTAL), so a
        // last reference is never seen here.
        #[cfg(not(feature = "alloc"))]
        {
            let _ = node;
            debug_assert!(false, "a non-heap node reached a zero count");
            return;
        }
    }
}

/// Settles the parent reference if dropping a freed node's contents (a
/// value, a cause: user code) panics.
pub(crate) struct SettleOnUnwind(pub(crate) Parent);

impl SettleOnUnwind {
    /// Defuses the guard, returning what it held.
    pub(crate) fn defuse(self) -> Parent {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the value is moved out once.
        unsafe { ptr::read(&this.0) }
    }
}

impl Drop for SettleOnUnwind {
    fn drop(&mut self) {
        let next = core::mem::replace(&mut self.0, Parent::Gone);
        // SAFETY: only reached while unwinding out of `free`, when the freed
        // node's parent reference still has to be settled.
        unsafe { finish(next) }
    }
}

/// Frees one node whose reference count reached zero, and says what became
/// of its reference on its parent.
///
/// # Safety
/// No references remain on `node`.
#[cfg(feature = "alloc")]
unsafe fn free(node: NodePtr) -> Parent {
    // SAFETY: (caller); the node is alive until freed.
    unsafe { free_seen(node, (*node).word.load()) }
}

/// [`free`], given `word`, any value the node's word has had since it was
/// shared (only the kind and shard bits, fixed by then, are used). The last release passes the value
/// its `fetch_sub` returned, which saves loading the word right after that
/// locked step.
///
/// # Safety
/// As for [`free`].
#[cfg(feature = "alloc")]
unsafe fn free_seen(node: NodePtr, word: usize) -> Parent {
    match state::kind(word) {
        state::KIND_CANCEL => {
            let scope = node.cast::<Scope>();
            // SAFETY: our node is a scope that no one else references.
            unsafe {
                let (parent, now) = detach_seen(scope, true, word);
                let guard = SettleOnUnwind(parent);
                // `now` was loaded under the lock of the list the scope was
                // in, and no reference remains: nothing can set the bit
                // after it.
                drop_cause_seen(&*scope, now);
                #[cfg(cancel_tree_shards)]
                crate::shards::free(&*scope);
                crate::node_cache::free(scope);
                guard.defuse()
            }
        }
        // SAFETY: the kind says this is a deadline node.
        state::KIND_DEADLINE => unsafe { crate::deadline::free(node.cast()) },
        state::KIND_VALUE => {
            let vh = node.cast::<ValueHeader>();
            // SAFETY: the kind says this is a value node made by
            // `new_value_node`, whose `free` matches its type; the parent
            // pointer is immutable.
            unsafe {
                let guard = SettleOnUnwind(Parent::Held((*node).parent));
                ((*vh).free)(vh);
                guard.defuse()
            }
        }
        state::KIND_WITHOUT => {
            // SAFETY: made by `Box::new(Header)` in `without_cancel`.
            unsafe {
                let parent = (*node).parent;
                #[cfg(not(cancel_tree_loom))]
                drop(Box::from_raw(node.cast_mut()));
                // Loom: kept, poisoned (see `state::checked`).
                #[cfg(cancel_tree_loom)]
                (*node).word.poison();
                Parent::Held(parent)
            }
        }
        state::KIND_CLOCK_ROOT => {
            // SAFETY: the kind says this is a clock root (no parent).
            unsafe { crate::deadline::free_clock_root(node) };
            Parent::Gone
        }
        _ => unreachable!("corrupt node kind"),
    }
}

/// Removes a dying scope from its parent scope's child list. With
/// `give_up_ref`, the scope's reference on its parent node goes too, in the
/// same atomic step as the unlock when that node is the scope it was listed
/// in; the result says what became of it (`Held` without `give_up_ref`).
///
/// # Safety
/// `scope` has no references left (or is a `LocalScope` its owner is
/// dropping, which holds no reference on its parent: `give_up_ref` false).
pub(crate) unsafe fn detach_from_parent(scope: *const Scope, give_up_ref: bool) -> Parent {
    // SAFETY: (caller); the scope is alive.
    unsafe { detach_seen(scope, give_up_ref, (*scope).hdr.word.load()).0 }
}

/// [`detach_from_parent`] given `word`, any value of the scope's word
/// since it was shared (only its shard bits, fixed by then, are used). Also
/// returns the word as loaded under the lock of the list it was in, after
/// any walker that popped it let go. For a scope with no references left
/// (the free path) no walker can touch it after that, so that value's
/// `CAUSE_CUSTOM` is final; a `LocalScope` owner still holds a reference
/// and must load again after `release_owner_and_wait`.
///
/// # Safety
/// As for [`detach_from_parent`].
#[inline(always)]
unsafe fn detach_seen(scope: *const Scope, give_up_ref: bool, word: usize) -> (Parent, usize) {
    // SAFETY: the scope is alive; its parent pointer is immutable and the
    // parent is alive (we still hold our reference on it).
    let parent = unsafe { (*scope).hdr.parent };
    // SAFETY: as above.
    let parent_scope = unsafe { scope_of(parent) };
    if parent_scope.is_null() {
        // Never linked (the parent cannot be cancelled): no walker can
        // reach the scope.
        // SAFETY: the scope is alive.
        return (Parent::Held(parent), unsafe { (*scope).hdr.word.load() });
    }
    #[cfg(cancel_tree_shards)]
    if let Some(k) = crate::shards::shard_of(word) {
        // Only heap children whose parent node is the scope are sharded, and
        // each holds a reference counted in its shard.
        debug_assert!(give_up_ref && parent == parent_scope.cast());
        // SAFETY: the parent scope is alive (our counted reference), and its
        // array was installed before we were linked in it.
        let shard = unsafe { &(*crate::shards::of(&*parent_scope)).shard[k] };
        let mut guard = shard.lock();
        // SAFETY: the scope is alive.
        let now = unsafe { (*scope).hdr.word.load() };
        if now & LINKED != 0 {
            // SAFETY: under the shard's lock, LINKED says we are in its list.
            unsafe { unlink(&shard.head, scope) };
        }
        if guard.collapsed() {
            // Our count moved to the parent's word.
            drop(guard);
            // SAFETY: our reference keeps the parent alive until this call.
            let released = unsafe { (*parent).word.release_ref() };
            return (Parent::after_release(parent, released), now);
        }
        guard.uncount_child();
        drop(guard);
        return (Parent::Gone, now);
    }
    #[cfg(not(cancel_tree_shards))]
    let _ = word;
    // Always take the lock, even if LINKED looks clear: a walker that popped
    // us may still be inspecting us under this lock, and taking it waits for
    // that to finish.
    // SAFETY: parent scope alive (see above).
    let guard = unsafe { (*parent_scope).hdr.word.lock() };
    // SAFETY: under the parent's lock, LINKED tells whether we are listed.
    let now = unsafe { (*scope).hdr.word.load() };
    if now & LINKED != 0 {
        // SAFETY: as above.
        unsafe { unlink(&(*parent_scope).children, scope) };
    }
    if give_up_ref && parent == parent_scope.cast() {
        (
            Parent::after_release(parent, guard.unlock_and_release()),
            now,
        )
    } else {
        drop(guard);
        (Parent::Held(parent), now)
    }
}

/// Gives up the node's count on its custom cause.
///
/// # Safety
/// No reference to the node remains and nothing can reach it any more (it
/// is off every list and queue), so its cause cell and `CAUSE_CUSTOM` are
/// final; called once per node.
pub(crate) unsafe fn drop_cause(scope: &Scope) {
    // SAFETY: (caller).
    unsafe { drop_cause_seen(scope, scope.hdr.word.load()) }
}

/// [`drop_cause`] given the node's word as loaded once nothing could reach
/// it any more (its `CAUSE_CUSTOM` is final).
///
/// # Safety
/// As for [`drop_cause`], and `word` is such a load.
#[inline(always)]
unsafe fn drop_cause_seen(scope: &Scope, word: usize) {
    #[cfg(not(feature = "alloc"))]
    let _ = (scope, word);
    #[cfg(feature = "alloc")]
    if word & CAUSE_CUSTOM != 0 {
        let raw = scope.cause.with(|c| {
            // SAFETY: no other reference to the node remains.
            unsafe { *c }
        });
        // SAFETY: `raw` came from `Arc::into_raw` in `write_cause` and this
        // node owns that count.
        unsafe { drop(Arc::<CustomCause>::from_raw(raw)) };
    }
}

/// Allocates a value node holding `value`, child of `parent`.
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
        // poisoned, so a late access is caught (see `state::checked`).
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
                word: Word::new(state::KIND_VALUE | state::REF_ONE),
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

/// Looks `T` up from `node` towards the root, iteratively.
///
/// # Safety
/// `node` is a sentinel or alive, and stays alive for `'a`.
pub(crate) unsafe fn lookup_value<'a, T: 'static>(mut node: NodePtr) -> Option<&'a T> {
    let want = TypeId::of::<T>();
    while is_heap(node) {
        // SAFETY: every ancestor of a live node is alive (children hold their
        // parents), and the kind bits and parent pointer are immutable.
        unsafe {
            if state::kind((*node).word.load()) == state::KIND_VALUE {
                let vh = node.cast::<ValueHeader>();
                if (*vh).type_id == want {
                    return Some(&(*vh.cast::<ValueNode<T>>()).value);
                }
            }
            node = (*node).parent;
        }
    }
    None
}
