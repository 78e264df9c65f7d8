#!/usr/bin/env python3
"""Table and chart for `cargo bench --bench compare` (python3 stdlib only).

Reads criterion's output (target/criterion/<group>/<function>/new/
{benchmark,estimates}.json, the median point estimate in ns), prints markdown
tables (headline ratios, every measurement, the targets), and writes an SVG
bar chart of the ratio tokio-util / cancel-tree per scenario (log scale;
right of 1x means cancel-tree is faster).

    python3 scripts/bench_chart.py [--criterion DIR ...] [--svg FILE]

Defaults: DIR = target/criterion (or $CARGO_TARGET_DIR/criterion),
FILE = docs/benchmarks.svg. With several DIRs (copies of target/criterion
from separate runs) each benchmark's value is the smallest of its medians
(the run least disturbed by other load on the machine), and the table of
every measurement shows the spread (largest / smallest median). For the
two-thread groups only runs whose threads really ran in parallel count
(CPU time / wall time >= 1.8, from the parallelism.json the bench writes).
The headline also shows the range of the ratio within single runs, where
both libraries were measured back to back.
"""

import argparse
import json
import math
import os
import sys

# (group, label, cancel-tree function, tokio-util function)
HEADLINE = [
    ("is_cancelled_live", "is_cancelled (live)", "cancel-tree", "tokio-util"),
    ("is_cancelled_cancelled", "is_cancelled (cancelled)", "cancel-tree", "tokio-util"),
    ("clone_drop", "clone + drop", "cancel-tree", "tokio-util"),
    ("child_create_drop", "child create+drop", "cancel-tree", "tokio-util"),
    ("child_create_drop", "child create+drop (detach / cancel)", "cancel-tree-detach", "tokio-util-cancel"),
    ("child_create_drop_1k_siblings", "child create+drop, 1k siblings", "cancel-tree", "tokio-util"),
    ("child_create_drop_2threads", "child create+drop, 2 threads", "cancel-tree", "tokio-util"),
    ("child_create_drop_2threads_1k_siblings", "child create+drop, 2 threads, 1k sib.", "cancel-tree", "tokio-util"),
    ("cancel_fanout_100k", "cancel fan-out 100k", "cancel-tree", "tokio-util"),
    ("cancel_tree_4x10", "cancel 4-ary tree, 10 levels", "cancel-tree", "tokio-util"),
    ("cancel_chain_1m", "cancel chain 1M", "cancel-tree", "tokio-util"),
    ("build_fanout_100k", "build fan-out 100k", "cancel-tree", "tokio-util"),
    ("build_tree_4x10", "build 4-ary tree, 10 levels", "cancel-tree", "tokio-util"),
    ("build_chain_1m", "build chain 1M", "cancel-tree", "tokio-util"),
    ("done_poll_live", "done() create+poll+drop (live)", "cancel-tree", "tokio-util"),
    ("done_poll_cancelled", "done() create+poll+drop (cancelled)", "cancel-tree", "tokio-util"),
    ("wake_latency", "wake latency cancel -> blocked thread", "cancel-tree", "tokio-util"),
    ("wake_inline", "derive+register+cancel+wake, 1 thread", "cancel-tree", "tokio-util"),
    ("timeout_create_cancel", "timeout create+cancel (StdClock)", "cancel-tree-std", "tokio-util"),
    ("timeout_create_cancel", "timeout create+cancel (ManualClock)", "cancel-tree-manual", "tokio-util"),
    ("timeout_create_cancel_100k_pending", "timeout, 100k pending (StdClock)", "cancel-tree-std", "tokio-util"),
    ("timeout_create_cancel_100k_pending", "timeout, 100k pending (ManualClock)", "cancel-tree-manual", "tokio-util"),
]

# Target ratio (tokio-util / cancel-tree) per headline row, drawn on the chart.
TARGET = {
    "child create+drop": 2.5,
    "child create+drop, 1k siblings": 2.5,
    "child create+drop, 2 threads": 5,
    "child create+drop, 2 threads, 1k sib.": 5,
    "cancel fan-out 100k": 2,
    "cancel 4-ary tree, 10 levels": 2,
    "cancel chain 1M": 2,
    "done() create+poll+drop (live)": 1.5,
    "timeout create+cancel (StdClock)": 1,
    "timeout create+cancel (ManualClock)": 1,
    "timeout, 100k pending (StdClock)": 1,
    "timeout, 100k pending (ManualClock)": 1,
}

