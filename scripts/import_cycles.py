#!/usr/bin/env python3
"""Import circles between the files of each crate in the workspace.

An edge A -> B means file A names an item of file B (`use crate::...`, `super::...`, or a
path written inline). A submodule naming its ancestors' items is not an edge: the parent is
the submodule's namespace (`super::Deps`). Any strongly connected set of two or more files
is printed and the exit status is 1.

    scripts/import_cycles.py [CRATE_DIR ...]   (default: every crate with a src/)
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def module_files(src):
    """Module path (tuple) -> file, for every .rs file under src."""
    files = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts in (["lib"], ["main"]):
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        elif len(parts) == 1 and parts[0] != "lib" and (src / "bin") in f.parents:
            continue
        if f.parent.name == "bin" or parts[:1] == ["bin"]:
            continue
        files.setdefault(tuple(parts), f)
    return files


def strip(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def expand(path):
    """`a::{b, c::{d}}` -> [a::b, a::c::d]."""
    path = re.sub(r"\s+", "", path)
    m = re.search(r"\{", path)
    if not m:
        return [path]
    head, depth, i = path[: m.start()], 0, m.start()
    for j in range(m.start(), len(path)):
        depth += path[j] == "{"
        depth -= path[j] == "}"
        if depth == 0:
            break
    inner, out, depth, start = path[i + 1 : j], [], 0, 0
    for k, ch in enumerate(inner + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            part = inner[start:k]
            start = k + 1
            if part:
                out += [head + p for p in expand(part)]
    return out


def references(text):
    """Every path the file names, with names brought in by `use` spelled out in full."""
    text = strip(text)
    uses = []
    for use in re.findall(r"\buse\s+([^;]+);", text):
        uses += expand(use)
    paths = list(uses)
    paths += re.findall(r"\b((?:crate|super)(?:::\w+)+)", text)
    # `use crate::auth::{self}` then `auth::person::login(..)`: the alias's full path.
    aliases = {}
    for use in uses:
        parts = use.split("::")
        if parts[-1] == "self":
            parts = parts[:-1]
        if parts[0] in ("crate", "super") and len(parts) > 1:
            name = parts[-1].split(" as ")[-1]
            aliases[name] = "::".join(parts[:-1] + [parts[-1].split(" as ")[0]])
    for name, full in aliases.items():
        for rest in re.findall(r"(?<![\w:])" + re.escape(name) + r"((?:::\w+)+)", text):
            paths.append(full + rest)
    return paths


def resolve(module, path, files):
    parts = [p for p in path.split("::") if p and p not in ("self", "*")]
    parts = [p.split(" as ")[0] for p in parts]
    if not parts:
        return None
    if parts[0] == "crate":
        base, rest = [], parts[1:]
    elif parts[0] == "super":
        base = list(module)
        rest = parts
        while rest and rest[0] == "super":
            base = base[:-1]
            rest = rest[1:]
    else:
        # A child module declared in this file (`mod ledger;` then `ledger::X`).
        if tuple(list(module) + [parts[0]]) in files:
            base, rest = list(module), parts
        else:
            return None
    for n in range(len(rest), -1, -1):
        key = tuple(base + rest[:n])
        if key in files:
            return key
    return None


def cycles(crate):
    src = crate / "src"
    files = module_files(src)
    edges = {m: set() for m in files}
    for module, f in files.items():
        if f.name == "main.rs" and (src / "lib.rs").exists():
            continue
        for path in references(f.read_text()):
            target = resolve(module, path, files)
            if target is None or target == module:
                continue
            if module[: len(target)] == target:  # an ancestor: the namespace
                continue
            edges[module].add(target)
    return [sorted(files[m].relative_to(ROOT).as_posix() for m in scc) for scc in tarjan(edges) if len(scc) > 1]


def tarjan(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            out.append(scc)

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def main():
    crates = [pathlib.Path(a).resolve() for a in sys.argv[1:]] or sorted(
        p.parent for p in ROOT.glob("**/src") if (p.parent / "Cargo.toml").exists()
        and "target" not in p.parts and ".dev" not in p.parts and "node_modules" not in p.parts
    )
    found = 0
    for crate in crates:
        for scc in cycles(crate):
            found += 1
            print(f"import circle in {crate.relative_to(ROOT)}: " + " -> ".join(scc))
    if found:
        print(f"{found} import circle(s): move the shared item into a leaf module")
        return 1
    print(f"no import circles in {len(crates)} crate(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
