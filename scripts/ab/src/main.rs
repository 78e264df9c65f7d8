//! Child create + drop under one parent, for two builds of cancel-tree in
//! one process: `head` (the working tree) and `base` (a copy of another
//! commit, renamed by `scripts/ab.sh`), plus tokio-util for scale. Rounds of
//! 1,000,000 operations alternate between them, so drift and noise on the
//! machine hit both alike; the medians and minima of the rounds are printed.
//!
//! Environment: `SIBS` live siblings under the parent (default 1000),
//! `ROUNDS` (default 40).

use std::hint::black_box;
use std::time::Instant;

const N: u32 = 1_000_000;

macro_rules! round {
    ($parent:expr) => {{
        let parent = $parent;
        let t = Instant::now();
        for _ in 0..N {
            let (ctx, cancel) = black_box(parent).with_cancel();
            black_box(&ctx);
            drop(cancel);
            drop(ctx);
        }
        t.elapsed().as_nanos() as f64 / f64::from(N)
    }};
}

fn var(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let sibs = var("SIBS", 1000);
    let rounds = var("ROUNDS", 40).max(1);
    let (ph, _hh) = head::Context::background().with_cancel();
    let (pb, _hb) = base::Context::background().with_cancel();
    let tok = tokio_util::sync::CancellationToken::new();
    let _s1: Vec<_> = (0..sibs).map(|_| ph.with_cancel()).collect();
    let _s2: Vec<_> = (0..sibs).map(|_| pb.with_cancel()).collect();
    let _s3: Vec<_> = (0..sibs).map(|_| tok.child_token()).collect();
    let (mut h, mut b, mut t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        h.push(round!(&ph));
        b.push(round!(&pb));
        let start = Instant::now();
        for _ in 0..N {
            drop(black_box(black_box(&tok).child_token()));
        }
        t.push(start.elapsed().as_nanos() as f64 / f64::from(N));
    }
    for v in [&mut h, &mut b, &mut t] {
        v.sort_by(f64::total_cmp);
    }
    let med = |v: &[f64]| v[v.len() / 2];
    println!("child create+drop, {sibs} siblings, {rounds} rounds of {N} (ns/op)");
    println!("  head        min {:6.2}  median {:6.2}", h[0], med(&h));
    println!("  base        min {:6.2}  median {:6.2}", b[0], med(&b));
    println!("  tokio-util  min {:6.2}  median {:6.2}", t[0], med(&t));
    println!(
        "  head/base median {:.3}; tokio-util/head median {:.2}, min {:.2}",
        med(&h) / med(&b),
        med(&t) / med(&h),
        t[0] / h[0]
    );
}
