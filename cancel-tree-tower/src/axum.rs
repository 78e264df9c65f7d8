//! The request's context as an axum extractor (feature `axum`).

use std::convert::Infallible;
use std::fmt;
use std::ops::Deref;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use cancel_tree::Context;
use http::StatusCode;
use http::request::Parts;

use crate::RequestContextExt;

/// The request's [`Context`], from [`ServerLayer`](crate::ServerLayer), as
/// a handler argument. `Option<RequestContext>` is `None` on routes the
/// layer does not cover; `RequestContext` there rejects the request with
/// [`MissingContext`] (HTTP 500).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use axum::{Router, routing::get};
/// use cancel_tree::Context;
/// use cancel_tree_tower::{ServerLayer, axum::RequestContext};
/// use tower::ServiceExt;
///
/// // Waits for work, or for the request to end (deadline, disconnect,
/// // shutdown), whichever comes first.
/// async fn handler(RequestContext(ctx): RequestContext) -> String {
///     match ctx.run(async { "done" }).await {
///         Ok(s) => s.to_string(),
///         Err(e) => e.to_string(),
///     }
/// }
///
/// let app = Router::new()
///     .route("/", get(handler))
///     .layer(ServerLayer::new(Context::background()));
/// let request = http::Request::get("/").body(axum::body::Body::empty()).unwrap();
/// assert_eq!(app.oneshot(request).await.unwrap().status(), 200);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RequestContext(pub Context);

impl RequestContext {
    /// The context.
    pub fn into_inner(self) -> Context {
        self.0
    }
}

impl Deref for RequestContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.0
    }
}

impl From<RequestContext> for Context {
    fn from(ctx: RequestContext) -> Context {
        ctx.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = MissingContext;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, MissingContext> {
        parts
            .context()
            .cloned()
            .map(RequestContext)
            .ok_or(MissingContext)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for RequestContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts.context().cloned().map(RequestContext))
    }
}

/// The rejection of [`RequestContext`] on a request that has no context:
/// the route is not behind [`ServerLayer`](crate::ServerLayer). Answers
/// HTTP 500 with a one-line explanation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MissingContext;

impl fmt::Display for MissingContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no request context: the route is not behind cancel_tree_tower::ServerLayer")
    }
}

impl std::error::Error for MissingContext {}

impl IntoResponse for MissingContext {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{self}\n")).into_response()
    }
}
