//! Scopes without a heap: [`StaticScope`] (a root in a `static`),
//! [`LocalScope`] (a child pinned in its owner's frame) and [`ScopeRef`] (a
//! borrowed handle to either).
//!
//! These give firmware with no global allocator cancellation scopes with
//! `is_cancelled`, `done()`, `cancel` from an interrupt handler and
//! deadlines. They use the same nodes, lists, cancel walk and timer queue as
//! [`Context`](crate::Context) trees; what differs is who owns the memory:
//!
//! * a `StaticScope` lives forever (its node is immortal);
//! * a `LocalScope` lives in a task's stack frame or future, pinned. Its
//!   borrow of the parent `ScopeRef` makes the compiler drop every child
//!   (and every `Done` borrowing it) before the parent. Its `Drop` leaves the
//!   parent's list and the clock's queue, then waits until no cancel walk or
//!   timer still holds it (on a single core that never waits: an interrupt
//!   runs to completion before the task resumes).
//!
//! Values and `after_func` need the heap and are only on `Context` trees.

use core::fmt;
use core::marker::{PhantomData, PhantomPinned};
use core::pin::Pin;
use core::time::Duration;

use crate::api::done::Done;
use crate::clock::contract::{Clock, no_clock};
use crate::tree::cancel::cancel;
use crate::tree::deadline::{self, DeadlineScope};
use crate::tree::node::{BACKGROUND, Scope, scope_of};
use crate::tree::state_word::{self, ATTACHED, CANCELLED, IMMORTAL, REF_ONE};
use crate::tree::{attach, release};
use crate::{Cause, Error, Instant};

/// A borrowed handle to a heap-free scope: what [`StaticScope::scope`] and
/// [`LocalScope::get`] give. `Copy`; everything on it is thread- and
/// interrupt-safe.
#[derive(Clone, Copy)]
pub struct ScopeRef<'a> {
    /// Derived from the whole node (a `LocalScope`'s `DeadlineScope`), not
    /// just its `Scope` field: walkers cast it back to the whole node.
    ptr: *const Scope,
    life: PhantomData<&'a Scope>,
}

// SAFETY: a scope is shared only through its atomic word and its lock.
unsafe impl Send for ScopeRef<'_> {}
// SAFETY: as above.
unsafe impl Sync for ScopeRef<'_> {}

impl<'a> ScopeRef<'a> {
    fn new(ptr: *const Scope) -> ScopeRef<'a> {
        ScopeRef {
            ptr,
            life: PhantomData,
        }
    }

    fn node(&self) -> &'a Scope {
        // SAFETY: the node outlives `'a` (constructors tie it).
        unsafe { &*self.ptr }
    }

    /// `true` once the scope is cancelled (one atomic load).
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.node().hdr.word.load() & CANCELLED != 0
    }

    /// `None` while live, then why it ended (one atomic load).
    #[inline]
    pub fn err(&self) -> Option<Error> {
        state_word::err_of(self.node().hdr.word.load())
    }

    /// Why it ended (see [`Context::cause`](crate::Context::cause)).
    pub fn cause(&self) -> Option<Cause> {
        let w = self.node().hdr.word.load();
        if w & CANCELLED == 0 {
            None
        } else {
            Some(self.node().read_cause(w))
        }
    }

    /// The nearest deadline of this scope or its ancestors.
    pub fn deadline(&self) -> Option<Instant> {
        // SAFETY: the scope and its ancestors outlive `'a`.
        unsafe { deadline::deadline_of(self.ptr) }
    }

    /// A future that resolves once the scope is cancelled; no allocation.
    pub fn done(&self) -> Done<'a> {
        // SAFETY: the scope lives for `'a`.
        unsafe { Done::new(self.ptr) }
    }

    /// Cancels the scope and everything below it with
    /// [`Error::Canceled`]. Safe from an interrupt handler.
    /// Records where it was called: see [`Cause::location`].
    #[track_caller]
    pub fn cancel(&self) {
        self.cancel_with(Error::Canceled);
    }

    /// Cancels with `err()` = `Canceled` and `cause()` = `cause`. Records
    /// where it was called: see [`Cause::location`].
    #[track_caller]
    pub fn cancel_with(&self, cause: impl Into<Cause>) {
        let at = core::panic::Location::caller();
        let cause = cause.into().at(at);
        // SAFETY: the borrow keeps the node alive for the whole call.
        if unsafe { cancel(self.ptr, Error::Canceled, &cause) } {
            cause.ended_at(at);
        }
    }
}

