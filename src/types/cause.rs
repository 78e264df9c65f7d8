//! [`Cause`]: the reason a context ended, Go's `context.Cause`.

use core::fmt;

use crate::Error;

#[cfg(feature = "alloc")]
use crate::raw::arc::Arc;
#[cfg(feature = "alloc")]
use alloc::boxed::Box;

/// Why a context ended: either one of the two [`Error`]s or any error value
/// the canceller supplied (Go's `context.Cause`).
///
/// Cheap to clone (an [`Error`] is copied, a custom cause shares one
/// reference-counted allocation). Compare it with an [`Error`] directly, or
/// look inside with [`downcast_ref`](Cause::downcast_ref).
///
/// ```
/// use cancel_tree::{Cause, Error};
///
/// #[derive(Debug)]
/// struct Shutdown;
/// impl std::fmt::Display for Shutdown {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("server shutting down")
///     }
/// }
/// impl std::error::Error for Shutdown {}
///
/// let c = Cause::new(Shutdown);
/// assert!(c.downcast_ref::<Shutdown>().is_some());
/// assert_eq!(c.to_string(), "server shutting down");
/// assert_eq!(Cause::from(Error::Canceled), Error::Canceled);
/// // `Cause::new` of an `Error` is that error, not a wrapper around it.
/// assert_eq!(Cause::new(Error::DeadlineExceeded), Error::DeadlineExceeded);
/// ```
#[derive(Clone)]
pub struct Cause(pub(crate) Repr);

/// Where a `cancel` was called (`#[track_caller]`).
pub(crate) type Location = &'static core::panic::Location<'static>;

#[derive(Clone)]
pub(crate) enum Repr {
    /// One of the two kinds, and where the cancel that chose it was called.
    Kind(Error, Option<Location>),
    #[cfg(feature = "alloc")]
    Custom(Arc<CustomCause>),
}

/// The shared allocation behind a custom cause. Sized, so a pointer to it is
/// thin and fits in a node.
#[cfg(feature = "alloc")]
pub(crate) struct CustomCause {
    pub(crate) error: Box<dyn core::error::Error + Send + Sync + 'static>,
    /// Where the first cancel given this cause was called (null: none yet,
    /// or not a tracked call). Set once.
    location: crate::raw::sync::AtomicPtr<core::panic::Location<'static>>,
}

/// A plain message used as a cause ([`Cause::msg`]).
#[cfg(feature = "alloc")]
struct Message<M>(M);

#[cfg(feature = "alloc")]
impl<M: fmt::Display> fmt::Display for Message<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(feature = "alloc")]
impl<M: fmt::Display> fmt::Debug for Message<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Quoted, without `{:?}` string escaping: that pulls kilobytes of
        // Unicode tables into small firmware.
        f.write_str("\"")?;
        fmt::Display::fmt(&self.0, f)?;
        f.write_str("\"")
    }
}

#[cfg(feature = "alloc")]
impl<M: fmt::Display> core::error::Error for Message<M> {}

impl Cause {
    /// Wraps any error as a cause. An [`Error`] passed here is stored as
    /// itself, so `Cause::new(Error::Canceled) == Error::Canceled`.
    #[cfg(feature = "alloc")]
    pub fn new<E>(error: E) -> Cause
    where
        E: core::error::Error + Send + Sync + 'static,
    {
        let any: &dyn core::any::Any = &error;
        if let Some(e) = any.downcast_ref::<Error>() {
            return Cause(Repr::Kind(*e, None));
        }
        Cause(Repr::Custom(Arc::new(CustomCause {
            error: Box::new(error),
            location: crate::raw::sync::AtomicPtr::new(core::ptr::null_mut()),
        })))
    }

    /// Where the cancel that ended the context with this cause was called:
    /// [`CancelHandle::cancel`](crate::CancelHandle::cancel) and
    /// [`cancel_with`](crate::CancelHandle::cancel_with) (and the local
    /// scopes' `cancel`) record their caller; a dropped handle, a deadline
    /// or a cause made but not used to cancel record nothing (`None`). The
    /// descendants a cancel reaches report the same location. A custom
    /// cause keeps the location of the first cancel that ended a context
    /// with it (a call that found its context already ended records
    /// nothing), written right after that ending.
    ///
    /// A thread that sees a context end at the same moment as the cancel
    /// that ended it (a custom cause, or a plain leaf ended without its
    /// lock) may read `None` for an
    /// instant: the location is written right after that ending.
    ///
    /// ```
    /// use cancel_tree::Context;
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let (child, _c) = ctx.with_cancel();
    /// cancel.cancel(); let line = line!();
    /// let at = child.cause().unwrap().location().unwrap();
    /// assert_eq!((at.file(), at.line()), (file!(), line));
    /// ```
    pub fn location(&self) -> Option<&'static core::panic::Location<'static>> {
        match &self.0 {
            Repr::Kind(_, at) => *at,
            #[cfg(feature = "alloc")]
            Repr::Custom(c) => {
                let p = c.location.load(crate::raw::sync::Ordering::Acquire);
                // SAFETY: only ever set from a `&'static Location` (`at`).
                (!p.is_null()).then(|| unsafe { &*p })
            }
        }
    }

