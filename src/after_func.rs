//! `after_func`: run a closure once a context is cancelled (Go's
//! `context.AfterFunc`).
//!
//! A registration is one allocation holding a [`WaitLink`] (so it sits in the
//! scope's waiter list next to `Done` futures), a two-count reference count
//! (the [`AfterFunc`] handle and the registration), and the closure. The
//! registration and the handle each hold a reference on the scope: the
//! registration so the scope stays linked under its parent while it waits,
//! the handle so `stop()` can always take the scope's lock. Who gets the closure is decided under the scope's lock by
//! the link's status: the canceller pops it (`NOTIFIED`, then runs it with no
//! lock held) or `stop()` unlinks it (`STOPPED`, then drops it). Exactly one of
//! the two happens.

use alloc::boxed::Box;
use core::fmt;
use core::ptr::NonNull;

use crate::cancel::Panics;
use crate::context::Context;
use crate::node::{self, Scope};
use crate::state::CANCELLED;
use crate::sync::{AtomicU8, AtomicUsize, Ordering, UnsafeCell};
use crate::waiters::{KIND_AFTER_FUNC, LINKED, STOPPED, WaitLink};

#[repr(C)]
struct Header {
    link: WaitLink,
    refs: AtomicUsize,
    scope: *const Scope,
    call: unsafe fn(*const Header),
    drop_f: unsafe fn(*const Header),
    free: unsafe fn(*const Header),
}

#[repr(C)]
struct Node<F> {
    head: Header,
    f: UnsafeCell<Option<F>>,
}

unsafe fn call_f<F: FnOnce()>(h: *const Header) {
    // SAFETY: `h` heads a `Node<F>` (repr(C)); the caller has exclusive
    // claim to the closure (status NOTIFIED or never linked).
    let f = unsafe { (*h.cast::<Node<F>>()).f.with_mut(|f| (*f).take()) };
    if let Some(f) = f {
        f();
    }
}

unsafe fn drop_f<F>(h: *const Header) {
    // SAFETY: `h` heads a `Node<F>`; the caller owns the stopped registration.
    let f = unsafe { (*h.cast::<Node<F>>()).f.with_mut(|f| (*f).take()) };
    drop(f);
}

unsafe fn free_node<F>(h: *const Header) {
    // SAFETY: made by `Box::new(Node<F>)` in `register`; no references left.
    unsafe { drop(Box::from_raw(h.cast::<Node<F>>().cast_mut())) }
}

/// Drops one count on the registration node.
///
/// # Safety
/// The caller owns one count.
unsafe fn release_node(h: *const Header) {
    // SAFETY: the caller's count keeps it alive.
    if unsafe { (*h).refs.fetch_sub(1, Ordering::Release) } == 1 {
        // An Acquire load (rather than a fence, which ThreadSanitizer does
        // not model) pairs with every other owner's Release decrement.
        // SAFETY: as above.
        unsafe { (*h).refs.load(Ordering::Acquire) };
        // SAFETY: last count.
        unsafe { ((*h).free)(h) }
    }
}

/// Ends a registration: gives up its scope reference and its node count.
///
/// # Safety
/// The caller owns the registration (it popped or stopped it).
unsafe fn end_registration(h: *const Header) {
    // SAFETY: the registration owns one reference on the scope node and one
    // count on `h`.
    unsafe {
        let scope = (*h).scope;
        release_node(h);
        node::release(scope.cast());
    }
}

/// Runs a popped registration's closure and ends the registration.
///
/// # Safety
/// `link` is an after_func link the caller just popped (status `NOTIFIED`).
pub(crate) unsafe fn fire(link: *const WaitLink, panics: &mut Panics) {
    let h = link.cast::<Header>();
    // Ends the registration even if the closure panics and is not caught.
    struct End(*const Header);
    impl Drop for End {
        fn drop(&mut self) {
            // SAFETY: we own the popped registration.
            unsafe { end_registration(self.0) }
        }
    }
    let _end = End(h);
    // SAFETY: `Header` is the first field of the node, link first in it.
    panics.call(|| unsafe { ((*h).call)(h) });
}

/// The handle returned by [`Context::after_func`].
///
/// [`stop`](AfterFunc::stop) unregisters the closure. Dropping the handle
/// does **not** stop it (Go semantics): the closure still runs when the
/// context is cancelled.
pub struct AfterFunc {
    repr: Repr,
}

enum Repr {
    /// Registered on a scope (maybe already fired or stopped).
    Live(NonNull<Header>),
    /// On a context that can never be cancelled; `true` once stopped.
    Inert(AtomicU8),
    /// The context was already cancelled: the closure ran at registration.
    Ran,
}

