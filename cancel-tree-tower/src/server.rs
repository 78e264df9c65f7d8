//! The server layer: a context per request, its deadline from the caller's
//! `grpc-timeout` and the server's limits, cancelled when the response is
//! abandoned, and optionally answered by the layer when the deadline passes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use cancel_tree::{CancelHandle, Context, DoneOwned, Error};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::causes::ClientDisconnected;
use crate::wire::{self, Answer};

/// A response abandoned this close to its request's deadline (or later) is
/// left to the deadline rather than cancelled as a disconnect: a timer
/// outside this layer racing the same deadline (tonic's own `grpc-timeout`
/// handling, on tokio's millisecond timer) can drop the response a little
/// before the context's clock fires, and the handler should then see
/// [`Error::DeadlineExceeded`], not a client that went away.
const DEADLINE_SLACK: Duration = Duration::from_millis(5);

/// A [`tower_layer::Layer`] that runs every request under a child of a
/// server root [`Context`], put in the request's extensions.
///
/// For each request:
///
/// * **Context**: a child of the root, so cancelling the root (graceful
///   shutdown, e.g. with [`ServerShutdown`](crate::ServerShutdown) as the
///   cause) cancels every in-flight request with the root's cause.
/// * **Deadline**: the earliest of the request's `grpc-timeout`, the
///   [`max_timeout`](ServerLayer::max_timeout), and the root's own deadline;
///   a request without `grpc-timeout` gets the
///   [`default_timeout`](ServerLayer::default_timeout) instead (still capped
///   by the maximum). No timeout at all: no deadline.
/// * **Abandoned**: if the response future, or the response body, is dropped
///   before it completes (the client disconnected, or reset its HTTP/2
///   stream), the context is cancelled with the cause
///   [`ClientDisconnected`]. (If the deadline has
///   already passed, within a few milliseconds, the context is left to end
///   with [`Error::DeadlineExceeded`] instead.)
/// * **Finished**: once the response body has been sent in full, the
///   context is cancelled with [`Error::Canceled`], as Go's `net/http`
///   cancels a request's context when its handler returns. Work that must
///   outlive the request derives from
///   [`without_cancel`](Context::without_cancel).
/// * **Malformed `grpc-timeout`** (gRPC over HTTP/2 spec: 1 to 8 ASCII
///   digits and one of `H M S m u n`): the service is not called; the layer
///   answers gRPC status `INTERNAL` (13) for gRPC requests, as gRPC's
///   reference implementation does, and HTTP 400 otherwise. A zero timeout
///   is valid: the context is born with [`Error::DeadlineExceeded`].
/// * **Enforcement** ([`enforce_deadline`](ServerLayer::enforce_deadline)):
///   when the deadline passes before the service answers, the layer drops
///   the service's future and answers itself: gRPC status
///   `DEADLINE_EXCEEDED` (4, `grpc-message: context deadline exceeded`) for
///   gRPC requests, HTTP 504 otherwise. The handler's context (and anything
///   it spawned with it) reports [`Error::DeadlineExceeded`].
///
/// The layer needs no runtime: the deadline fires on the root's clock
/// ([`StdClock`](cancel_tree::StdClock) under
/// [`Context::background`], or e.g.
/// cancel-tree's `TokioClock`), and the response future waits
/// on the context itself.
///
/// # Example
///
/// An axum router behind the layer; the handler reads its request's
/// context with the [`RequestContext`](crate::axum::RequestContext)
/// extractor (or from the request's extensions).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use axum::{Router, routing::get};
/// use cancel_tree::Context;
/// use cancel_tree_tower::{ServerLayer, axum::RequestContext};
/// use std::time::Duration;
/// use tower::ServiceExt;
///
/// async fn handler(RequestContext(ctx): RequestContext) -> String {
///     format!("{:?}", ctx.deadline().is_some())
/// }
///
/// let (root, _shutdown) = Context::background().with_cancel();
/// let app = Router::new()
///     .route("/", get(handler))
///     .layer(ServerLayer::new(root).max_timeout(Duration::from_secs(30)));
///
/// let request = http::Request::get("/")
///     .header("grpc-timeout", "500m")
///     .body(axum::body::Body::empty())
///     .unwrap();
/// let response = app.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
///
/// With axum's graceful shutdown, the root's cancellation is the signal:
///
/// ```no_run
/// # async fn run(app: axum::Router, listener: tokio::net::TcpListener) {
/// use cancel_tree::Context;
/// use cancel_tree_tower::{ServerLayer, ServerShutdown};
///
/// let (root, shutdown) = Context::background().with_cancel();
/// let app = app.layer(ServerLayer::new(root.clone()));
/// tokio::spawn(async move {
///     let _ = tokio::signal::ctrl_c().await;
///     shutdown.cancel_with(ServerShutdown); // every request sees this cause
/// });
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async move { root.done().await; })
///     .await
///     .unwrap();
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ServerLayer {
    root: Context,
    max_timeout: Option<Duration>,
    default_timeout: Option<Duration>,
    enforce: bool,
}

