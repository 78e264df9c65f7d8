//! Child create + drop under one parent, cancel-tree against tokio-util,
//! over 24 heap layouts per process: before each parent is made, `pad`
//! 64-byte blocks are allocated and kept, and `cached` contexts are made and
//! dropped (their nodes go to the thread's cache, whose order the loop then
//! reuses). Where the blocks land relative to each other changes the cost of
//! a create + drop on the 2-core benchmark VM by up to 1.8x (and by process,
//! since the heap's base is randomised); criterion measures one layout.
//!
//! ```sh
//! cargo run --release --example layout_sweep
//! ```

use std::hint::black_box;
use std::time::Instant;

use cancel_tree::Context;
use tokio_util::sync::CancellationToken;

const N: u32 = 1_000_000;

/// Best of 5 rounds of `N` create + drops, ns per operation.
fn best_of(mut round: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            round();
            t.elapsed().as_nanos() as f64 / f64::from(N)
        })
        .fold(f64::MAX, f64::min)
}

/// Separate 64-byte heap blocks (boxed on purpose: each is one allocation).
#[allow(clippy::vec_box)]
fn padding(pad: usize) -> Vec<Box<[u8; 64]>> {
    (0..pad).map(|_| Box::new([0u8; 64])).collect()
}

fn cancel_tree(pad: usize, cached: usize, sibs: usize) -> f64 {
    cancel_tree::trim_thread_cache();
    let _padding = padding(pad);
    drop(
        (0..cached)
            .map(|_| Context::background().with_cancel())
            .collect::<Vec<_>>(),
    );
    let (parent, _handle) = Context::background().with_cancel();
    let _sibs: Vec<_> = (0..sibs).map(|_| parent.with_cancel()).collect();
    best_of(|| {
        for _ in 0..N {
            let (ctx, cancel) = black_box(&parent).with_cancel();
            black_box(&ctx);
            drop(cancel);
            drop(ctx);
        }
    })
}

fn tokio_util(pad: usize, cached: usize, sibs: usize) -> f64 {
    let _padding = padding(pad);
    drop(
        (0..cached)
            .map(|_| CancellationToken::new())
            .collect::<Vec<_>>(),
    );
    let parent = CancellationToken::new();
    let _sibs: Vec<_> = (0..sibs).map(|_| parent.child_token()).collect();
    best_of(|| {
        for _ in 0..N {
            drop(black_box(black_box(&parent).child_token()));
        }
    })
}

fn main() {
    for sibs in [0usize, 1000] {
        let (mut ct, mut tu, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for pad in 0..4 {
            for cached in 0..6 {
                let a = cancel_tree(pad, cached, sibs);
                let b = tokio_util(pad, cached, sibs);
                ct.push(a);
                tu.push(b);
                ratio.push(b / a);
            }
        }
        for v in [&mut ct, &mut tu, &mut ratio] {
            v.sort_by(f64::total_cmp);
        }
        let med = |v: &[f64]| v[v.len() / 2];
        let at_least = ratio.iter().filter(|&&r| r >= 2.5).count();
        println!(
            "{sibs:4} siblings: cancel-tree {:.1} ns median ({:.1} - {:.1}), tokio-util {:.1} ns median; \
             tokio-util / cancel-tree median {:.2}x ({:.2} - {:.2}); {at_least}/{} layouts >= 2.5x",
            med(&ct),
            ct[0],
            ct[ct.len() - 1],
            med(&tu),
            med(&ratio),
            ratio[0],
            ratio[ratio.len() - 1],
            ratio.len()
        );
    }
}