    /// This cause, for a cancel called at `at`: a kind cause carries the
    /// location with it (the node stores it with the ending); a custom cause
    /// is unchanged until [`ended_at`](Cause::ended_at).
    pub(crate) fn at(self, at: Location) -> Cause {
        match self.0 {
            Repr::Kind(e, _) => Cause(Repr::Kind(e, Some(at))),
            #[cfg(feature = "alloc")]
            custom @ Repr::Custom(_) => Cause(custom),
        }
    }

    /// After a cancel called at `at` ended a context with this cause: a
    /// custom cause records `at` unless an earlier ending did (kind causes
    /// carry theirs already).
    pub(crate) fn ended_at(&self, at: Location) {
        #[cfg(feature = "alloc")]
        if let Repr::Custom(c) = &self.0 {
            let p = (at as *const core::panic::Location<'static>).cast_mut();
            let _ = c.location.compare_exchange(
                core::ptr::null_mut(),
                p,
                crate::raw::sync::Ordering::AcqRel,
                crate::raw::sync::Ordering::Relaxed,
            );
        }
        #[cfg(not(feature = "alloc"))]
        let _ = at;
    }

    /// A cause that is just a message (anything `Display`).
    ///
    /// ```
    /// use cancel_tree::Cause;
    /// assert_eq!(Cause::msg("shutting down").to_string(), "shutting down");
    /// assert_eq!(Cause::msg(format!("worker {}", 3)).to_string(), "worker 3");
    /// ```
    #[cfg(feature = "alloc")]
    pub fn msg<M: fmt::Display + Send + Sync + 'static>(message: M) -> Cause {
        Cause::new(Message(message))
    }

    /// The [`Error`] this cause is, if it is one of the two kinds rather than
    /// a custom error.
    pub fn as_error(&self) -> Option<Error> {
        match &self.0 {
            Repr::Kind(e, _) => Some(*e),
            #[cfg(feature = "alloc")]
            Repr::Custom(_) => None,
        }
    }

    /// A reference to the cause as `E`, if it is an `E`.
    ///
    /// ```
    /// use cancel_tree::{Cause, Error};
    /// let c = Cause::from(Error::DeadlineExceeded);
    /// assert_eq!(c.downcast_ref::<Error>(), Some(&Error::DeadlineExceeded));
    /// ```
    pub fn downcast_ref<E: core::error::Error + 'static>(&self) -> Option<&E> {
        match &self.0 {
            Repr::Kind(e, _) => (e as &dyn core::any::Any).downcast_ref::<E>(),
            #[cfg(feature = "alloc")]
            Repr::Custom(c) => c.error.downcast_ref::<E>(),
        }
    }

    /// The cause as a `dyn Error`.
    pub fn as_dyn_error(&self) -> &(dyn core::error::Error + Send + Sync + 'static) {
        match &self.0 {
            Repr::Kind(e, _) => e,
            #[cfg(feature = "alloc")]
            Repr::Custom(c) => &*c.error,
        }
    }

    /// `true` if both are the same kind, or share the same custom allocation.
    pub fn ptr_eq(&self, other: &Cause) -> bool {
        match (&self.0, &other.0) {
            (Repr::Kind(a, _), Repr::Kind(b, _)) => a == b,
            #[cfg(feature = "alloc")]
            (Repr::Custom(a), Repr::Custom(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "alloc")]
            _ => false,
        }
    }
}

#[cfg(not(feature = "alloc"))]
impl From<Error> for Cause {
    fn from(e: Error) -> Cause {
        Cause(Repr::Kind(e, None))
    }
}

/// Any error converts into a cause, so `cancel_with(MyError)` works; an
/// [`Error`] converts into itself.
#[cfg(feature = "alloc")]
impl<E: core::error::Error + Send + Sync + 'static> From<E> for Cause {
    fn from(e: E) -> Cause {
        Cause::new(e)
    }
}

#[cfg(feature = "alloc")]
impl From<Cause> for Box<dyn core::error::Error + Send + Sync + 'static> {
    /// The cause as a boxed error (the custom error itself is shared, so it
    /// is wrapped).
    fn from(c: Cause) -> Self {
        match c.0 {
            Repr::Kind(e, _) => Box::new(e),
            Repr::Custom(_) => Box::new(Shared(c)),
        }
    }
}

/// A custom cause viewed as an error.
#[cfg(feature = "alloc")]
struct Shared(Cause);

#[cfg(feature = "alloc")]
impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(feature = "alloc")]
impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(feature = "alloc")]
impl core::error::Error for Shared {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(self.0.as_dyn_error())
    }
}

impl PartialEq<Error> for Cause {
    fn eq(&self, other: &Error) -> bool {
        self.as_error() == Some(*other)
    }
}

impl PartialEq<Cause> for Error {
    fn eq(&self, other: &Cause) -> bool {
        other == self
    }
}

impl PartialEq for Cause {
    /// Kinds compare by value; custom causes compare by identity (the same
    /// `cancel_with` call), since arbitrary errors have no equality.
    fn eq(&self, other: &Cause) -> bool {
        self.ptr_eq(other)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_dyn_error(), f)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Kind(e, _) => write!(f, "Cause({e:?})"),
            #[cfg(feature = "alloc")]
            Repr::Custom(c) => write!(f, "Cause({:?})", &c.error),
        }
    }
}
