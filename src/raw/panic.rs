//! Running user callbacks (wakers, `after_func` closures) so that a panic in
//! one cannot leave the tree half-updated.

/// Collects the first panic of the callbacks it runs. With `std` each panic
/// is caught, so the caller finishes its work, and the first one is resumed
/// afterwards ([`resume`](Panics::resume)). Without `std` panics are not
/// caught: callers finish their work in a `Drop` instead.
#[derive(Default)]
pub(crate) struct Panics {
    #[cfg(feature = "std")]
    first: Option<std::boxed::Box<dyn core::any::Any + Send + 'static>>,
}

impl Panics {
    /// Runs `f`, keeping its panic (the first one only) for later.
    pub(crate) fn call(&mut self, f: impl FnOnce()) {
        #[cfg(feature = "std")]
        {
            if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                if self.first.is_none() {
                    self.first = Some(payload);
                }
            }
        }
        #[cfg(not(feature = "std"))]
        f();
    }

    /// Re-raises the first caught panic, unless this thread is already
    /// unwinding (a `CancelHandle` dropped during a panic), where a second
    /// panic would abort: then the payload is dropped.
    pub(crate) fn resume(self) {
        #[cfg(feature = "std")]
        if let Some(payload) = self.first {
            if !std::thread::panicking() {
                std::panic::resume_unwind(payload);
            }
        }
    }
}

#[cfg(all(test, feature = "std", not(cancel_tree_loom)))]
mod tests {
    use super::Panics;

    #[test]
    fn runs_every_callback_and_resumes_the_first_panic() {
        let mut ran = 0;
        let mut p = Panics::default();
        p.call(|| ran += 1);
        p.call(|| panic!("first"));
        p.call(|| panic!("second"));
        p.call(|| ran += 1);
        assert_eq!(ran, 2);
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.resume()))
            .expect_err("the first panic is resumed");
        assert_eq!(err.downcast_ref::<&str>(), Some(&"first"));
    }
}
