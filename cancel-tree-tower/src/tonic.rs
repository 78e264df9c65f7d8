//! tonic helpers (feature `tonic`): a request's context in a service
//! method, and [`Error`]s to and from [`Status`] codes.
//!
//! Both layers work on tonic as they are: `Server::builder().layer(
//! ServerLayer::new(root))` and `ServiceBuilder::new().layer(
//! ClientLayer::new()).service(channel)`.
//!
//! One caveat on `tonic::transport::Server`: tonic also reads
//! `grpc-timeout` itself and races a timer outside the layer; when that
//! timer wins it answers `CANCELLED` ("Timeout expired") rather than
//! `DEADLINE_EXCEEDED`, whatever
//! [`enforce_deadline`](crate::ServerLayer::enforce_deadline) says. The
//! handler's context still reports [`Error::DeadlineExceeded`], and a caller
//! behind [`ClientLayer`](crate::ClientLayer) gets `DEADLINE_EXCEEDED` from
//! its own deadline (which is never later than the server's). Deadlines
//! from [`max_timeout`](crate::ServerLayer::max_timeout) and
//! [`default_timeout`](crate::ServerLayer::default_timeout) are the layer's
//! alone; so are all of them when tonic's `Routes` are served by axum or
//! hyper (`Routes::into_axum_router`).
//!
//! tonic's `Channel` also races a timer on the `grpc-timeout` it sends; a
//! call through [`ClientLayer`](crate::ClientLayer) that fails once its
//! context's deadline has passed is reported `DEADLINE_EXCEEDED`, whichever
//! timer fired first.

use std::sync::Arc;

use ::tonic::{Code, Request, Status};
use cancel_tree::{Context, Error};

use crate::{ContextError, RequestContextExt};

/// The request's context, from [`ServerLayer`](crate::ServerLayer): in a
/// service method, `let ctx = cancel_tree_tower::tonic::context(&request)?;`.
/// Without the layer, an `INTERNAL` status that says so.
///
/// ```
/// use cancel_tree::Context;
/// use cancel_tree_tower::RequestContextExt;
///
/// let (ctx, _c) = Context::background().with_cancel();
/// let request = tonic::Request::new(()).with_context(&ctx);
/// assert!(cancel_tree_tower::tonic::context(&request).is_ok());
/// let status = cancel_tree_tower::tonic::context(&tonic::Request::new(())).unwrap_err();
/// assert_eq!(status.code(), tonic::Code::Internal);
/// ```
// `Status` is what a tonic method returns; boxing it here would only move
// the size to every caller.
#[allow(clippy::result_large_err)]
pub fn context<T>(request: &Request<T>) -> Result<Context, Status> {
    request.context().cloned().ok_or_else(|| {
        Status::internal(
            "no request context: the server is not behind cancel_tree_tower::ServerLayer",
        )
    })
}

/// The gRPC code for an error: `DEADLINE_EXCEEDED` or `CANCELLED`.
///
/// ```
/// use cancel_tree::Error;
/// use cancel_tree_tower::tonic::code_for;
/// assert_eq!(code_for(Error::DeadlineExceeded), tonic::Code::DeadlineExceeded);
/// assert_eq!(code_for(Error::Canceled), tonic::Code::Cancelled);
/// ```
pub fn code_for(error: Error) -> Code {
    match error {
        Error::DeadlineExceeded => Code::DeadlineExceeded,
        Error::Canceled => Code::Cancelled,
    }
}

/// The error a status reports, if it is one of the two: the inverse of
/// [`code_for`] (other codes give `None`).
///
/// ```
/// use cancel_tree::Error;
/// use cancel_tree_tower::tonic::error_for;
/// assert_eq!(error_for(&tonic::Status::deadline_exceeded("late")), Some(Error::DeadlineExceeded));
/// assert_eq!(error_for(&tonic::Status::cancelled("gone")), Some(Error::Canceled));
/// assert_eq!(error_for(&tonic::Status::not_found("no")), None);
/// ```
pub fn error_for(status: &Status) -> Option<Error> {
    match status.code() {
        Code::DeadlineExceeded => Some(Error::DeadlineExceeded),
        Code::Cancelled => Some(Error::Canceled),
        _ => None,
    }
}

/// The status for an ended context (its code from [`code_for`], its message
/// the error and cause, its source the [`ContextError`]); `None` while the
/// context is live. For a service method that gives up:
/// `return Err(status_for(&ctx).unwrap_or_else(|| Status::aborted("…")))`.
///
/// ```
/// use cancel_tree::Context;
/// use cancel_tree_tower::{ServerShutdown, tonic::status_for};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// assert!(status_for(&ctx).is_none());
/// cancel.cancel_with(ServerShutdown);
/// let status = status_for(&ctx).unwrap();
/// assert_eq!(status.code(), tonic::Code::Cancelled);
/// assert_eq!(status.message(), "context canceled: server shutting down");
/// ```
pub fn status_for(ctx: &Context) -> Option<Status> {
    ContextError::from_context(ctx).map(Status::from)
}

impl From<ContextError> for Status {
    fn from(e: ContextError) -> Status {
        let mut status = Status::new(code_for(e.error()), e.to_string());
        status.set_source(Arc::new(e));
        status
    }
}