impl ServerLayer {
    /// A layer whose requests are children of `root`: no maximum, no
    /// default timeout, no enforcement.
    pub fn new(root: Context) -> ServerLayer {
        ServerLayer {
            root,
            max_timeout: None,
            default_timeout: None,
            enforce: false,
        }
    }

    /// No request gets more time than `max`, whatever its `grpc-timeout`
    /// says.
    #[must_use]
    pub fn max_timeout(mut self, max: Duration) -> ServerLayer {
        self.max_timeout = Some(max);
        self
    }

    /// The timeout of a request that carries no `grpc-timeout` (capped by
    /// [`max_timeout`](ServerLayer::max_timeout)).
    #[must_use]
    pub fn default_timeout(mut self, timeout: Duration) -> ServerLayer {
        self.default_timeout = Some(timeout);
        self
    }

    /// Whether the layer answers by itself when a request's deadline passes
    /// before the service answers (gRPC `DEADLINE_EXCEEDED`, HTTP 504).
    /// Off by default: the handler sees the deadline in its context and
    /// answers as it sees fit.
    #[must_use]
    pub fn enforce_deadline(mut self, enforce: bool) -> ServerLayer {
        self.enforce = enforce;
        self
    }

    /// The root every request's context derives from.
    pub fn root(&self) -> &Context {
        &self.root
    }