// SAFETY: the node is shared through atomics and the scope lock; the closure
// is `Send` and only ever run or dropped by one thread.
unsafe impl Send for AfterFunc {}
// SAFETY: `stop(&self)` synchronises through the scope lock.
unsafe impl Sync for AfterFunc {}

pub(crate) fn register<F>(ctx: &Context, f: F) -> AfterFunc
where
    F: FnOnce() + Send + 'static,
{
    if ctx.scope.is_null() {
        // Never cancelled: `f` can never run, so keep nothing alive.
        drop(f);
        return AfterFunc {
            repr: Repr::Inert(AtomicU8::new(0)),
        };
    }
    // SAFETY: the scope is alive while `ctx` is.
    let scope = unsafe { &*ctx.scope };
    if scope.hdr.word.load() & CANCELLED != 0 {
        f();
        return AfterFunc { repr: Repr::Ran };
    }
    let node = Box::new(Node {
        head: Header {
            link: WaitLink::new(KIND_AFTER_FUNC),
            refs: AtomicUsize::new(2),
            scope: ctx.scope,
            call: call_f::<F>,
            drop_f: drop_f::<F>,
            free: free_node::<F>,
        },
        f: UnsafeCell::new(Some(f)),
    });
    let h: *const Header = Box::into_raw(node).cast_const().cast();
    // One scope reference for the registration, one for the handle.
    scope.hdr.word.acquire_ref();
    scope.hdr.word.acquire_ref();
    let guard = scope.hdr.word.lock();
    if guard.load() & CANCELLED != 0 {
        drop(guard);
        // Never linked, so we own both counts, both scope references and the
        // closure; give them all back even if the closure panics.
        struct Undo(*const Header, *const Scope);
        impl Drop for Undo {
            fn drop(&mut self) {
                // SAFETY: the counts and references taken above, once.
                unsafe {
                    end_registration(self.0);
                    release_node(self.0);
                    node::release(self.1.cast());
                }
            }
        }
        let _undo = Undo(h, ctx.scope);
        // SAFETY: we own the closure (never linked).
        unsafe { call_f::<F>(h) };
        return AfterFunc { repr: Repr::Ran };
    }
    // SAFETY: lock held; the link is fresh and lives until unlinked.
    unsafe { scope.push_waiter(h.cast()) };
    drop(guard);
    AfterFunc {
        // SAFETY: from Box::into_raw.
        repr: Repr::Live(unsafe { NonNull::new_unchecked(h.cast_mut()) }),
    }
}

impl AfterFunc {
    /// Unregisters the closure. Returns `true` if this call prevented it from
    /// running; `false` if it already started (or ran), or was already
    /// stopped. On a context that can never be cancelled, the first `stop()`
    /// returns `true`.
    ///
    /// ```
    /// use cancel_tree::Context;
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let stop = ctx.after_func(|| unreachable!("stopped in time"));
    /// assert!(stop.stop());
    /// assert!(!stop.stop());
    /// cancel.cancel();
    /// ```
    pub fn stop(&self) -> bool {
        match &self.repr {
            Repr::Ran => false,
            Repr::Inert(stopped) => stopped.swap(1, Ordering::AcqRel) == 0,
            Repr::Live(h) => {
                // SAFETY: a live handle owns a node count and a scope
                // reference.
                unsafe { stop_live(h.as_ptr().cast_const()) }
            }
        }
    }
}

/// # Safety
/// The caller holds the handle's count on `h` and the handle's reference on
/// the scope.
unsafe fn stop_live(h: *const Header) -> bool {
    // SAFETY: the handle keeps both the node and the scope alive (caller).
    unsafe {
        let scope = &*(*h).scope;
        let guard = scope.hdr.word.lock();
        if (*h).link.status() != LINKED {
            return false;
        }
        scope.unlink_waiter(h.cast(), STOPPED);
        drop(guard);
        // We own the registration now; drop the closure outside the lock.
        ((*h).drop_f)(h);
        end_registration(h);
        true
    }
}

impl Drop for AfterFunc {
    fn drop(&mut self) {
        if let Repr::Live(h) = self.repr {
            // SAFETY: the handle's node count and scope reference.
            unsafe {
                let scope = (*h.as_ptr()).scope;
                release_node(h.as_ptr());
                node::release(scope.cast());
            }
        }
    }
}

impl fmt::Debug for AfterFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.repr {
            Repr::Ran => "ran",
            Repr::Inert(_) => "never-cancelled",
            Repr::Live(_) => "registered",
        };
        f.debug_struct("AfterFunc").field("state", &state).finish()
    }
}
