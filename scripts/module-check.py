#!/usr/bin/env python3
"""Checks the shape of src/ (not run by scripts/test.sh; run it by hand after a refactoring):

  - the `crate::<module>` edges between top-level modules (a directory module counts as one),
    and any cycle among them; non-test code only, or with --tests also the test code;
  - functions over 80 lines and files over 500 lines of non-test code (comments and blank lines included) (not
    with --tests).

    scripts/module-check.py [--tests]      exit 1 on a cycle or an oversized function or file

Approximate by design: it reads the text (comments dropped, `#[cfg(test)]` items cut by
brace matching), not the compiler's view.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
FN_MAX, FILE_MAX = 80, 500
WITH_TESTS = "--tests" in sys.argv


def item_end(lines, start):
    """The last line of the item (block or `;`-terminated) that starts at `start`."""
    depth, opened, j = 0, False, start
    while j < len(lines):
        depth += lines[j].count("{") - lines[j].count("}")
        opened = opened or "{" in lines[j]
        if (opened and depth <= 0) or (not opened and lines[j].rstrip().endswith(";")):
            return j
        j += 1
    return j


def non_test_lines(text):
    """The lines outside `#[cfg(test)]` items, with their indices; comments blanked."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    lines = [re.sub(r"//.*", "", line) for line in text.split("\n")]
    kept, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]" and not WITH_TESTS:
            i = item_end(lines, i + 1) + 1
            continue
        kept.append((i, lines[i]))
        i += 1
    return kept


def is_test_file(path, module):
    name = os.path.basename(path)
    return name == "tests.rs" or name.endswith("_tests.rs") or module == "testkit"


modules = {}
for entry in sorted(os.listdir(ROOT)):
    path = os.path.join(ROOT, entry)
    if entry.endswith(".rs") and entry != "lib.rs":
        modules.setdefault(entry[:-3], []).append(path)
    elif os.path.isdir(path):
        for root, _, files in os.walk(path):
            modules.setdefault(entry, []).extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".rs"))

edges = {m: set() for m in modules}
oversized = []
for module, files in modules.items():
    for path in files:
        if is_test_file(path, module) and not WITH_TESTS:
            continue
        kept = non_test_lines(open(path).read())
        code = "\n".join(line for _, line in kept)
        for used in re.findall(r"crate::(\w+)", code):
            if used in modules and used != module:
                edges[module].add(used)
        for group in re.findall(r"crate::\{([^}]*)\}", code):
            for used in re.findall(r"(?:^|,)\s*(\w+)", group):
                if used in modules and used != module:
                    edges[module].add(used)
        if is_test_file(path, module) or WITH_TESTS:
            continue
        rel = os.path.relpath(path, os.path.dirname(ROOT))
        count = len(kept)
        if count > FILE_MAX:
            oversized.append(f"{rel}: {count} non-test lines (over {FILE_MAX})")
        lines = [line for _, line in kept]
        for k, line in enumerate(lines):
            m = re.match(r"\s*(?:pub(?:\([a-z]+\))? )?(?:const )?(?:unsafe )?(?:extern \"C\" )?fn (\w+)", line)
            if m:
                length = item_end(lines, k) - k + 1
                if length > FN_MAX:
                    oversized.append(f"{rel}:{kept[k][0] + 1} {m.group(1)}: {length} lines (over {FN_MAX})")

for module in sorted(edges):
    print(f"{module:12} -> {', '.join(sorted(edges[module])) or '(uses no other module)'}")

# Tarjan's strongly connected components: each of more than one module is a cycle.
index, low, stack, on_stack, cycles = {}, {}, [], set(), []


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges[v]):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            component.append(w)
            if w == v:
                break
        if len(component) > 1:
            cycles.append(sorted(component))


for v in sorted(edges):
    if v not in index:
        visit(v)
for component in cycles:
    print("cycle:", " <-> ".join(component))
for line in oversized:
    print("too long:", line)
print("no cycles" if not cycles else f"{len(cycles)} cycle(s)",
      "; no function or file too long" if not oversized else f"; {len(oversized)} too long")
sys.exit(1 if cycles or oversized else 0)
