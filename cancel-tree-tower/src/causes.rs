//! The causes this crate cancels request contexts with, for handlers to
//! match with [`Cause::downcast_ref`](cancel_tree::Cause::downcast_ref).

use core::fmt;

/// The cause of a request context cancelled because its response was
/// abandoned: the response future, or a streaming response body, was dropped
/// before it completed. That is what a server does when the client
/// disconnects or (HTTP/2, gRPC) resets the stream.
///
/// The context's [`err`](cancel_tree::Context::err) is then
/// [`Error::Canceled`](cancel_tree::Error::Canceled).
///
/// ```
/// use cancel_tree::{Context, Error};
/// use cancel_tree_tower::ClientDisconnected;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel_with(ClientDisconnected); // what ServerLayer does
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// assert!(ctx.cause().unwrap().downcast_ref::<ClientDisconnected>().is_some());
/// assert_eq!(ctx.cause().unwrap().to_string(), "client disconnected");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientDisconnected;

impl fmt::Display for ClientDisconnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("client disconnected")
    }
}

impl std::error::Error for ClientDisconnected {}

/// A cause for cancelling a server's root context on graceful shutdown:
/// every in-flight request's context (a child of the root) then ends with
/// it.
///
/// ```
/// use cancel_tree::Context;
/// use cancel_tree_tower::ServerShutdown;
///
/// let (root, shutdown) = Context::background().with_cancel();
/// let (request, _done) = root.with_cancel(); // what ServerLayer makes
/// shutdown.cancel_with(ServerShutdown);
/// assert!(request.cause().unwrap().downcast_ref::<ServerShutdown>().is_some());
/// assert_eq!(request.cause().unwrap().to_string(), "server shutting down");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServerShutdown;

impl fmt::Display for ServerShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server shutting down")
    }
}

impl std::error::Error for ServerShutdown {}
