//! The client layer: an outgoing call carries its caller's deadline as
//! `grpc-timeout`, is never sent once the caller's context has ended, and
//! is abandoned the moment it ends.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use cancel_tree::{Cause, Context, DoneOwned, Error};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::wire;

/// The error type of [`ClientService`]: the inner service's error, or the
/// caller's context ending ([`ContextError`], or for gRPC calls with the
/// `tonic` feature a `tonic::Status` whose source is the [`ContextError`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A [`tower_layer::Layer`] for outgoing calls (a hyper client, a tonic
/// `Channel`) made on behalf of a caller's [`Context`].
///
/// The caller attaches its context to the request's extensions
/// ([`RequestContextExt::with_context`](crate::RequestContextExt::with_context)).
/// Then, for that call:
///
/// * **Deadline out**: the `grpc-timeout` header is set to the context's
///   remaining time (unless the request already carries a shorter one), so
///   the next service's [`ServerLayer`](crate::ServerLayer) gives its
///   request the same deadline.
/// * **Fail fast**: a context that has already ended, or whose deadline has
///   passed, fails the call with its error without sending anything: the
///   inner service is not called.
/// * **Abort**: when the context ends while the call is in flight (or while
///   its response body is being read), the call is dropped (which resets an
///   HTTP/2 stream, so the callee sees its client go away) and fails with
///   the context's error and cause.
///
/// Requests without a context pass through untouched. The context is
/// watched from `call` on: readiness (`poll_ready`, e.g. a `Channel`
/// still connecting) is not raced against it.
///
/// The errors are [`BoxError`]s: for a gRPC request (content type
/// `application/grpc…`) with the `tonic` feature, a `tonic::Status` with
/// code `DEADLINE_EXCEEDED` or `CANCELLED`, which tonic's client hands to
/// the caller as it is; otherwise a [`ContextError`]. Either way the
/// [`ContextError`], and through it the cause, is reachable with
/// `downcast_ref` (on the error, or on the `Status`'s `source()`).
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use cancel_tree::{Context, Error};
/// use cancel_tree_tower::{ClientLayer, ContextError, RequestContextExt};
/// use std::convert::Infallible;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// // Stands in for a hyper client: echoes the grpc-timeout it was sent.
/// let send = service_fn(|req: http::Request<String>| async move {
///     let sent = req.headers().get("grpc-timeout").cloned();
///     Ok::<_, Infallible>(http::Response::new(format!("{sent:?}")))
/// });
/// let client = ServiceBuilder::new().layer(ClientLayer::new()).service(send);
///
/// let (caller, _c) = Context::background().with_timeout(std::time::Duration::from_secs(2));
/// let request = http::Request::new(String::new()).with_context(&caller);
/// let response = client.clone().oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 200); // sent, with about 2 s left
///
/// let (gone, cancel) = Context::background().with_cancel();
/// cancel.cancel();
/// let request = http::Request::new(String::new()).with_context(&gone);
/// let err = client.oneshot(request).await.unwrap_err(); // nothing sent
/// assert_eq!(err.downcast_ref::<ContextError>().unwrap().error(), Error::Canceled);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientLayer {
    _private: (),
}

impl ClientLayer {
    /// The layer.
    pub fn new() -> ClientLayer {
        ClientLayer { _private: () }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService { inner }
    }
}

/// The service [`ClientLayer`] wraps around `S`.
#[derive(Clone, Debug)]
pub struct ClientService<S> {
    inner: S,
}

