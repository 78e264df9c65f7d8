//! The `chain.Hop` gRPC service (`proto/chain.proto`) that
//! `cancel-tree-tower`'s tests, examples and benchmarks run: a chain of
//! services A → B → C, each reporting its request's deadline and calling the
//! next. Code generated at build time; not published.
#![allow(missing_docs)] // generated code

tonic::include_proto!("chain");
