//! [`Error`]: why a context ended, as Go's `context.Canceled` and
//! `context.DeadlineExceeded`.

use core::fmt;

/// Why a context ended: Go's two sentinel errors.
///
/// `Display` prints Go's strings, so logs read the same as a Go service's.
///
/// ```
/// use cancel_tree::Error;
/// assert_eq!(Error::Canceled.to_string(), "context canceled");
/// assert_eq!(Error::DeadlineExceeded.to_string(), "context deadline exceeded");
/// assert!(Error::DeadlineExceeded.is_timeout());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Error {
    /// The context was cancelled: a [`CancelHandle`](crate::CancelHandle) was
    /// used or dropped, or an ancestor was cancelled.
    Canceled,
    /// The context's deadline passed.
    DeadlineExceeded,
}

impl Error {
    /// `true` for [`Error::DeadlineExceeded`] (Go's `Timeout()` method).
    pub const fn is_timeout(self) -> bool {
        matches!(self, Error::DeadlineExceeded)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Canceled => "context canceled",
            Error::DeadlineExceeded => "context deadline exceeded",
        })
    }
}

impl core::error::Error for Error {}