    /// The timeout for a request that carried `incoming` (its
    /// `grpc-timeout`).
    fn timeout_for(&self, incoming: Option<Duration>) -> Option<Duration> {
        match (incoming.or(self.default_timeout), self.max_timeout) {
            (Some(t), Some(max)) => Some(t.min(max)),
            (t, max) => t.or(max),
        }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> ServerService<S> {
        ServerService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ServerLayer`] wraps around `S`.
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: S,
    layer: ServerLayer,
}

impl<S> ServerService<S> {
    /// `inner` behind `layer`'s configuration (the same as
    /// `layer.layer(inner)`).
    pub fn new(inner: S, layer: ServerLayer) -> ServerService<S> {
        ServerService { inner, layer }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<ServerBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> ResponseFuture<S::Future> {
        let grpc = wire::is_grpc(request.headers());
        let timeout = match wire::incoming_timeout(request.headers()) {
            Ok(incoming) => self.layer.timeout_for(incoming),
            Err(e) => return ResponseFuture::answer(Answer::MalformedTimeout(e), grpc, None),
        };
        let (ctx, handle) = match timeout {
            Some(t) => self.layer.root.with_timeout(t),
            None => self.layer.root.with_cancel(),
        };
        let guard = RequestGuard {
            handle: Some(handle),
        };
        let enforce = self.layer.enforce && ctx.deadline().is_some();
        if enforce && ctx.err() == Some(Error::DeadlineExceeded) {
            // No time at all (`grpc-timeout: 0n`, or a root past its
            // deadline): the request never reaches the service.
            return ResponseFuture::answer(Answer::DeadlineExceeded, grpc, Some(guard));
        }
        let watch = enforce.then(|| ctx.done_owned());
        request.extensions_mut().insert(ctx);
        ResponseFuture {
            future: Some(self.inner.call(request)),
            watch,
            guard: Some(guard),
            answer: None,
            grpc,
        }
    }
}

/// Ends a request's context when the request is over: normally (the
/// response sent in full) with a plain cancel, or, dropped before that, as
/// abandoned.
struct RequestGuard {
    handle: Option<CancelHandle>,
}

impl RequestGuard {
    /// The response went out in full: the request is over.
    fn finish(&mut self) {
        // Dropping the handle cancels with `Error::Canceled`.
        self.handle = None;
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        let ctx = handle.context();
        if ctx.is_cancelled() {
            return; // dropping the handle changes nothing
        }
        if wire::remaining(&ctx).is_some_and(|left| left <= DEADLINE_SLACK) {
            // The deadline is (about to be) due: let the clock end it.
            handle.detach();
        } else {
            handle.cancel_with(ClientDisconnected);
        }
    }
}

impl fmt::Debug for RequestGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestGuard")
            .field("live", &self.handle.is_some())
            .finish()
    }
}

pin_project! {
    /// The response future of [`ServerService`].
    ///
    /// Dropped before it completes, it cancels the request's context with
    /// [`ClientDisconnected`].
    pub struct ResponseFuture<F> {
        #[pin]
        future: Option<F>,
        // Set in enforcement mode when the request has a deadline.
        #[pin]
        watch: Option<DoneOwned>,
        guard: Option<RequestGuard>,
        answer: Option<Answer>,
        grpc: bool,
    }
}

impl<F> ResponseFuture<F> {
    fn answer(answer: Answer, grpc: bool, guard: Option<RequestGuard>) -> ResponseFuture<F> {
        ResponseFuture {
            future: None,
            watch: None,
            guard,
            answer: Some(answer),
            grpc,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ServerBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(future) = this.future.as_mut().as_pin_mut() {
            if let Poll::Ready(result) = future.poll(cx) {
                this.future.set(None);
                this.watch.set(None);
                let mut guard = this.guard.take();
                return Poll::Ready(match result {
                    Ok(response) => Ok(response.map(|body| ServerBody::service(body, guard))),
                    Err(e) => {
                        // The service failed: the request is over, not
                        // abandoned.
                        if let Some(g) = guard.as_mut() {
                            g.finish();
                        }
                        Err(e)
                    }
                });
            }
            let Some(watch) = this.watch.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            match watch.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Error::DeadlineExceeded) => {
                    // Drop the handler's future now: its work is over.
                    this.future.set(None);
                    this.watch.set(None);
                    *this.answer = Some(Answer::DeadlineExceeded);
                }
                Poll::Ready(Error::Canceled) => {
                    // Cancelled another way (shutdown): the handler sees it
                    // and answers.
                    this.watch.set(None);
                    return Poll::Pending;
                }
            }
        }
        let Some(answer) = this.answer.take() else {
            return Poll::Pending; // polled after completion
        };
        let (head, text) = answer.response(*this.grpc);
        let guard = this.guard.take();
        Poll::Ready(Ok(head.map(|()| ServerBody::text(text, guard))))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("pending", &self.future.is_some())
            .field("enforced", &self.watch.is_some())
            .field("grpc", &self.grpc)
            .finish()
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // The service's own body.
        Service { #[pin] body: B },
        // An answer of the layer's own: a line of text, or nothing (gRPC).
        Text { text: Option<&'static str> },
    }
}

pin_project! {
    /// The response body under [`ServerLayer`]: the service's body, or the
    /// layer's own answer.
    ///
    /// Once it has been sent in full, the request's context is cancelled
    /// with [`Error::Canceled`](cancel_tree::Error::Canceled) (the request
    /// is over); dropped before that (the client went away mid-stream), with
    /// [`ClientDisconnected`].
    pub struct ServerBody<B> {
        #[pin]
        kind: Kind<B>,
        guard: Option<RequestGuard>,
    }
}

impl<B: Body> ServerBody<B> {
    /// The service's body; a body that is already over (empty) ends the
    /// request at once, as the server will never poll it.
    fn service(body: B, mut guard: Option<RequestGuard>) -> ServerBody<B> {
        if body.is_end_stream() {
            finish(&mut guard);
        }
        ServerBody {
            kind: Kind::Service { body },
            guard,
        }
    }

    /// The layer's own answer.
    fn text(text: Option<&'static str>, mut guard: Option<RequestGuard>) -> ServerBody<B> {
        if text.is_none() {
            finish(&mut guard);
        }
        ServerBody {
            kind: Kind::Text { text },
            guard,
        }
    }
}

impl<B> Body for ServerBody<B>
where
    B: Body,
    B::Data: From<&'static str>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Service { mut body } => {
                let frame = std::task::ready!(body.as_mut().poll_frame(cx));
                // Over: sent in full (servers stop polling a body that says
                // it has ended), or failed on the server's side.
                if frame.as_ref().is_none_or(|f| f.is_err()) || body.is_end_stream() {
                    finish(this.guard);
                }
                Poll::Ready(frame)
            }
            KindProj::Text { text } => {
                finish(this.guard);
                Poll::Ready(text.take().map(|t| Ok(Frame::data(B::Data::from(t)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Service { body } => body.is_end_stream(),
            Kind::Text { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Service { body } => body.size_hint(),
            Kind::Text { text } => SizeHint::with_exact(text.map_or(0, |t| t.len() as u64)),
        }
    }
}

fn finish(guard: &mut Option<RequestGuard>) {
    if let Some(g) = guard.as_mut() {
        g.finish();
    }
}

impl<B> fmt::Debug for ServerBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBody")
            .field(
                "kind",
                &match self.kind {
                    Kind::Service { .. } => "service",
                    Kind::Text { .. } => "layer",
                },
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_is_the_earliest_of_header_max_and_default() {
        let root = Context::background();
        let ms = Duration::from_millis;
        let plain = ServerLayer::new(root.clone());
        assert_eq!(plain.timeout_for(None), None);
        assert_eq!(plain.timeout_for(Some(ms(5))), Some(ms(5)));
        let max = ServerLayer::new(root.clone()).max_timeout(ms(100));
        assert_eq!(max.timeout_for(None), Some(ms(100)));
        assert_eq!(max.timeout_for(Some(ms(5))), Some(ms(5)));
        assert_eq!(max.timeout_for(Some(ms(500))), Some(ms(100)));
        let default = ServerLayer::new(root.clone()).default_timeout(ms(50));
        assert_eq!(default.timeout_for(None), Some(ms(50)));
        assert_eq!(
            default.timeout_for(Some(ms(500))),
            Some(ms(500)),
            "the caller's timeout replaces the default"
        );
        let both = default.max_timeout(ms(20));
        assert_eq!(both.timeout_for(None), Some(ms(20)));
        assert_eq!(both.timeout_for(Some(ms(10))), Some(ms(10)));
    }
}
