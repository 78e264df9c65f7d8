#!/usr/bin/env python3
"""The layer check: src/ is one folder per layer, and a layer may import
only from the layers below it. Fails (exit 1) on an import that points up.

Order, top to bottom: interop, api, tree, clock, types, raw. An import is a
`crate::x` path (in `use` lines or inline, grouped `crate::{x, y}` too) in
code, not comments; a name re-exported at the crate root (`crate::Error`)
counts as the module it comes from (read from src/lib.rs)."""
import os
import re
import sys

LAYERS = ["interop", "api", "tree", "clock", "types", "raw"]
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")


def code(text):
    return re.sub(r"//[^\n]*", "", text)


def heads(body):
    """Top-level names of a use-group body: 'a, b::c, d::{e}' -> a, b, d."""
    out, depth, cur = [], 0, ""
    for ch in body:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [m.group(1) for m in (re.match(r"\s*(\w+)", h) for h in out) if m]


def group(text, start):
    depth = 0
    for i in range(start, len(text)):
        depth += text[i] == "{"
        depth -= text[i] == "}"
        if depth == 0:
            return text[start + 1 : i]
    return ""


lib = code(open(os.path.join(src, "lib.rs"), encoding="utf-8").read())
# Root re-exports: `pub use layer::...::{A, B}` / `pub use layer::...::A`.
root = {}
for m in re.finditer(r"pub\s+use\s+(\w+)((?:::\w+)*)::(\{|\w+)", lib):
    if m.group(1) not in LAYERS:
        continue
    names = re.findall(r"\w+", group(lib, m.end() - 1)) if m.group(3) == "{" else [m.group(3)]
    for n in names:
        root[n] = m.group(1)

bad, edges = [], 0
for layer in LAYERS:
    rank = LAYERS.index(layer)
    for dirpath, _, files in os.walk(os.path.join(src, layer)):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            text = code(open(path, encoding="utf-8").read())
            for m in re.finditer(r"crate::(\{|\w+)", text):
                names = heads(group(text, m.end() - 1)) if m.group(1) == "{" else [m.group(1)]
                for n in names:
                    target = root.get(n, n)
                    if target not in LAYERS or target == layer:
                        continue
                    edges += 1
                    if LAYERS.index(target) < rank:
                        line = text[: m.start()].count("\n") + 1
                        bad.append(f"{os.path.relpath(path, src)}:{line}: {layer} imports {target} (crate::{n})")

stray = [f for f in os.listdir(src) if f not in ("lib.rs",) and f.removesuffix(".rs") not in LAYERS]
for f in stray:
    bad.append(f"src/{f}: not in a layer folder ({', '.join(LAYERS)})")
print(f"layers: {' > '.join(LAYERS)}; {edges} cross-layer imports, {len(bad)} pointing up")
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