impl fmt::Debug for ScopeRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeRef")
            .field("err", &self.err())
            .finish()
    }
}

/// A cancellation scope in a `static`: a root that can be cancelled (from
/// anywhere, including interrupt handlers) and that [`LocalScope`]s hang
/// under. Needs no heap.
///
/// ```
/// use cancel_tree::StaticScope;
/// static SHUTDOWN: StaticScope = StaticScope::new();
/// let s = SHUTDOWN.scope();
/// assert!(!s.is_cancelled());
/// # fn isr() { SHUTDOWN.scope().cancel() }
/// isr(); // e.g. a button interrupt
/// assert!(s.is_cancelled());
/// ```
pub struct StaticScope {
    scope: Scope,
}

// SAFETY: shared only through atomics and the node lock, like every node.
unsafe impl Sync for StaticScope {}
// SAFETY: as above.
unsafe impl Send for StaticScope {}

impl StaticScope {
    crate::raw::sync::const_unless_loom! {
        /// A live scope (for a `static`).
        pub fn new() -> StaticScope {
            StaticScope {
                scope: Scope::new(
                    state_word::KIND_CANCEL | IMMORTAL | ATTACHED | REF_ONE,
                    BACKGROUND,
                ),
            }
        }
    }

    /// The handle to this scope.
    pub fn scope(&'static self) -> ScopeRef<'static> {
        ScopeRef::new(&self.scope)
    }
}

impl Default for StaticScope {
    fn default() -> StaticScope {
        StaticScope::new()
    }
}

impl fmt::Debug for StaticScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticScope")
            .field("err", &state_word::err_of(self.scope.hdr.word.load()))
            .finish()
    }
}

/// A child scope that lives in its owner's frame: pin it, then
/// [`get`](LocalScope::get) its [`ScopeRef`]. Ends when its parent does,
/// when cancelled through its `ScopeRef`, or at its deadline. Needs no heap.
///
/// ```
/// use cancel_tree::{LocalScope, StaticScope};
/// use core::pin::pin;
///
/// static ROOT: StaticScope = StaticScope::new();
///
/// let request = pin!(LocalScope::new(ROOT.scope()));
/// let request = request.into_ref().get();
/// let step = pin!(LocalScope::new(request));
/// let step = step.into_ref().get();
/// ROOT.scope().cancel();
/// assert!(request.is_cancelled() && step.is_cancelled());
/// ```
///
/// Dropping a `LocalScope` waits until any cancel walk or timer `fire` that
/// already reached it is done with it (on a single core, an interrupt that
/// reached it has finished before the owner runs again, so this never
/// waits). So do not drop one from inside a waker's `wake` that is called
/// by a cancel of that scope or of an ancestor: a waker that polls its task
/// on the spot, and a task that then drops the scope, would wait on the
/// walk it is running in. Executors that queue the woken task (all the
/// common ones, embassy's included) never do this.
pub struct LocalScope<'p> {
    node: DeadlineScope,
    /// A deadline to arm on attach (`None`: plain scope).
    arm: Option<Instant>,
    parent: PhantomData<ScopeRef<'p>>,
    _pinned: PhantomPinned,
}

// SAFETY: shared only through atomics and the node lock.
unsafe impl Sync for LocalScope<'_> {}
// SAFETY: as above; the clock is `Send + Sync`.
unsafe impl Send for LocalScope<'_> {}

