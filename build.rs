//! Sets `cfg(cancel_tree_shards)` where a parent's child list is sharded
//! under contention: with `std` (thread-locals pick a shard) on 64-bit
//! targets (the state word has room for a shard index). See `src/shards.rs`.
//! `CANCEL_TREE_NO_SHARDS=1` turns it off (CI tests that configuration, the
//! one 32-bit std targets get).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(cancel_tree_shards)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CANCEL_TREE_NO_SHARDS");
    let off = std::env::var_os("CANCEL_TREE_NO_SHARDS").is_some_and(|v| v != "0");
    let std = std::env::var_os("CARGO_FEATURE_STD").is_some();
    let width = std::env::var("CARGO_CFG_TARGET_POINTER_WIDTH").unwrap_or_default();
    if std && width == "64" && !off {
        println!("cargo::rustc-cfg=cancel_tree_shards");
    }
}