impl<S> ClientService<S> {
    /// `inner` behind the client layer (the same as
    /// `ClientLayer::new().layer(inner)`).
    pub fn new(inner: S) -> ClientService<S> {
        ClientService { inner }
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ClientService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ClientBody<ResBody>>;
    type Error = BoxError;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> ClientFuture<S::Future> {
        let Some(ctx) = request.extensions().get::<Context>().cloned() else {
            return ClientFuture::called(self.inner.call(request), None, false);
        };
        let grpc = wire::is_grpc(request.headers());
        if let Some(e) = ContextError::from_context(&ctx) {
            return ClientFuture::failed(e.boxed(grpc));
        }
        if let Some(left) = wire::remaining(&ctx) {
            if left.is_zero() {
                // Due, and the clock has not fired it yet.
                return ClientFuture::failed(ContextError::expired().boxed(grpc));
            }
            wire::set_outgoing_timeout(request.headers_mut(), left);
        }
        ClientFuture::called(self.inner.call(request), Some(ctx.done_owned()), grpc)
    }
}

pin_project! {
    /// The response future of [`ClientService`].
    pub struct ClientFuture<F> {
        #[pin]
        future: Option<F>,
        // The caller's context (none: the request carried none).
        #[pin]
        done: Option<DoneOwned>,
        failed: Option<BoxError>,
        grpc: bool,
    }
}

impl<F> ClientFuture<F> {
    fn called(future: F, done: Option<DoneOwned>, grpc: bool) -> ClientFuture<F> {
        ClientFuture {
            future: Some(future),
            done,
            failed: None,
            grpc,
        }
    }

    fn failed(error: BoxError) -> ClientFuture<F> {
        ClientFuture {
            future: None,
            done: None,
            failed: Some(error),
            grpc: false,
        }
    }
}

impl<F, B, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ClientBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Err(e));
        }
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            return Poll::Pending; // polled after completion
        };
        // Checked before every poll of the call, as `Context::run` does, so
        // an always-ready call still stops; a deadline that has passed
        // counts even if its clock has not fired it yet (a busy machine can
        // run the callee's answer to an expired call first).
        let ended = this
            .done
            .as_ref()
            .as_pin_ref()
            .and_then(|d| ended_or_due(d.get_ref().context()));
        if let Some(e) = ended {
            this.future.set(None);
            this.done.set(None);
            return Poll::Ready(Err(e.boxed(*this.grpc)));
        }
        if let Poll::Ready(result) = future.poll(cx) {
            let ctx = this
                .done
                .as_ref()
                .as_pin_ref()
                .map(|d| d.get_ref().context());
            let grpc = *this.grpc;
            let result = match result {
                Ok(response) => {
                    // The body is watched by a fresh waiter on the same
                    // context.
                    let watch = ctx.map(Context::done_owned);
                    Ok(response.map(|body| ClientBody {
                        body,
                        done: watch,
                        grpc,
                        ended: false,
                    }))
                }
                // A call that failed once its caller's deadline had passed
                // failed because of it (e.g. tonic's own timer on the same
                // `grpc-timeout` fired first).
                Err(e) => Err(match ctx.and_then(ended_or_due) {
                    Some(ended) => ended.boxed(grpc),
                    None => e.into(),
                }),
            };
            this.future.set(None);
            this.done.set(None);
            return Poll::Ready(result);
        }
        let Some(mut done) = this.done.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        let Poll::Ready(error) = done.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        let e = ContextError::from_context(done.context()).unwrap_or(ContextError::bare(error));
        // Drop the call: an HTTP/2 stream is reset, the callee sees its
        // client go away.
        this.future.set(None);
        this.done.set(None);
        Poll::Ready(Err(e.boxed(*this.grpc)))
    }
}

impl<F> fmt::Debug for ClientFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientFuture")
            .field("pending", &self.future.is_some())
            .field("context", &self.done.as_ref().map(DoneOwned::context))
            .field("grpc", &self.grpc)
            .finish()
    }
}