impl<'p> LocalScope<'p> {
    /// A plain child of `parent` (not yet attached; see
    /// [`get`](LocalScope::get)).
    pub fn new(parent: ScopeRef<'p>) -> LocalScope<'p> {
        LocalScope::build(
            parent,
            state_word::KIND_CANCEL,
            None,
            None,
            Cause::from(Error::DeadlineExceeded),
        )
    }

    /// A child that ends with [`Error::DeadlineExceeded`] when `clock`
    /// reaches `at` (Go's rules: a parent deadline not later than `at`
    /// wins; an `at` not in the future ends it as soon as it is attached).
    pub fn with_deadline(
        parent: ScopeRef<'p>,
        clock: &'static dyn Clock,
        at: Instant,
    ) -> LocalScope<'p> {
        if parent.deadline().is_some_and(|d| d <= at) {
            return LocalScope::new(parent);
        }
        let cause = Cause::from(Error::DeadlineExceeded);
        LocalScope::build(
            parent,
            state_word::KIND_DEADLINE,
            Some(clock),
            Some(at),
            cause,
        )
    }

    /// [`with_deadline`](LocalScope::with_deadline) at `clock.now() + after`
    /// (saturating).
    pub fn with_timeout(
        parent: ScopeRef<'p>,
        clock: &'static dyn Clock,
        after: Duration,
    ) -> LocalScope<'p> {
        LocalScope::with_deadline(parent, clock, clock.now().saturating_add(after))
    }

    fn build(
        parent: ScopeRef<'p>,
        kind: usize,
        clock: Option<&'static dyn Clock>,
        at: Option<Instant>,
        cause: Cause,
    ) -> LocalScope<'p> {
        let clock: *const dyn Clock = match clock {
            Some(c) => c,
            None => no_clock(),
        };
        LocalScope {
            node: DeadlineScope::new(
                kind | IMMORTAL | REF_ONE,
                parent.ptr.cast(),
                at.unwrap_or(Instant::MAX),
                clock,
                cause,
            ),
            arm: at,
            parent: PhantomData,
            _pinned: PhantomPinned,
        }
    }

    /// Attaches the scope under its parent (the first call; later calls just
    /// return the handle) and returns its handle. From here on the parent's
    /// cancellation reaches it, and its deadline is armed.
    pub fn get(self: Pin<&Self>) -> ScopeRef<'_> {
        let this: &LocalScope<'p> = self.get_ref();
        // The whole node's address (see `ScopeRef::ptr`).
        let me: *const Scope = (&this.node as *const DeadlineScope).cast();
        // SAFETY: the parent outlives `'p`, which outlives us; we are pinned.
        let attached = unsafe {
            let parent = &*scope_of(this.node.scope.hdr.parent);
            attach::attach_local(parent, me)
        };
        if attached && this.arm.is_some() && !this.node.clock.is_null() {
            // SAFETY: the clock is `'static`; pinned, the node stays put until
            // `Drop`, which takes it out of the queue first.
            unsafe {
                let clock = &*this.node.clock;
                deadline::arm(&this.node, clock, clock.now());
            }
        }
        ScopeRef::new(me)
    }
}

impl Drop for LocalScope<'_> {
    fn drop(&mut self) {
        let me: *const Scope = (&self.node as *const DeadlineScope).cast();
        if self.node.scope.hdr.word.load() & ATTACHED == 0 {
            return; // never shared
        }
        // SAFETY: our parent outlives us; after these two steps no list or
        // queue can lead a walker or the clock to us.
        unsafe {
            let _ = release::detach(me, false, self.node.scope.hdr.word.load());
            deadline::dequeue(me.cast());
        }
        // Give up the owner's reference and wait for walkers / `fire` calls
        // that already hold one (never waits on a single core).
        self.node.scope.hdr.word.release_owner_and_wait();
        // SAFETY: no reference is left and nothing can reach the node, so
        // this load's `CAUSE_CUSTOM` is final.
        unsafe { self.node.scope.drop_cause(self.node.scope.hdr.word.load()) };
    }
}

impl fmt::Debug for LocalScope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalScope")
            .field("err", &state_word::err_of(self.node.scope.hdr.word.load()))
            .field("deadline", &self.arm)
            .finish()
    }
}
