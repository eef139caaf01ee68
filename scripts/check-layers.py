#!/usr/bin/python3
"""check-layers.py — the source tree's dependency rule, run by `make test`.

src/ is layered; a module (foo.c with its foo.h) may include headers of its
own layer or of layers below it, never above, and modules never include each
other in a cycle (a .c including b.h while b.c includes a.h, or any longer
loop). foo_internal.h, a module's private header, counts as part of foo. Prints every violation and exits 1 if there is any."""
import os
import re
import sys

# Bottom to top. src/*.c (main, boot) sit on top of everything.
LAYERS = ["base", "codec", "tls", "net", "push", "acme", "cluster", "relay", "ops", ""]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def modules(src):
    """{module: [files]}, module = path below src without extension."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith((".c", ".h")):
                path = os.path.join(root, f)
                mod = os.path.splitext(os.path.relpath(path, src))[0]
                # foo_internal.h is foo's private header: part of module foo
                mod = mod[: -len("_internal")] if mod.endswith("_internal") else mod
                mods.setdefault(mod, []).append(path)
    return mods


def layer_of(mod):
    return mod.split("/")[0] if "/" in mod else ""


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
    mods = modules(src)
    errors = []
    deps = {m: set() for m in mods}
    for mod, files in sorted(mods.items()):
        if layer_of(mod) not in LAYERS:
            errors.append(f"{mod}: folder {layer_of(mod)!r} is not a known layer (scripts/check-layers.py)")
            continue
        for path in files:
            for inc in INCLUDE.findall(open(path, encoding="utf-8").read()):
                target = os.path.splitext(inc)[0]
                if target.endswith("_internal"):
                    target = target[: -len("_internal")]
                if target not in mods:
                    errors.append(f"{path}: includes \"{inc}\", which is not a header under src/ "
                                  "(write it as \"layer/name.h\")")
                    continue
                if target == mod:
                    continue
                deps[mod].add(target)
                if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(mod)):
                    errors.append(f"{path}: includes \"{inc}\": layer {layer_of(target) or 'top'} "
                                  f"is above {layer_of(mod) or 'top'}")
    # Cycles among modules: depth-first search, report each back edge's loop.
    state, stack, seen_cycles = {}, [], set()

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(deps[m]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                key = frozenset(cycle)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    errors.append("include cycle: " + " -> ".join(cycle))
            elif not state.get(d):
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(mods):
        if not state.get(m):
            visit(m)
    for e in errors:
        print(e)
    if errors:
        print(f"check-layers: {len(errors)} problem(s); the layers, bottom to top: "
              + ", ".join(l or "src/ (main, boot)" for l in LAYERS))
        return 1
    print(f"check-layers: {len(mods)} modules, no upward include, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