pin_project! {
    /// The response body under [`ClientLayer`]: the callee's body, cut off
    /// with the context's error (a [`BoxError`], as the call's) once the
    /// caller's context ends.
    pub struct ClientBody<B> {
        #[pin]
        body: B,
        #[pin]
        done: Option<DoneOwned>,
        grpc: bool,
        ended: bool,
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        // The context's error if it has ended (or its deadline passed);
        // with `wait`, also registers to be woken when it ends.
        let cut = |mut done: Pin<&mut DoneOwned>, cx: &mut TaskContext<'_>, wait: bool| {
            if let Some(e) = ended_or_due(done.context()) {
                return Some(e);
            }
            if !wait {
                return None;
            }
            match done.as_mut().poll(cx) {
                Poll::Ready(error) => Some(
                    ContextError::from_context(done.context()).unwrap_or(ContextError::bare(error)),
                ),
                Poll::Pending => None,
            }
        };
        if let Some(done) = this.done.as_mut().as_pin_mut()
            && let Some(e) = cut(done, cx, false)
        {
            *this.ended = true;
            this.done.set(None);
            return Poll::Ready(Some(Err(e.boxed(*this.grpc))));
        }
        match this.body.poll_frame(cx) {
            Poll::Ready(frame) => {
                let frame = match frame {
                    Some(Err(e)) => {
                        let ctx = this
                            .done
                            .as_ref()
                            .as_pin_ref()
                            .map(|d| d.get_ref().context());
                        Some(Err(match ctx.and_then(ended_or_due) {
                            Some(ended) => ended.boxed(*this.grpc),
                            None => e.into(),
                        }))
                    }
                    Some(Ok(f)) => Some(Ok(f)),
                    None => None,
                };
                if frame.as_ref().is_none_or(Result::is_err) {
                    *this.ended = frame.is_some();
                    this.done.set(None);
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                if let Some(done) = this.done.as_mut().as_pin_mut()
                    && let Some(e) = cut(done, cx, true)
                {
                    *this.ended = true;
                    this.done.set(None);
                    return Poll::Ready(Some(Err(e.boxed(*this.grpc))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.body.size_hint()
        }
    }
}

impl<B> fmt::Debug for ClientBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBody")
            .field("context", &self.done.as_ref().map(DoneOwned::context))
            .field("ended", &self.ended)
            .finish()
    }
}

/// The error of a context that has ended, or whose deadline has passed
/// before its clock fired it.
fn ended_or_due(ctx: &Context) -> Option<ContextError> {
    ContextError::from_context(ctx).or_else(|| {
        wire::remaining(ctx)
            .is_some_and(|left| left.is_zero())
            .then(ContextError::expired)
    })
}

/// A call that failed because its caller's context ended: the context's
/// [`Error`] and [`Cause`].
///
/// ```
/// use cancel_tree::{Cause, Context, Error};
/// use cancel_tree_tower::ContextError;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// assert!(ContextError::from_context(&ctx).is_none()); // still live
/// cancel.cancel_with(Cause::msg("user gave up"));
/// let e = ContextError::from_context(&ctx).unwrap();
/// assert_eq!(e.error(), Error::Canceled);
/// assert_eq!(e.to_string(), "context canceled: user gave up");
/// assert_eq!(Error::from(e), Error::Canceled);
/// ```
#[derive(Clone, Debug)]
pub struct ContextError {
    error: Error,
    cause: Cause,
}

impl ContextError {
    /// The error of an ended context; `None` while it is live.
    pub fn from_context(ctx: &Context) -> Option<ContextError> {
        let error = ctx.err()?;
        Some(ContextError {
            error,
            cause: ctx.cause().unwrap_or_else(|| error.into()),
        })
    }

    /// `error`, with itself as the cause.
    fn bare(error: Error) -> ContextError {
        ContextError {
            error,
            cause: error.into(),
        }
    }

    /// A deadline that has passed, before (or without) the clock firing it.
    fn expired() -> ContextError {
        ContextError::bare(Error::DeadlineExceeded)
    }

    /// [`Error::Canceled`] or [`Error::DeadlineExceeded`].
    pub fn error(&self) -> Error {
        self.error
    }

    /// Why the context ended (the error itself when no cause was given).
    pub fn cause(&self) -> &Cause {
        &self.cause
    }

    /// As the client layer's error: a `tonic::Status` for gRPC calls (with
    /// the `tonic` feature), so tonic passes it on as it is.
    fn boxed(self, grpc: bool) -> BoxError {
        #[cfg(feature = "tonic")]
        if grpc {
            return Box::new(::tonic::Status::from(self));
        }
        let _ = grpc;
        Box::new(self)
    }

    /// Whether the cause says more than the error.
    fn has_own_cause(&self) -> bool {
        self.cause.as_error() != Some(self.error)
    }
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.has_own_cause() {
            write!(f, "{}: {}", self.error, self.cause)
        } else {
            fmt::Display::fmt(&self.error, f)
        }
    }
}

impl std::error::Error for ContextError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.has_own_cause().then(|| self.cause.as_dyn_error() as _)
    }
}

