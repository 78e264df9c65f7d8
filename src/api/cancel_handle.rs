//! [`CancelHandle`]: the right to cancel one scope.

use core::fmt;

use crate::api::context::Context;
use crate::tree::cancel::cancel;
use crate::tree::node::Scope;
use crate::tree::release;
use crate::tree::state_word::{self, TryEnd};
use crate::{Cause, Error};

/// The right to cancel the context it was returned with. Go's `CancelFunc`,
/// with `defer cancel()` built in: **dropping the handle cancels**. Call
/// [`detach`](CancelHandle::detach) to drop it without cancelling.
///
/// ```
/// use cancel_tree::{Context, Error};
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel_with(Error::DeadlineExceeded);
/// cancel.cancel(); // later cancels change nothing
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// assert_eq!(ctx.cause().unwrap(), Error::DeadlineExceeded);
/// ```
#[must_use = "dropping a CancelHandle cancels its context at once; bind it (`let (ctx, _cancel) = ...`) or call `.detach()`"]
pub struct CancelHandle {
    scope: *const Scope,
}

// SAFETY: cancelling is thread-safe (state word + per-node locks).
unsafe impl Send for CancelHandle {}
// SAFETY: as above.
unsafe impl Sync for CancelHandle {}

impl CancelHandle {
    /// Takes over one reference on `scope`.
    #[inline]
    pub(crate) fn new(scope: *const Scope) -> CancelHandle {
        CancelHandle { scope }
    }

    /// Cancels the context with [`Error::Canceled`] (cause `Canceled`), and
    /// every descendant with it. When this returns, every descendant reports
    /// cancelled (with `std` also when another thread's cancel won the race:
    /// this call then waits for that walk to flag the subtree). If this call
    /// ended the context, its waiters have also been woken and its
    /// `after_func` closures run; if another cancel won, that one does it.
    /// Cancelling an ended context changes nothing.
    ///
    /// Records where it was called: see [`Cause::location`].
    #[track_caller]
    pub fn cancel(&self) {
        self.cancel_untracked(&Cause::from(Error::Canceled).at(core::panic::Location::caller()));
    }

    /// Cancels with `err()` = [`Error::Canceled`] and `cause()` = `cause`
    /// (Go's `WithCancelCause`). Records where it was called: see
    /// [`Cause::location`].
    #[track_caller]
    pub fn cancel_with(&self, cause: impl Into<Cause>) {
        let at = core::panic::Location::caller();
        let cause = cause.into().at(at);
        if self.cancel_untracked(&cause) {
            cause.ended_at(at);
        }
    }

    /// Cancels with `cause` as given (a drop, a guard: no caller to
    /// record); `true` if this call ended the scope.
    pub(crate) fn cancel_untracked(&self, cause: &Cause) -> bool {
        // SAFETY: the handle holds a reference on the scope.
        unsafe { cancel(self.scope, Error::Canceled, cause) }
    }

    /// A second handle on the same scope (crate-internal: users get exactly
    /// one handle per scope).
    #[cfg_attr(not(feature = "tokio-util"), allow(dead_code))]
    pub(crate) fn duplicate(&self) -> CancelHandle {
        // SAFETY: the handle holds a reference, so taking another is fine.
        unsafe { release::acquire(self.scope.cast()) };
        CancelHandle { scope: self.scope }
    }

    /// A context for the scope this handle cancels.
    pub fn context(&self) -> Context {
        // SAFETY: the handle holds a reference, so taking another is fine.
        unsafe { release::acquire(self.scope.cast()) };
        Context {
            node: self.scope.cast(),
            scope: self.scope,
        }
    }

    /// `true` once the scope has ended (by this handle or otherwise).
    pub fn is_cancelled(&self) -> bool {
        // SAFETY: the handle holds a reference.
        unsafe { (*self.scope).hdr.word.load() & state_word::CANCELLED != 0 }
    }

    /// Gives up the handle without cancelling: the context then ends only
    /// through its parent or its deadline.
    pub fn detach(self) {
        let scope = self.scope;
        core::mem::forget(self);
        // SAFETY: the handle's reference, given up once (forget above).
        unsafe { release::release(scope.cast()) };
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        struct Release(*const Scope);
        impl Drop for Release {
            fn drop(&mut self) {
                // SAFETY: the handle's reference, released even if an
                // `after_func` panic propagates out of the cancel below.
                unsafe { release::release(self.0.cast()) };
            }
        }
        // SAFETY: the handle holds a reference.
        let word = unsafe { &(*self.scope).hdr.word };
        // The common case, a plain leaf nobody waits on: end it and give up
        // the handle's reference in one compare-and-swap (`Busy` if that
        // reference could be the last, or the node has lists).
        let seen = word.load();
        if state_word::kind(seen) == state_word::KIND_CANCEL
            && word.try_end_leaf(seen, state_word::CANCELLED, true, 0) == TryEnd::Ended
        {
            return;
        }
        let _release = Release(self.scope);
        // If ours is the last reference, no context, child, waiter or
        // after_func exists to observe the cancel: skip it and just free.
        // (Children, waiters and registrations all hold references; a parent
        // walk that finds the node takes one before touching it.)
        // SAFETY: the handle holds a reference.
        if unsafe { (*self.scope).hdr.word.sole_reference() } {
            return;
        }
        self.cancel_untracked(&Cause::from(Error::Canceled));
    }
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHandle")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
