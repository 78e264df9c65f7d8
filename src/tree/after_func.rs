//! `after_func`: run a closure once a context is cancelled (Go's
//! `context.AfterFunc`).
//!
//! A registration is one allocation holding a [`WaitLink`] (so it sits in the
//! scope's waiter list next to `Done` futures), a two-count reference count
//! (the `AfterFunc` handle and the registration), and the closure. The
//! registration and the handle each hold a reference on the scope: the
//! registration so the scope stays linked under its parent while it waits,
//! the handle so `stop()` can always take the scope's lock. Who gets the closure is decided under the scope's lock by
//! the link's status: the canceller pops it (`NOTIFIED`, then runs it with no
//! lock held) or `stop()` unlinks it (`STOPPED`, then drops it). Exactly one of
//! the two happens. The public handle, `AfterFunc`, wraps a [`Registered`].

use alloc::boxed::Box;
use core::ptr::NonNull;

use crate::Error;
use crate::raw::panic::Panics;
use crate::raw::sync::{AtomicUsize, Ordering, UnsafeCell, acquire_after_last_release};
use crate::tree::node::Scope;
use crate::tree::release;
use crate::tree::state_word::err_of;
use crate::tree::waiter_list::{KIND_AFTER_FUNC, LINKED, STOPPED, WaitLink};

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
        // SAFETY: as above.
        acquire_after_last_release(unsafe { &(*h).refs });
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
        release::release(scope.cast());
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

/// What registering found.
pub(crate) enum Registered {
    /// Registered on a scope (maybe since fired or stopped).
    Live(Registration),
    /// On a context that can never be cancelled: `f` was dropped.
    Inert,
    /// The context was already cancelled: `f` ran at registration.
    Ran,
}

/// The handle's part of a live registration: one count on the node and one
/// reference on the scope, both given back on drop.
pub(crate) struct Registration(NonNull<Header>);

// SAFETY: the node is shared through atomics and the scope lock; the closure
// is `Send` and only ever run or dropped by one thread.
unsafe impl Send for Registration {}
// SAFETY: `stop(&self)` synchronises through the scope lock.
unsafe impl Sync for Registration {}

/// Registers `f` on `scope` (null: a context that can never be cancelled).
/// On a scope that already ended, `f` runs at once, on this thread.
///
/// # Safety
/// `scope` is null or alive for the whole call (the caller holds a
/// reference on it).
pub(crate) unsafe fn register<F>(scope_ptr: *const Scope, f: F) -> Registered
where
    F: FnOnce() + Send + 'static,
{
    // SAFETY: (caller).
    match unsafe { try_register(scope_ptr, f) } {
        Ok(r) => r,
        Err((f, _)) => {
            f();
            Registered::Ran
        }
    }
}

/// [`register`], except that on a scope that already ended `f` is handed
/// back unrun, with the scope's error.
///
/// # Safety
/// As for [`register`].
pub(crate) unsafe fn try_register<F>(
    scope_ptr: *const Scope,
    f: F,
) -> Result<Registered, (F, Error)>
where
    F: FnOnce() + Send + 'static,
{
    if scope_ptr.is_null() {
        // Never cancelled: `f` can never run, so keep nothing alive.
        drop(f);
        return Ok(Registered::Inert);
    }
    // SAFETY: (caller).
    let scope = unsafe { &*scope_ptr };
    if let Some(e) = err_of(scope.hdr.word.load()) {
        return Err((f, e));
    }
    let node = Box::new(Node {
        head: Header {
            link: WaitLink::new(KIND_AFTER_FUNC),
            refs: AtomicUsize::new(2),
            scope: scope_ptr,
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
    let mut guard = scope.hdr.word.lock();
    if let Some(e) = err_of(guard.seen()) {
        drop(guard);
        // Never linked: we own the closure, both counts and both scope
        // references. Take the closure back, then give the rest back.
        // SAFETY: `h` heads a `Node<F>`; nobody else has seen it.
        let f = unsafe { (*h.cast::<Node<F>>()).f.with_mut(|f| (*f).take()) };
        // SAFETY: the counts and references taken above, once each.
        unsafe {
            end_registration(h);
            release_node(h);
            release::release(scope_ptr.cast());
        }
        return match f {
            Some(f) => Err((f, e)),
            None => unreachable!("a fresh registration holds its closure"),
        };
    }
    // SAFETY: lock held; the link is fresh and lives until unlinked.
    unsafe { scope.push_waiter(&mut guard, h.cast()) };
    drop(guard);
    // SAFETY: from Box::into_raw.
    Ok(Registered::Live(Registration(unsafe {
        NonNull::new_unchecked(h.cast_mut())
    })))
}

impl Registration {
    /// Unregisters the closure: `true` if this call kept it from running.
    pub(crate) fn stop(&self) -> bool {
        // SAFETY: a live handle owns a node count and a scope reference.
        unsafe { stop_live(self.0.as_ptr().cast_const()) }
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

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: the handle's node count and scope reference.
        unsafe {
            let h = self.0.as_ptr();
            let scope = (*h).scope;
            release_node(h);
            release::release(scope.cast());
        }
    }
}
