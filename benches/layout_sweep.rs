//! Child create + drop under one parent, cancel-tree against tokio-util,
//! over many heap layouts in one process, measured **interleaved**.
//!
//! A layout is where the parent (with its siblings) and the recycled child
//! block sit in memory. cancel-tree: 6 parents, each built after a
//! different amount of padding, times 4 child blocks, each handed to the
//! thread's node cache alone before its rounds (the loop then reuses that
//! one block); 24 layouts. tokio-util: 6 parents built the same way (its
//! children come from the allocator).
//!
//! Every layout lives at once and the rounds go round-robin over all of
//! them, many times. On a shared host, slow stretches last seconds; a sweep
//! that measured one layout after another would blame them on whichever
//! layouts they hit. Round-robin spreads them over all layouts alike, so the
//! per-layout minimum and median show the layout's own cost.
//!
//! ```sh
//! cargo bench --bench layout_sweep
//! ```

use std::hint::black_box;
use std::time::Instant;

use cancel_tree::{CancelHandle, Context};
use tokio_util::sync::CancellationToken;

/// Create + drops per round (3-10 ms).
const N: u32 = 200_000;
/// Rounds per layout.
const ROUNDS: usize = 15;
const PARENTS: usize = 6;
const BLOCKS: usize = 4;

fn per_op(start: Instant) -> f64 {
    start.elapsed().as_nanos() as f64 / f64::from(N)
}

fn cancel_tree_round(parent: &Context) -> f64 {
    let start = Instant::now();
    for _ in 0..N {
        let (ctx, cancel) = black_box(parent).with_cancel();
        black_box(&ctx);
        drop(cancel);
        drop(ctx);
    }
    per_op(start)
}

fn tokio_util_round(parent: &CancellationToken) -> f64 {
    let start = Instant::now();
    for _ in 0..N {
        drop(black_box(black_box(parent).child_token()));
    }
    per_op(start)
}

/// `pad` separate 64-byte heap blocks (boxed on purpose: one allocation
/// each), kept while the layout lives.
#[allow(clippy::vec_box)]
fn padding(pad: usize) -> Vec<Box<[u8; 64]>> {
    (0..pad).map(|_| Box::new([0u8; 64])).collect()
}

/// Minimum and median.
fn min_med(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

fn sweep(sibs: usize) {
    let mut keep = Vec::new();
    let mut ct_parents = Vec::new();
    let mut tu_parents = Vec::new();
    for i in 0..PARENTS {
        keep.push(padding(i * 3));
        let (parent, handle) = Context::background().with_cancel();
        let siblings: Vec<_> = (0..sibs).map(|_| parent.with_cancel()).collect();
        ct_parents.push((parent, handle, siblings));
        keep.push(padding(i * 2 + 1));
        let parent = CancellationToken::new();
        let siblings: Vec<_> = (0..sibs).map(|_| parent.child_token()).collect();
        tu_parents.push((parent, siblings));
    }
    // The child blocks: each held by a live scope between its rounds.
    let mut blocks: Vec<Option<(Context, CancelHandle)>> = (0..BLOCKS)
        .map(|i| {
            keep.push(padding(i % 3));
            Some(Context::background().with_cancel())
        })
        .collect();
    cancel_tree::trim_thread_cache();

    let mut ct = vec![Vec::new(); PARENTS * BLOCKS];
    let mut tu = vec![Vec::new(); PARENTS];
    for _ in 0..ROUNDS {
        for p in 0..PARENTS {
            for b in 0..BLOCKS {
                // Block `b` becomes the cache's only block; the round's
                // children all reuse it; then a live scope takes it back.
                drop(blocks[b].take());
                ct[p * BLOCKS + b].push(cancel_tree_round(&ct_parents[p].0));
                blocks[b] = Some(Context::background().with_cancel());
            }
            tu[p].push(tokio_util_round(&tu_parents[p].0));
        }
    }

    let ct: Vec<(f64, f64)> = ct.iter_mut().map(|v| min_med(v)).collect();
    let tu: Vec<(f64, f64)> = tu.iter_mut().map(|v| min_med(v)).collect();
    let mut ratios: Vec<f64> = (0..PARENTS * BLOCKS)
        .map(|l| tu[l / BLOCKS].1 / ct[l].1)
        .collect();
    let (ratio_min, ratio_med) = min_med(&mut ratios);
    let at_least = ratios.iter().filter(|&&r| r >= 2.5).count();
    // The same from each layout's fastest round: what the layout costs
    // when the host leaves it alone.
    let mut best: Vec<f64> = (0..PARENTS * BLOCKS)
        .map(|l| tu[l / BLOCKS].0 / ct[l].0)
        .collect();
    let (best_min, best_med) = min_med(&mut best);
    let best_at_least = best.iter().filter(|&&r| r >= 2.5).count();
    let range = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        (x[0], x[x.len() / 2], x[x.len() - 1])
    };
    let (a, b, c) = range(&ct, |x| x.0);
    let (d, e, f) = range(&ct, |x| x.1);
    let (g, _, h) = range(&tu, |x| x.1);
    println!(
        "{sibs} siblings, {} cancel-tree layouts x {ROUNDS} rounds:",
        ct.len()
    );
    println!(
        "  cancel-tree per-layout min    {a:.1} .. {b:.1} .. {c:.1} ns (lowest, median, highest)"
    );
    println!("  cancel-tree per-layout median {d:.1} .. {e:.1} .. {f:.1} ns");
    println!("  tokio-util  per-layout median {g:.1} .. {h:.1} ns ({PARENTS} layouts)");
    println!(
        "  tokio-util / cancel-tree, layout medians: median {ratio_med:.2}x, lowest {ratio_min:.2}x; \
         {at_least}/{} layouts >= 2.5x",
        ratios.len()
    );
    println!(
        "  tokio-util / cancel-tree, layout minima:  median {best_med:.2}x, lowest {best_min:.2}x; \
         {best_at_least}/{} layouts >= 2.5x",
        best.len()
    );
}

fn main() {
    sweep(0);
    sweep(1000);
}
