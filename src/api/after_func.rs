//! [`AfterFunc`]: the handle of a closure registered to run once a context
//! is cancelled. The registration itself is `tree::after_func`.

use core::fmt;

use crate::raw::sync::{AtomicU8, Ordering};
use crate::tree::after_func::{Registered, Registration};

/// The handle returned by [`Context::after_func`](crate::Context::after_func).
///
/// [`stop`](AfterFunc::stop) unregisters the closure. Dropping the handle
/// does **not** stop it (Go semantics): the closure still runs when the
/// context is cancelled.
pub struct AfterFunc {
    repr: Repr,
}

enum Repr {
    /// Registered on a scope (maybe already fired or stopped).
    Live(Registration),
    /// On a context that can never be cancelled; `true` once stopped.
    Inert(AtomicU8),
    /// The context was already cancelled: the closure ran at registration.
    Ran,
}

impl AfterFunc {
    pub(crate) fn new(r: Registered) -> AfterFunc {
        let repr = match r {
            Registered::Live(r) => Repr::Live(r),
            Registered::Inert => Repr::Inert(AtomicU8::new(0)),
            Registered::Ran => Repr::Ran,
        };
        AfterFunc { repr }
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
            Repr::Live(r) => r.stop(),
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
