//! [`Context`]: a handle to one node of a cancellation tree.

use core::fmt;
use core::future::Future;
use core::ptr;
use core::time::Duration;

use crate::api::after_func::AfterFunc;
use crate::api::cancel_handle::CancelHandle;
use crate::api::done::{Done, DoneOwned};
use crate::api::run::Run;
use crate::clock::contract::Clock;
use crate::tree::node::{self, BACKGROUND, NodePtr, Scope, TODO};
use crate::tree::state_word::{self, CANCELLED};
use crate::tree::{attach, deadline, release};
use crate::{Cause, Error, Instant};

/// A handle to one node of a cancellation tree: Go's `context.Context`.
///
/// Cheap to clone (a reference count, never an allocation), `Send + Sync`,
/// `'static`. Derive children with [`with_cancel`](Context::with_cancel),
/// [`with_timeout`](Context::with_timeout), [`with_value`](Context::with_value)
/// and friends; ask with [`is_cancelled`](Context::is_cancelled) (one atomic
/// load), [`err`](Context::err), [`cause`](Context::cause); wait with
/// [`done`](Context::done) on any executor.
///
/// ```
/// use cancel_tree::{Context, Error};
///
/// let root = Context::background();
/// let (ctx, cancel) = root.with_cancel();
/// let (child, _child_cancel) = ctx.with_cancel();
/// assert!(!child.is_cancelled());
/// cancel.cancel();
/// assert_eq!(child.err(), Some(Error::Canceled));
/// assert!(!root.is_cancelled());
/// ```
pub struct Context {
    /// The node this handle holds a reference on (or a root sentinel).
    pub(crate) node: NodePtr,
    /// The nearest scope that can be cancelled, or null if none can. Kept
    /// alive through `node`'s parent chain.
    pub(crate) scope: *const Scope,
}

// SAFETY: nodes are shared through atomics and per-node locks; values stored
// in the tree are `Send + Sync`.
unsafe impl Send for Context {}
// SAFETY: as above: every `&self` method is thread-safe.
unsafe impl Sync for Context {}

impl Context {
    /// The root of a tree: never cancelled, no values, no deadline. Costs
    /// nothing (no allocation, no static).
    ///
    /// ```
    /// let root = cancel_tree::Context::background();
    /// assert_eq!(root.err(), None);
    /// assert_eq!(root.deadline(), None);
    /// ```
    pub const fn background() -> Context {
        Context {
            node: BACKGROUND,
            scope: ptr::null(),
        }
    }

    /// Like [`background`](Context::background), for code that has not been
    /// given a context yet; `Debug` prints it as `todo`.
    pub const fn todo() -> Context {
        Context {
            node: TODO,
            scope: ptr::null(),
        }
    }

    /// A child that is cancelled when the returned [`CancelHandle`] is used
    /// or dropped, or when `self` is.
    ///
    /// ```
    /// use cancel_tree::Context;
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// drop(cancel); // dropping the handle cancels, like Go's `defer cancel()`
    /// assert!(ctx.is_cancelled());
    /// ```
    #[inline]
    pub fn with_cancel(&self) -> (Context, CancelHandle) {
        // Inlined so that the caller builds the pair from one returned
        // pointer in registers (returned through memory the pair costs a
        // store-forwarding stall on the caller's first use).
        // SAFETY: we hold a reference on our node, whose scope is ours.
        let scope = unsafe { attach::new_cancel_scope(self.node, self.scope) };
        // SAFETY: a fresh scope carrying a context's and a handle's reference.
        unsafe { Context::pair(scope) }
    }

    /// The context and handle of a fresh scope.
    ///
    /// # Safety
    /// `scope` is alive and carries two references, which the pair takes.
    #[inline]
    unsafe fn pair(scope: *const Scope) -> (Context, CancelHandle) {
        (
            Context {
                node: scope.cast(),
                scope,
            },
            CancelHandle::new(scope),
        )
    }

