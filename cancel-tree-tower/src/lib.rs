//! Request deadlines and cancellation across services, with
//! [`cancel_tree`]'s contexts on the tower stack: hyper, axum and tonic.
//!
//! What Go's `context` does for a Go service, for a Rust one: every request
//! runs under a [`Context`] whose deadline came from its caller, that is
//! cancelled (with a cause) when the caller goes away or the server shuts
//! down, and whose remaining time travels with every call it makes.
//!
//! * [`ServerLayer`]: each request gets a child of a server root context,
//!   in its extensions, with a deadline from the caller's `grpc-timeout`
//!   (capped and defaulted by the server); dropped responses cancel it with
//!   [`ClientDisconnected`]; cancelling the root (e.g. with
//!   [`ServerShutdown`]) cancels every request; optionally the layer answers
//!   `DEADLINE_EXCEEDED` / 504 itself when the deadline passes.
//! * [`ClientLayer`]: an outgoing call made with a caller's context
//!   ([`RequestContextExt::with_context`]) sends the remaining time as
//!   `grpc-timeout`, is not sent at all once the context has ended, and is
//!   dropped (resetting its HTTP/2 stream) the moment it ends.
//! * [`axum::RequestContext`] (feature `axum`): the context as an extractor.
//! * [`tonic`] (feature `tonic`): the context in a service method, and
//!   [`Error`](cancel_tree::Error)s to and from `Status` codes.
//!
//! The layers need no runtime of their own: deadlines fire on the root's
//! clock and the futures wait on the contexts themselves.
//!
//! # Example
//!
//! A caller with two seconds left calls a server through both layers (here
//! in-process; across a network it is the same): the handler's context has
//! the caller's deadline.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use axum::{Router, routing::get};
//! use cancel_tree::Context;
//! use cancel_tree_tower::{ClientLayer, RequestContextExt, ServerLayer, axum::RequestContext};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! async fn handler(RequestContext(ctx): RequestContext) -> String {
//!     let left = ctx.deadline().unwrap() - ctx.now();
//!     format!("{}", left <= Duration::from_secs(2))
//! }
//!
//! let (root, _shutdown) = Context::background().with_cancel();
//! let server = Router::new()
//!     .route("/", get(handler))
//!     .layer(ServerLayer::new(root));
//! let client = ServiceBuilder::new().layer(ClientLayer::new()).service(server);
//!
//! let (caller, _c) = Context::background().with_timeout(Duration::from_secs(2));
//! let request = http::Request::get("/")
//!     .body(axum::body::Body::empty())
//!     .unwrap()
//!     .with_context(&caller);
//! let response = client.oneshot(request).await.unwrap();
//! let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap();
//! assert_eq!(body.to_bytes(), "true");
//! # }
//! ```
//!
//! `examples/http_server.rs` is an axum server with the layer;
//! `examples/grpc_chain.rs` runs three tonic services A → B → C and shows
//! the deadline shrinking hop by hop and a client's cancel reaching C.

#[cfg(feature = "axum")]
pub mod axum;
mod causes;
pub mod client;
mod ext;
pub mod server;
#[cfg(feature = "tonic")]
pub mod tonic;
mod wire;

pub use causes::{ClientDisconnected, ServerShutdown};
pub use client::{BoxError, ClientLayer, ClientService, ContextError};
pub use ext::RequestContextExt;
pub use server::{ServerLayer, ServerService};

/// Re-exported: the contexts this crate puts in requests.
pub use cancel_tree::Context;
