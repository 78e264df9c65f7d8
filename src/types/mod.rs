//! Plain value types shared by every layer above: [`Error`](error::Error),
//! [`Cause`](cause::Cause) and [`Instant`](instant::Instant).

pub(crate) mod cause;
pub(crate) mod error;
pub(crate) mod instant;
