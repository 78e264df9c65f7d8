//! Generates the `chain` gRPC service from `proto/chain.proto` with protox (a
//! protobuf compiler in Rust), so building needs no `protoc` installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/chain.proto");
    let descriptors = protox::compile(["chain.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Tests and examples build their own `Channel`s (with layers).
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