    /// A child that carries `value`: [`value::<T>()`](Context::value) on it
    /// and its descendants returns it, unless a nearer ancestor carries
    /// another `T`. Makes no cancellation scope.
    ///
    /// Values are looked up by type. Use a newtype per key, as Go code uses an
    /// unexported key type:
    ///
    /// ```
    /// use cancel_tree::Context;
    /// struct RequestId(u64);
    /// let ctx = Context::background().with_value(RequestId(7));
    /// let (child, _cancel) = ctx.with_cancel();
    /// assert_eq!(child.value::<RequestId>().map(|r| r.0), Some(7));
    /// assert!(Context::background().value::<RequestId>().is_none());
    /// ```
    pub fn with_value<T: Send + Sync + 'static>(&self, value: T) -> Context {
        // SAFETY: we hold a reference on our own node.
        unsafe { release::acquire(self.node) };
        let node = node::new_value_node(self.node, self.scope, value);
        Context {
            node,
            scope: self.scope,
        }
    }

    /// When the context will end by itself: the nearest deadline of it or its
    /// ancestors (`None` if there is none, as for roots and
    /// `without_cancel`).
    pub fn deadline(&self) -> Option<Instant> {
        // SAFETY: our scope is null or alive while we are.
        unsafe { deadline::deadline_of(self.scope) }
    }

    /// How long until [`deadline`](Context::deadline) on this tree's clock:
    /// `None` without a deadline, `Duration::ZERO` once it has passed (never
    /// negative). One clock read; for a request's outgoing calls (a
    /// `grpc-timeout`, a socket timeout).
    ///
    /// ```
    /// use cancel_tree::{Context, ManualClock};
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let root = Context::background_with_clock(clock.clone());
    /// let (ctx, _c) = root.with_timeout(Duration::from_secs(2));
    /// clock.advance(Duration::from_millis(500));
    /// assert_eq!(ctx.remaining(), Some(Duration::from_millis(1500)));
    /// clock.advance(Duration::from_secs(5));
    /// assert_eq!(ctx.remaining(), Some(Duration::ZERO));
    /// assert_eq!(root.remaining(), None);
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        let deadline = self.deadline()?;
        Some(deadline - self.now())
    }

    /// A root whose tree uses `clock` for deadlines (a [`ManualClock`] in
    /// tests, a runtime's timer, a hardware timer). Never cancelled, like
    /// [`background`](Context::background).
    ///
    /// [`ManualClock`]: crate::ManualClock
    pub fn background_with_clock(clock: impl Clock) -> Context {
        Context {
            node: deadline::new_clock_root(clock),
            scope: ptr::null(),
        }
    }

    /// The current time on this tree's clock. Trees under
    /// [`background`](Context::background) use the target's default clock:
    /// `StdClock` with `std`, `JsClock` on wasm32-unknown-unknown with `js`;
    /// elsewhere they have no clock and this is [`Instant::ZERO`].
    pub fn now(&self) -> Instant {
        // SAFETY: our node is alive; the clock outlives the tree.
        unsafe { deadline::clock_of(self.node).map_or(Instant::ZERO, |c| (*c).now()) }
    }

    /// A child that ends with [`Error::DeadlineExceeded`] when the clock
    /// reaches `at` (Go's `WithDeadline`), or earlier by its handle or its
    /// parent.
    ///
    /// * If the parent's deadline is not later than `at`, the child is a
    ///   plain cancellable child: it reports the parent's deadline and ends
    ///   with the parent.
    /// * If `at` is not in the future, the child is born `DeadlineExceeded`.
    /// * Otherwise the clock's timer ends it at `at`, whether or not anyone
    ///   polls or checks it.
    ///
    /// Without `std` (and on wasm32-unknown-unknown without `js`), a tree
    /// under [`background`](Context::background) has no clock: its
    /// deadlines are reported but never fire. Use
    /// [`background_with_clock`](Context::background_with_clock).
    ///
    /// ```
    /// use cancel_tree::{Context, Error, Instant, ManualClock};
    /// let clock = ManualClock::new();
    /// let root = Context::background_with_clock(clock.clone());
    /// let (ctx, _cancel) = root.with_deadline(Instant::from_nanos(1_000));
    /// assert_eq!(ctx.deadline(), Some(Instant::from_nanos(1_000)));
    /// clock.set(Instant::from_nanos(1_000));
    /// assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    /// ```
    #[inline]
    pub fn with_deadline(&self, at: Instant) -> (Context, CancelHandle) {
        self.with_deadline_cause(at, Error::DeadlineExceeded)
    }

    /// [`with_deadline`](Context::with_deadline) at `now() + after`
    /// (saturating: `Duration::MAX` is a deadline at [`Instant::MAX`]).
    ///
    /// ```
    /// use cancel_tree::{Context, Error};
    /// use std::time::Duration;
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(10));
    /// assert_eq!(ctx.wait(), Error::DeadlineExceeded);
    /// ```
    #[inline]
    pub fn with_timeout(&self, after: Duration) -> (Context, CancelHandle) {
        self.with_timeout_cause(after, Error::DeadlineExceeded)
    }

    /// [`with_deadline`](Context::with_deadline) whose [`cause`](Context::cause)
    /// is `cause` when the deadline passes (Go's `WithDeadlineCause`). The
    /// handle still cancels with `Canceled`.
    pub fn with_deadline_cause(
        &self,
        at: Instant,
        cause: impl Into<Cause>,
    ) -> (Context, CancelHandle) {
        // SAFETY: we hold a reference on our node, whose scope is ours.
        let s = unsafe { deadline::with_deadline(self.node, self.scope, at, cause.into(), None) };
        // SAFETY: a fresh scope carrying a context's and a handle's reference.
        unsafe { Context::pair(s) }
    }

    /// [`with_timeout`](Context::with_timeout) with a cause (Go's
    /// `WithTimeoutCause`).
    ///
    /// ```
    /// use cancel_tree::{Cause, Context, Error, ManualClock};
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let root = Context::background_with_clock(clock.clone());
    /// let (ctx, _c) = root.with_timeout_cause(Duration::from_secs(1), Cause::msg("slow backend"));
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    /// assert_eq!(ctx.cause().unwrap().to_string(), "slow backend");
    /// ```
    pub fn with_timeout_cause(
        &self,
        after: Duration,
        cause: impl Into<Cause>,
    ) -> (Context, CancelHandle) {
        let now = self.now();
        let at = now.saturating_add(after);
        // SAFETY: we hold a reference on our node, whose scope is ours.
        let s =
            unsafe { deadline::with_deadline(self.node, self.scope, at, cause.into(), Some(now)) };
        // SAFETY: a fresh scope carrying a context's and a handle's reference.
        unsafe { Context::pair(s) }
    }

    /// The nearest ancestor's value of type `T` (including `self`'s).
    pub fn value<T: Send + Sync + 'static>(&self) -> Option<&T> {
        // SAFETY: `self` keeps its node and all ancestors alive for `'_`.
        unsafe { node::lookup_value::<T>(self.node) }
    }

    /// A child that keeps `self`'s values (and clock) but is never cancelled
    /// and has no deadline (Go's `WithoutCancel`).
    ///
    /// ```
    /// use cancel_tree::Context;
    /// let (ctx, cancel) = Context::background().with_value(5u8).with_cancel();
    /// let detached = ctx.without_cancel();
    /// cancel.cancel();
    /// assert!(!detached.is_cancelled());
    /// assert_eq!(detached.value::<u8>(), Some(&5));
    /// ```
    pub fn without_cancel(&self) -> Context {
        // SAFETY: we hold a reference on our own node.
        unsafe { release::acquire(self.node) };
        Context {
            node: node::new_without_cancel_node(self.node),
            scope: ptr::null(),
        }
    }

    /// A context with two parents, `self` and `other`: see
    /// [`merge_all`](Context::merge_all).
    ///
    /// ```
    /// use cancel_tree::{Context, Error};
    /// let (request, _r) = Context::background().with_cancel();
    /// let (shutdown, stop) = Context::background().with_cancel();
    /// let (ctx, _cancel) = request.merge(&shutdown);
    /// stop.cancel_with(cancel_tree::Cause::msg("server stopping"));
    /// assert_eq!(ctx.err(), Some(Error::Canceled));
    /// assert_eq!(ctx.cause().unwrap().to_string(), "server stopping");
    /// assert!(!request.is_cancelled());
    /// ```
    pub fn merge(&self, other: &Context) -> (Context, CancelHandle) {
        Context::merge_all(self, [other])
    }

    /// A context with several parents, `first` and then `others` (Go
    /// proposal 36503, .NET's linked token sources): cancelled when its
    /// handle is, or as soon as **any** parent is, with that parent's error
    /// and cause (the first ending wins, as everywhere).
    ///
    /// * [`deadline`](Context::deadline) is the earliest of the parents'.
    /// * [`value`](Context::value) searches `first` and its ancestors, then
    ///   each of `others` and its ancestors, in order (depth first through
    ///   merged ancestors).
    /// * The tree's clock ([`now`](Context::now), and the clock of deadlines
    ///   derived below) is `first`'s.
    /// * A parent already cancelled: the context is born cancelled with the
    ///   first such parent's error and cause, in argument order.
    /// * Memory: one allocation for the node and one for its links to the
    ///   other parents (a waiter entry each). It holds a reference on every
    ///   parent, and, when its contexts and handle are gone, leaves every
    ///   parent at once: a long-lived parent does not grow with merged
    ///   children that come and go.
    ///
    /// Cancelled through `first` it ends like any child: when that
    /// `cancel()` returns, it reports cancelled. The other parents reach it
    /// from the notify phase of their cancel walk (like an
    /// [`after_func`](Context::after_func)), so it reports cancelled when the
    /// cancel that ended the parent returns; a concurrent cancel of that
    /// parent that lost the race may return a moment earlier.
    ///
    /// ```
    /// use cancel_tree::{Context, Error, ManualClock};
    /// use std::time::Duration;
    /// struct User(&'static str);
    /// let clock = ManualClock::new();
    /// let root = Context::background_with_clock(clock.clone());
    /// let (a, _a) = root.with_value(User("ann")).with_timeout(Duration::from_secs(5));
    /// let (b, _b) = root.with_timeout(Duration::from_secs(1));
    /// let (c, _c) = Context::background().with_cancel();
    /// let (merged, _cancel) = Context::merge_all(&a, [&b, &c]);
    /// assert_eq!(merged.deadline(), b.deadline());
    /// assert_eq!(merged.value::<User>().map(|u| u.0), Some("ann"));
    /// clock.advance(Duration::from_secs(1)); // b's deadline
    /// assert_eq!(merged.err(), Some(Error::DeadlineExceeded));
    /// assert!(!a.is_cancelled());
    /// ```
    pub fn merge_all<'a>(
        first: &Context,
        others: impl IntoIterator<Item = &'a Context>,
    ) -> (Context, CancelHandle) {
        let others = others.into_iter().map(|c| (c.node, c.scope));
        // SAFETY: every context holds a reference on its node, whose scope
        // is its own, for the whole call.
        let s = unsafe { crate::tree::merge::new(first.node, first.scope, others) };
        // SAFETY: a fresh scope carrying a context's and a handle's reference.
        unsafe { Context::pair(s) }
    }

    /// Runs `f` once, after this context is cancelled (Go's `AfterFunc`).
    ///
    /// * If the context is already cancelled, `f` runs at once, on the
    ///   calling thread, before `after_func` returns.
    /// * Otherwise `f` runs on the thread that cancels the context (the one
    ///   calling [`CancelHandle::cancel`] or dropping the handle, or an
    ///   ancestor's), or on the clock's timer thread / interrupt when a
    ///   deadline ends it. It runs after the whole subtree reports cancelled,
    ///   with no lock of this crate held, so it may cancel, derive or drop
    ///   contexts freely.
    /// * If the context can never be cancelled (a root, `without_cancel`),
    ///   `f` is dropped at once and never runs.
    ///
    /// The registration keeps the context's scope (and `f`) alive until the
    /// scope ends or [`AfterFunc::stop`] is called, even if every `Context`
    /// and the `AfterFunc` handle are dropped: that is what lets `f` run when
    /// an ancestor is cancelled later. So on a scope that can no longer end
    /// (its handle detached and no ancestor that can be cancelled) a
    /// registration that is never stopped stays allocated. Go's garbage
    /// collector would reclaim it; here, `stop()` it.
    ///
    /// A panic in `f` is caught (with `std`) so the rest of the cancellation
    /// completes, then resumed on the cancelling thread; if that thread is
    /// already panicking (a `CancelHandle` dropped while unwinding), it is
    /// discarded instead of aborting. Without `std` a panic is not caught: the
    /// walk still completes as the panic unwinds (or the target aborts).
    ///
    /// ```
    /// use cancel_tree::Context;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let ran = Arc::new(AtomicBool::new(false));
    /// let r = ran.clone();
    /// let _stop = ctx.after_func(move || r.store(true, Ordering::SeqCst));
    /// cancel.cancel();
    /// assert!(ran.load(Ordering::SeqCst));
    /// ```
    pub fn after_func<F>(&self, f: F) -> AfterFunc
    where
        F: FnOnce() + Send + 'static,
    {
        // SAFETY: our scope is alive while we are.
        AfterFunc::new(unsafe { crate::tree::after_func::register(self.scope, f) })
    }

    /// Like [`after_func`](Context::after_func), but never runs `f` on this
    /// thread: if the context is already cancelled, `f` is handed back
    /// unrun, with the context's error, for callers that must not run it on
    /// their own stack (a lock held, a re-entrancy rule). On a context that
    /// can never be cancelled this is `Ok` and `f` is dropped, as for
    /// `after_func`.
    ///
    /// ```
    /// use cancel_tree::{Context, Error};
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let waiting = ctx.try_after_func(|| println!("later")).ok().expect("live");
    /// cancel.cancel();
    /// match ctx.try_after_func(|| println!("now")) {
    ///     Ok(_) => unreachable!(),
    ///     Err((f, err)) => {
    ///         assert_eq!(err, Error::Canceled);
    ///         drop(f); // or hand it to another thread or task
    ///     }
    /// }
    /// assert!(!waiting.stop(), "the first one ran at the cancel");
    /// ```
    pub fn try_after_func<F>(&self, f: F) -> Result<AfterFunc, (F, Error)>
    where
        F: FnOnce() + Send + 'static,
    {
        // SAFETY: our scope is alive while we are.
        unsafe { crate::tree::after_func::try_register(self.scope, f) }.map(AfterFunc::new)
    }

    /// `true` once the context is cancelled. One atomic load: no lock, no
    /// allocation, no clock read.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.word() & CANCELLED != 0
    }

    /// `None` while live; then why it ended. One atomic load. Once this is
    /// `Some`, [`done`](Context::done) is ready and [`cause`](Context::cause)
    /// is set.
    #[inline]
    pub fn err(&self) -> Option<Error> {
        state_word::err_of(self.word())
    }

    #[inline(always)]
    fn word(&self) -> usize {
        if self.scope.is_null() {
            0
        } else {
            // SAFETY: the scope is alive while `self` is.
            unsafe { (*self.scope).hdr.word.load() }
        }
    }

    /// Why the context ended: `None` while live; the cause given to
    /// [`CancelHandle::cancel_with`] or to a `*_cause` derivation; the
    /// parent's cause when the parent ended it; otherwise the
    /// [`err`](Context::err) itself.
    ///
    /// ```
    /// use cancel_tree::{Context, Error};
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel_with(cancel_tree::Cause::msg("shutting down"));
    /// assert_eq!(ctx.err(), Some(Error::Canceled));
    /// assert_eq!(ctx.cause().unwrap().to_string(), "shutting down");
    /// ```
    pub fn cause(&self) -> Option<Cause> {
        let w = self.word();
        if w & CANCELLED == 0 {
            return None;
        }
        // SAFETY: a cancelled word came from a live scope.
        Some(unsafe { (*self.scope).read_cause(w) })
    }

    /// Where the cancel that ended this context was called (see
    /// [`Cause::location`]): `None` while live, and for endings no call
    /// chose (a dropped handle, a deadline).
    ///
    /// ```
    /// use cancel_tree::Context;
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// assert!(ctx.cancel_location().is_none());
    /// cancel.cancel();
    /// assert_eq!(ctx.cancel_location().unwrap().file(), file!());
    /// ```
    pub fn cancel_location(&self) -> Option<&'static core::panic::Location<'static>> {
        self.cause()?.location()
    }

    /// A future that resolves to [`err`](Context::err) once the context is
    /// cancelled. Never allocates; see [`Done`].
    pub fn done(&self) -> Done<'_> {
        // SAFETY: our scope lives as long as we do.
        unsafe { Done::new(self.scope) }
    }

    /// Like [`done`](Context::done), but `'static` (holds a clone).
    pub fn done_owned(&self) -> DoneOwned {
        DoneOwned::new(self.clone())
    }

    /// Runs `fut` until it completes or the context is cancelled, whichever
    /// is first. On cancellation `fut` is dropped and the result is `Err`.
    ///
    /// Biased towards cancellation: the context is checked **before** every
    /// poll of `fut`, so a future that is always ready (a busy stream, a
    /// loop that never yields `Pending`) still stops at the first poll after
    /// the cancel, and a cancelled context never polls `fut` at all (tokio
    /// issue 7462 asked this of tokio-util's `run_until_cancelled`). The
    /// cost is one atomic load per poll.
    ///
    /// ```
    /// # use cancel_tree::{Context, Error};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v } }
    /// # }
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// assert_eq!(block_on(ctx.run(async { 42 })), Ok(42));
    /// cancel.cancel();
    /// assert_eq!(block_on(ctx.run(async { 42 })), Err(Error::Canceled));
    /// ```
    pub fn run<F: Future>(&self, fut: F) -> Run<'_, F> {
        Run::new(self, fut)
    }

    /// Blocks the thread until the context is cancelled.
    ///
    /// Not on wasm32-unknown-unknown, where blocking the host's one thread
    /// could never see a timer or another task cancel. On wasm without
    /// threads (wasm32-wasip1) it sleeps, and fires
    /// [`StdClock`](crate::StdClock)'s due deadlines itself (see
    /// `docs/wasm.md`).
    #[cfg(all(
        feature = "std",
        not(all(target_family = "wasm", target_os = "unknown"))
    ))]
    pub fn wait(&self) -> Error {
        crate::api::blocking::wait(self)
    }

    /// Blocks the thread until the context is cancelled or `timeout`
    /// passes (`None`). A timeout too large to represent waits forever.
    ///
    /// ```
    /// use cancel_tree::Context;
    /// use std::time::Duration;
    /// let (ctx, _cancel) = Context::background().with_cancel();
    /// assert_eq!(ctx.wait_timeout(Duration::from_millis(1)), None);
    /// ```
    #[cfg(all(
        feature = "std",
        not(all(target_family = "wasm", target_os = "unknown"))
    ))]
    pub fn wait_timeout(&self, timeout: core::time::Duration) -> Option<Error> {
        crate::api::blocking::wait_timeout(self, timeout)
    }

    /// Test hook (never part of the API): gives this context's scope its
    /// shard array now, as the first contended derive would, so a unit test
    /// or a loom model can start from a sharded parent without the
    /// contention that installs one.
    #[cfg(all(cancel_tree_shards, any(test, cancel_tree_loom)))]
    #[cfg_attr(miri, allow(dead_code))] // its tests do not run under Miri
    pub(crate) fn install_shards_for_tests(&self) {
        if !self.scope.is_null() && self.node == self.scope.cast() {
            // SAFETY: our reference keeps the scope alive.
            crate::tree::shards::install(unsafe { &*self.scope });
        }
    }
}