THREADS = {
    "child_create_drop_2threads": 2,
    "child_create_drop_2threads_1k_siblings": 2,
}


PARALLEL_OK = 1.8  # CPU time / wall time for 2 threads to count as parallel


def load_parallelism(root):
    """{(group, function): CPU time / wall time} written by the bench for
    its multi-threaded benchmarks (absent for older runs)."""
    try:
        with open(os.path.join(root, "parallelism.json")) as f:
            raw = json.load(f)
    except (OSError, ValueError):
        return {}
    return {tuple(k.split("/", 1)): float(v) for k, v in raw.items()}


def load(root):
    """{(group, function): median_ns}"""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new":
            continue
        if "estimates.json" not in files or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            meta = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        func = meta.get("function_id") or ""
        if meta.get("value_str"):
            func = f"{func}/{meta['value_str']}"
        out[(meta["group_id"], func)] = est["median"]["point_estimate"]
    return out


def combine(runs, pars):
    """Smallest median per benchmark over the runs, and max/min spread.

    For multi-threaded benchmarks only runs where the threads really ran in
    parallel count (if there is any such run): a run where they were
    time-sliced on one core (another process held the other core) has no
    contention and looks deceptively fast.
    Returns (data, spread, parallelism of the chosen value or None).
    """
    data, spread, chosen_par = {}, {}, {}
    for key in set().union(*runs):
        cands = [(r[key], p.get(key)) for r, p in zip(runs, pars) if key in r]
        if any(p is not None for _, p in cands):
            good = [c for c in cands if c[1] is not None and c[1] >= PARALLEL_OK]
            if good:
                cands = good
        vals = [v for v, _ in cands]
        best = min(cands, key=lambda c: c[0])
        data[key] = best[0]
        chosen_par[key] = best[1]
        spread[key] = max(vals) / min(vals)
    return data, spread, chosen_par


def fmt_time(ns):
    if ns is None:
        return "-"
    if ns < 1_000:
        return f"{ns:.2f} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.2f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_ratio(r):
    if r is None:
        return "-"
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x"


def parallel(par, key):
    p = (par or {}).get(key)
    return p is not None and p >= PARALLEL_OK


def headline_rows(data, par=None):
    rows = []
    for group, label, ct, tu in HEADLINE:
        a = data.get((group, ct))
        b = data.get((group, tu))
        ratio = b / a if a and b else None
        if group in THREADS and not (parallel(par, (group, ct)) and parallel(par, (group, tu))):
            label += " [threads not parallel]"
        rows.append((label, group, ct, a, tu, b, ratio))
    return rows


def run_ratios(runs, pars, group, ct, tu):
    """The ratio within each single run (both libraries measured back to
    back); for multi-threaded groups only runs whose threads ran in parallel."""
    out = []
    for r, p in zip(runs, pars):
        a, b = r.get((group, ct)), r.get((group, tu))
        if not (a and b):
            continue
        if group in THREADS and not (parallel(p, (group, ct)) and parallel(p, (group, tu))):
            continue
        out.append(b / a)
    return out


def print_headline(rows, runs=None, pars=None):
    multi = runs is not None and len(runs) > 1
    extra_h = " ratio within single runs (min - max, n) |" if multi else ""
    print(f"| scenario | cancel-tree | tokio-util | tokio-util / cancel-tree |{extra_h}")
    print("|---|---:|---:|---:|" + ("---:|" if multi else ""))
    for label, group, ct, a, tu, b, ratio in rows:
        cname = "" if ct == "cancel-tree" else f" ({ct})"
        tname = "" if tu == "tokio-util" else f" ({tu})"
        extra = ""
        if multi:
            rr = run_ratios(runs, pars, group, ct, tu)
            extra = f" {min(rr):.2f} - {max(rr):.2f} ({len(rr)}) |" if rr else " - |"
        print(f"| {label} | {fmt_time(a)}{cname} | {fmt_time(b)}{tname} | {fmt_ratio(ratio)} |{extra}")


