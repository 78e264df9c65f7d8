//! Picks the linker memory map (and a `board` cfg) from the target, and
//! links with cortex-m-rt's `link.x`:
//! thumbv6m-none-eabi -> QEMU microbit (Cortex-M0), anything else ->
//! QEMU mps2-an386 (Cortex-M4F).

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    let board = if target.starts_with("thumbv6m") {
        "microbit"
    } else {
        "mps2_an386"
    };
    let memory = match board {
        "microbit" => "memory-microbit.x",
        _ => "memory-mps2-an386.x",
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy(memory, out.join("memory.x")).unwrap();
    println!("cargo::rustc-link-search={}", out.display());
    // cortex-m-rt's linker script (it INCLUDEs memory.x). Passed here rather
    // than in .cargo/config.toml's rustflags, which a RUSTFLAGS variable in
    // the environment would silently replace.
    println!("cargo::rustc-link-arg-bins=-Tlink.x");
    println!("cargo::rustc-check-cfg=cfg(board, values(\"microbit\", \"mps2_an386\"))");
    println!("cargo::rustc-cfg=board=\"{board}\"");
    println!("cargo::rerun-if-changed=memory-microbit.x");
    println!("cargo::rerun-if-changed=memory-mps2-an386.x");
    println!("cargo::rerun-if-changed=build.rs");
}