impl From<ContextError> for Error {
    fn from(e: ContextError) -> Error {
        e.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestContextExt;
    use cancel_tree::{Clock, Instant, Timers};
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;
    use tower::{ServiceExt, service_fn};

    /// A clock whose time moves only when told, and that never fires: a
    /// timer thread that has not been scheduled yet.
    struct LateClock {
        nanos: AtomicU64,
        timers: Timers,
    }

    impl Clock for LateClock {
        fn now(&self) -> Instant {
            Instant::from_nanos(self.nanos.load(Ordering::Acquire))
        }
        fn timers(&self) -> &Timers {
            &self.timers
        }
        fn set_alarm(&self, _at: Option<Instant>) {}
    }

    #[tokio::test]
    async fn a_deadline_that_passed_counts_before_its_clock_fires_it() {
        static CLOCK: LateClock = LateClock {
            nanos: AtomicU64::new(0),
            timers: Timers::new(),
        };
        let root = Context::background_with_clock(&CLOCK);
        let (ctx, _c) = root.with_timeout(Duration::from_millis(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let mut client = ClientLayer::new().layer(service_fn(move |req: Request<String>| {
            counter.fetch_add(1, Ordering::SeqCst);
            let sent = req.headers()["grpc-timeout"].clone();
            async move { Ok::<_, Infallible>(Response::new(sent.to_str().unwrap().to_string())) }
        }));

        // Sent with its deadline; the deadline passes before the answer is
        // polled, unfired: the call fails all the same.
        let request = Request::new(String::new()).with_context(&ctx);
        let call = client.ready().await.unwrap().call(request);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        CLOCK.nanos.store(20_000_000, Ordering::Release);
        assert_eq!(ctx.err(), None, "the clock has not fired it");
        let err = call.await.expect_err("past its deadline");
        let err = err.downcast_ref::<ContextError>().unwrap();
        assert_eq!(err.error(), Error::DeadlineExceeded);

        // And the next call is not sent at all.
        let request = Request::new(String::new()).with_context(&ctx);
        let err = client.oneshot(request).await.expect_err("no time left");
        assert_eq!(
            err.downcast_ref::<ContextError>().unwrap().error(),
            Error::DeadlineExceeded
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_deadline_goes_out_as_grpc_timeout() {
        static CLOCK: LateClock = LateClock {
            nanos: AtomicU64::new(0),
            timers: Timers::new(),
        };
        let root = Context::background_with_clock(&CLOCK);
        let (ctx, _c) = root.with_timeout(Duration::from_millis(1500));
        CLOCK.nanos.store(500_000_000, Ordering::Release);
        let client = ClientLayer::new().layer(service_fn(|req: Request<String>| async move {
            let sent = req.headers()["grpc-timeout"].to_str().unwrap().to_string();
            Ok::<_, Infallible>(Response::new(sent))
        }));
        let response = client
            .oneshot(Request::new(String::new()).with_context(&ctx))
            .await
            .unwrap();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, "1000000u", "1 s left, in microseconds");
    }
}
