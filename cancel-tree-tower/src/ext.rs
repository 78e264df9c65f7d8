//! Reading a request's context, and attaching a caller's context to an
//! outgoing request.

use cancel_tree::Context;

/// A request's [`Context`], kept in its extensions: put there by
/// [`ServerLayer`](crate::ServerLayer) for incoming requests, and by the
/// caller (with [`with_context`](RequestContextExt::with_context)) for
/// outgoing ones, which [`ClientLayer`](crate::ClientLayer) reads.
///
/// Implemented for `http::Request`, `http::request::Parts`,
/// `http::Extensions` and, with the `tonic` feature, `tonic::Request`
/// (tonic carries a request's extensions to and from the HTTP request).
///
/// ```
/// use cancel_tree::Context;
/// use cancel_tree_tower::RequestContextExt;
///
/// let (caller, _c) = Context::background().with_cancel();
/// let request = http::Request::new(()).with_context(&caller);
/// assert!(request.context().is_some());
/// assert!(http::Request::new(()).context().is_none());
/// ```
pub trait RequestContextExt {
    /// The request's context, if it has one.
    fn context(&self) -> Option<&Context>;

    /// Sets the request's context (replacing any).
    fn set_context(&mut self, ctx: Context);

    /// The request with `ctx` (a clone) as its context: for an outgoing
    /// call made on behalf of `ctx`.
    #[must_use]
    fn with_context(mut self, ctx: &Context) -> Self
    where
        Self: Sized,
    {
        self.set_context(ctx.clone());
        self
    }
}

impl RequestContextExt for http::Extensions {
    fn context(&self) -> Option<&Context> {
        self.get::<Context>()
    }

    fn set_context(&mut self, ctx: Context) {
        self.insert(ctx);
    }
}

impl<B> RequestContextExt for http::Request<B> {
    fn context(&self) -> Option<&Context> {
        self.extensions().context()
    }

    fn set_context(&mut self, ctx: Context) {
        self.extensions_mut().set_context(ctx);
    }
}

impl RequestContextExt for http::request::Parts {
    fn context(&self) -> Option<&Context> {
        self.extensions.context()
    }

    fn set_context(&mut self, ctx: Context) {
        self.extensions.set_context(ctx);
    }
}

#[cfg(feature = "tonic")]
impl<T> RequestContextExt for ::tonic::Request<T> {
    fn context(&self) -> Option<&Context> {
        self.extensions().context()
    }

    fn set_context(&mut self, ctx: Context) {
        self.extensions_mut().set_context(ctx);
    }
}
