#!/usr/bin/env python3
"""Static reference check for terraform/ (providers cannot be downloaded here, so
`terraform validate` cannot run). For every module directory it checks that each
`var.X`, `local.X`, `module.M.O`, `data.T.N`, `ephemeral.T.N` and resource `T.N` referenced
is declared, that each module call passes only variables the child declares and every
variable the child requires, and that `source` paths exist. Exit 1 and one line per problem.

Usage: tf_refs.py DIR...   (each DIR is searched for module directories: folders with .tf)
"""
import os
import re
import sys

import hcl2

PROVIDER_PREFIXES = ("aws_", "random_")
REF = re.compile(
    r"(?<![\w.])(?:(var|local)\.(\w+)|module\.(\w+)\.(\w+)|(data|ephemeral)\.(\w+)\.(\w+)"
    r"|((?:" + "|".join(PROVIDER_PREFIXES) + r")\w+)\.(\w+))"
)
# Meta-arguments of a module call, not variables of the child.
MODULE_META = {"source", "version", "count", "for_each", "providers", "depends_on"}


def strings(node):
    """Every string inside a parsed HCL structure (expressions come back as strings)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            if k.startswith("__"):  # the parser's own annotations (comments, block markers)
                continue
            yield from strings(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def unquote(name):
    return name.strip('"')


class Module:
    def __init__(self, path):
        self.path = path
        self.variables = {}  # name -> has default
        self.locals = set()
        self.outputs = set()
        self.resources = set()
        self.data = set()
        self.ephemeral = set()
        self.calls = {}  # name -> body
        self.bodies = []  # (file, parsed)
        for f in sorted(os.listdir(path)):
            if not f.endswith(".tf"):
                continue
            with open(os.path.join(path, f)) as fh:
                parsed = hcl2.load(fh)
            self.bodies.append((f, parsed))
            for block in parsed.get("variable", []):
                for name, body in block.items():
                    if not name.startswith("__"):
                        self.variables[unquote(name)] = "default" in body
            for block in parsed.get("locals", []):
                self.locals.update(k for k in block if not k.startswith("__"))
            for block in parsed.get("output", []):
                self.outputs.update(unquote(n) for n in block if not n.startswith("__"))
            for kind, target in (("resource", self.resources), ("data", self.data),
                                 ("ephemeral", self.ephemeral)):
                for block in parsed.get(kind, []):
                    for rtype, named in block.items():
                        if rtype.startswith("__"):
                            continue
                        for name in named:
                            if name.startswith("__"):
                                continue
                            target.add((unquote(rtype), unquote(name)))
            for block in parsed.get("module", []):
                for name, body in block.items():
                    if not name.startswith("__"):
                        self.calls[unquote(name)] = body


def module_dirs(roots):
    for root in roots:
        for dirpath, dirnames, files in os.walk(root):
            # `_shared` folders hold files symlinked into root modules, not modules.
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
            if any(f.endswith(".tf") for f in files):
                yield dirpath


def check(roots):
    cache = {}

    def load(path):
        path = os.path.normpath(path)
        if path not in cache:
            cache[path] = Module(path)
        return cache[path]

    problems = []
    for path in module_dirs(roots):
        mod = load(path)

        def child(call_name):
            source = unquote(str(mod.calls[call_name].get("source", "")))
            target = os.path.join(path, source)
            return load(target) if os.path.isdir(target) else None

        for call, body in mod.calls.items():
            source = unquote(str(body.get("source", "")))
            sub = child(call)
            if sub is None:
                problems.append(f"{path}: module.{call}: source {source} is not a directory")
                continue
            for arg in body:
                if arg.startswith("__"):
                    continue
                if arg not in MODULE_META and arg not in sub.variables:
                    problems.append(f"{path}: module.{call} passes `{arg}`, which {source} does not declare")
            for var, has_default in sub.variables.items():
                if not has_default and var not in body:
                    problems.append(f"{path}: module.{call} does not pass required variable `{var}` of {source}")

        for f, parsed in mod.bodies:
            # `moved`/`removed` blocks name addresses that no longer exist, on purpose.
            for text in strings({k: v for k, v in parsed.items() if k not in ("moved", "removed")}):
                for m in REF.finditer(text):
                    kind, name, mcall, mout, dkind, dtype, dname, rtype, rname = m.groups()
                    where = f"{path}/{f}"
                    if kind == "var" and name not in mod.variables:
                        problems.append(f"{where}: var.{name} is not declared")
                    elif kind == "local" and name not in mod.locals:
                        problems.append(f"{where}: local.{name} is not declared")
                    elif mcall:
                        if mcall not in mod.calls:
                            problems.append(f"{where}: module.{mcall} is not declared")
                        else:
                            sub = child(mcall)
                            if sub is not None and mout not in sub.outputs:
                                problems.append(f"{where}: module.{mcall}.{mout}: no such output")
                    elif dkind == "data" and (dtype, dname) not in mod.data:
                        problems.append(f"{where}: data.{dtype}.{dname} is not declared")
                    elif dkind == "ephemeral" and (dtype, dname) not in mod.ephemeral:
                        problems.append(f"{where}: ephemeral.{dtype}.{dname} is not declared")
                    elif rtype and (rtype, rname) not in mod.resources:
                        problems.append(f"{where}: resource {rtype}.{rname} is not declared")
    return sorted(set(problems)), len(cache)


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems, modules = check(sys.argv[1:])
    for p in problems:
        print(p)
    if problems:
        print(f"tf_refs: {len(problems)} problem(s) in {modules} module(s)", file=sys.stderr)
        return 1
    print(f"tf_refs: OK, {modules} module(s), every reference declared")
    return 0


if __name__ == "__main__":
    sys.exit(main())
