//! Interoperation with other crates and protocols, on top of the public
//! API: `grpc-timeout` values (feature `http`) and tokio-util's
//! `CancellationToken` (feature `tokio-util`).

#[cfg(feature = "http")]
pub mod grpc;
#[cfg(all(feature = "tokio-util", not(cancel_tree_loom)))]
pub(crate) mod tokio_util;
