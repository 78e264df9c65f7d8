//! cancel-tree vs tokio-util's CancellationToken (filled in by the benchmark work).
use criterion::{Criterion, criterion_group, criterion_main};

fn is_cancelled(c: &mut Criterion) {
    let mut g = c.benchmark_group("is_cancelled_live");
    let (ctx, _h) = cancel_tree::Context::background().with_cancel();
    g.bench_function("cancel-tree", |b| {
        b.iter(|| std::hint::black_box(&ctx).is_cancelled())
    });
    let tok = tokio_util::sync::CancellationToken::new();
    g.bench_function("tokio-util", |b| {
        b.iter(|| std::hint::black_box(&tok).is_cancelled())
    });
    g.finish();
}

criterion_group!(benches, is_cancelled);
criterion_main!(benches);