def print_all(data, spread=None, par=None):
    if spread:
        print("| group | function | median | per second | spread over runs (max/min) |")
        print("|---|---|---:|---:|---:|")
    else:
        print("| group | function | median | per second |")
        print("|---|---|---:|---:|")
    for (group, func), ns in sorted(data.items()):
        rate = 1e9 / ns if ns else 0
        note = ""
        if group in THREADS and "1thread" not in func:
            note = " (total, both threads)"
            p = (par or {}).get((group, func))
            if p is not None:
                note += f"; CPU/wall {p:.2f}" + ("" if p >= PARALLEL_OK else " = NOT parallel")
        extra = f" {spread[(group, func)]:.2f}x |" if spread else ""
        print(f"| {group} | {func} | {fmt_time(ns)} | {rate:,.0f}/s{note} |{extra}")


def targets(data, par=None):
    """[(target, measured, met)]; met is True/False/None (no data)."""
    g = lambda grp, fn: data.get((grp, fn))
    out = []

    def ratio(x, y):
        return x / y if x and y else None

    r = ratio(g("is_cancelled_live", "cancel-tree"), g("is_cancelled_live", "atomic-bool"))
    out.append(("is_cancelled within 1.5x of a bare AtomicBool load",
                f"{fmt_ratio(r)} of the AtomicBool load", None if r is None else r <= 1.5))
    for grp, lab in [("child_create_drop", "no siblings"), ("child_create_drop_1k_siblings", "1k siblings")]:
        r = ratio(g(grp, "tokio-util"), g(grp, "cancel-tree"))
        out.append((f"child create+drop >= 2.5x faster ({lab})", f"{fmt_ratio(r)}",
                    None if r is None else r >= 2.5))
    for grp, lab in [("child_create_drop_2threads", "no siblings"),
                     ("child_create_drop_2threads_1k_siblings", "1k siblings")]:
        ok = parallel(par, (grp, "cancel-tree")) and parallel(par, (grp, "tokio-util"))
        caveat = "" if ok else " (threads were time-sliced on one core: not judged)"
        r = ratio(g(grp, "tokio-util"), g(grp, "cancel-tree"))
        out.append((f"2 threads on one parent >= 5x tokio-util's throughput ({lab})", f"{fmt_ratio(r)}{caveat}",
                    None if r is None or not ok else r >= 5))
        two = g(grp, "cancel-tree")
        one = g(grp, "cancel-tree-1thread")
        r = ratio(one, two)
        out.append((f"2 threads faster in total than 1 thread ({lab})",
                    (f"2 threads {1e9 / two / 1e6:.2f} M ops/s vs 1 thread {1e9 / one / 1e6:.2f} M ops/s"
                     if two and one else "-") + caveat,
                    None if r is None or not ok else r > 1))
    for grp in ["cancel_fanout_100k", "cancel_tree_4x10", "cancel_chain_1m"]:
        r = ratio(g(grp, "tokio-util"), g(grp, "cancel-tree"))
        out.append((f"{grp} >= 2x faster", fmt_ratio(r), None if r is None else r >= 2))
    r = ratio(g("done_poll_live", "tokio-util"), g("done_poll_live", "cancel-tree"))
    out.append(("done() create+poll+drop >= 1.5x faster (live)", fmt_ratio(r), None if r is None else r >= 1.5))
    for fn in ["cancel-tree-std", "cancel-tree-manual"]:
        for grp in ["timeout_create_cancel", "timeout_create_cancel_100k_pending"]:
            r = ratio(g(grp, "tokio-util"), g(grp, fn))
            out.append((f"timeout create+cancel at least as fast as tokio-util child+sleep ({fn}, {grp})",
                        fmt_ratio(r), None if r is None else r >= 1))
        a, b = g("timeout_create_cancel", fn), g("timeout_create_cancel_100k_pending", fn)
        r = ratio(b, a)
        # O(log n): 100k pending may cost at most ~log2(100k) = 17x more; we
        # call it met if the growth is below 2x (O(1)-like) and note it.
        out.append((f"timeout create+cancel O(log n) or better ({fn}): 100k pending / 0 pending",
                    fmt_ratio(r), None if r is None else r < math.log2(100_000)))
    return out