impl Clone for Context {
    #[inline]
    fn clone(&self) -> Context {
        // SAFETY: we hold a reference on our node.
        unsafe { release::acquire(self.node) };
        Context {
            node: self.node,
            scope: self.scope,
        }
    }
}

impl Drop for Context {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own one reference on our node.
        unsafe { release::release(self.node) }
    }
}

impl Default for Context {
    /// [`Context::background`].
    fn default() -> Context {
        Context::background()
    }
}

impl fmt::Debug for Context {
    /// Prints the path from the root, Go style, e.g.
    /// `Context(background.with_value.with_cancel, live)`; paths deeper than
    /// eight nodes print their last eight.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        let mut depth = 0usize;
        let mut n = self.node;
        while node::is_heap(n) {
            depth += 1;
            // SAFETY: ancestors of a live node are alive.
            n = unsafe { (*n).parent };
        }
        // SAFETY: a sentinel (the loop above ran out of heap nodes).
        let root = unsafe { node::kind_name(n) };
        f.write_str("Context(")?;
        if depth >= SHOWN {
            f.write_str("…")?;
        } else {
            f.write_str(root)?;
        }
        for level in (0..depth.min(SHOWN)).rev() {
            let mut n = self.node;
            for _ in 0..level {
                // SAFETY: as above.
                n = unsafe { (*n).parent };
            }
            f.write_str(".")?;
            // SAFETY: `n` is a live ancestor (or ourselves).
            f.write_str(unsafe { node::kind_name(n) })?;
        }
        match self.err() {
            None => f.write_str(", live)"),
            Some(e) => write!(f, ", {e})"),
        }
    }
}