def print_targets(ts):
    print("| target | measured | met |")
    print("|---|---|---|")
    for t, m, ok in ts:
        mark = "-" if ok is None else ("yes" if ok else "**no**")
        print(f"| {t} | {m} | {mark} |")


def svg(rows, path):
    rows = [r for r in rows if r[6] is not None]
    if not rows:
        return
    bar_h, gap, left, right, top = 22, 6, 300, 90, 50
    width = 900
    plot_w = width - left - right
    lo = min(0.5, min(r[6] for r in rows) / 1.3)
    hi = max(10.0, max(r[6] for r in rows) * 1.3)
    lmin, lmax = math.log10(lo), math.log10(hi)

    def x(v):
        return left + (math.log10(v) - lmin) / (lmax - lmin) * plot_w

    height = top + len(rows) * (bar_h + gap) + 50
    o = []
    o.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">')
    o.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    o.append(f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">'
             'tokio-util time / cancel-tree time (median; log scale; &gt;1 = cancel-tree faster)</text>')
    # grid
    ticks = [t for t in [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] if lo <= t <= hi]
    y0, y1 = top - 8, top + len(rows) * (bar_h + gap)
    for t in ticks:
        xx = x(t)
        color, w = ("#333", 1.5) if t == 1 else ("#ddd", 1)
        o.append(f'<line x1="{xx:.1f}" y1="{y0}" x2="{xx:.1f}" y2="{y1}" stroke="{color}" stroke-width="{w}"/>')
        o.append(f'<text x="{xx:.1f}" y="{y1 + 16}" text-anchor="middle" fill="#555">{t:g}x</text>')
    one = x(1)
    for i, (label, _g, _ct, _a, _tu, _b, r) in enumerate(rows):
        y = top + i * (bar_h + gap)
        xr = x(r)
        x_start, w = (one, xr - one) if r >= 1 else (xr, one - xr)
        t = TARGET.get(label)
        if r < 1:
            fill = "#cd5c5c"  # tokio-util faster
        elif t is not None and r < t:
            fill = "#e0a030"  # cancel-tree faster, but short of the target
        else:
            fill = "#2e8b57"
        o.append(f'<text x="{left - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{esc(label)}</text>')
        o.append(f'<rect x="{x_start:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" fill="{fill}"/>')
        tx = xr + 5 if r >= 1 else xr - 5
        anchor = "start" if r >= 1 else "end"
        o.append(f'<text x="{tx:.1f}" y="{y + bar_h * 0.7:.1f}" text-anchor="{anchor}">{fmt_ratio(r)}</text>')
        if t is not None and t != 1:
            xt = x(t)
            o.append(f'<line x1="{xt:.1f}" y1="{y - 2}" x2="{xt:.1f}" y2="{y + bar_h + 2}" '
                     'stroke="black" stroke-width="2.5"/>')
    o.append(f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle" fill="#555">'
             'black tick = target ratio; amber = faster but short of target; cargo bench --bench compare; see docs/benchmarks.md</text>')
    o.append("</svg>")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--criterion", nargs="+", default=[os.path.join(target, "criterion")])
    ap.add_argument("--svg", default="docs/benchmarks.svg")
    args = ap.parse_args()
    runs = [load(d) for d in args.criterion]
    pars = [load_parallelism(d) for d in args.criterion]
    data, spread, par = combine(runs, pars)
    if not data:
        sys.exit(f"no criterion results under {args.criterion}; run `cargo bench --bench compare` first")
    rows = headline_rows(data, par)
    print("### Headline: median time per operation\n")
    print_headline(rows, runs, pars)
    print("\n### Targets\n")
    print_targets(targets(data, par))
    print("\n### Every measurement\n")
    print_all(data, spread if len(runs) > 1 else None, par)
    svg(rows, args.svg)
    print(f"\n(chart written to {args.svg})", file=sys.stderr)


if __name__ == "__main__":
    main()
