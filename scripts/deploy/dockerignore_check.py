#!/usr/bin/env python3
"""What goes into an image's build context (the repository root) and into git, checked for
`make lint-deploy`: Terraform state, variables and saved plans hold secrets and account
details (a plan file holds every value it will write), so none may reach a build context
(`.dockerignore`) or a commit (`.gitignore`), wherever the runbook leaves them; what the
Dockerfiles COPY and the workspace builds must still be sent.

.dockerignore is read with Docker's rules (a pattern matches a path or one of its parent
directories, `**` any number of directories, the last matching line wins, `!` re-includes);
.gitignore is asked of git itself (`git check-ignore`).

Usage: dockerignore_check.py        (exit 1 on a leak or a missing build input)
"""
import glob
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def pattern_regex(pattern):
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def rules(path):
    found = []
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = os.path.normpath(line.lstrip("!").lstrip("/"))
        found.append((negate, pattern_regex(line)))
    return found


def docker_excludes(ignore, path):
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negate, regex in ignore:
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def git_ignores(path):
    return subprocess.run(["git", "-C", ROOT, "check-ignore", "-q", "--no-index", path]).returncode == 0


def secret_paths():
    """Where Terraform leaves state, variables, plans and provider caches, per the runbook."""
    runbook = open(os.path.join(ROOT, "docs/operations.md")).read()
    plans = set(re.findall(r"terraform[^\n]* plan [^\n]*-out[ =](\S+)", runbook)) or {"plan"}
    roots = ["terraform/bootstrap"] + sorted(
        os.path.relpath(d, ROOT) for d in glob.glob(os.path.join(ROOT, "terraform/environments/*")) if not d.endswith("_shared"))
    paths = []
    for root in roots:
        paths += [f"{root}/{name}" for name in (
            "terraform.tfstate", "terraform.tfstate.backup", "terraform.tfvars", "terraform.tfvars.json",
            "secrets.auto.tfvars", ".terraform/terraform.tfstate", "crash.log", *plans)]
    return paths


def build_inputs():
    """What the Dockerfiles COPY from the context, the workspace's manifests, the prebuilt binaries."""
    paths = ["Cargo.toml", "Cargo.lock"]
    members = re.search(r"members\s*=\s*\[(.*?)\]", open(os.path.join(ROOT, "Cargo.toml")).read(), re.S).group(1)
    paths += [f"{m}/Cargo.toml" for m in re.findall(r'"([^"]+)"', members)]
    for dockerfile in subprocess.run(["git", "-C", ROOT, "ls-files", "*Dockerfile"], capture_output=True, text=True).stdout.split():
        for line in open(os.path.join(ROOT, dockerfile)):
            m = re.match(r"\s*COPY\s+(?!--from)(?:--\S+\s+)*(.*)", line)
            if m:
                paths += [p.rstrip("/") for p in m.group(1).split()[:-1] if p != "."]
        binary = re.search(r"test -x target/\$PROFILE/(\S+);", open(os.path.join(ROOT, dockerfile)).read())
        if binary:
            paths += [f"target/release/{binary.group(1)}", f"target/debug/{binary.group(1)}"]
    return sorted(set(paths))


def main():
    ignore = rules(os.path.join(ROOT, ".dockerignore"))
    problems = []
    secrets = secret_paths() + [".dev/secrets/dbgw", "target/debug/deps/libx.rlib", ".git/config"]
    for path in secrets:
        if not docker_excludes(ignore, path):
            problems.append(f".dockerignore sends {path} into every image's build context")
    for path in secret_paths():
        if not git_ignores(path):
            problems.append(f".gitignore lets {path} be committed")
    inputs = build_inputs()
    for path in inputs:
        if docker_excludes(ignore, path):
            problems.append(f".dockerignore leaves out {path}, which an image build needs")
    for p in problems:
        print(f"dockerignore_check: {p}", file=sys.stderr)
    if problems:
        sys.exit(f"dockerignore_check: FAIL: {len(problems)} problem(s)")
    print(f"dockerignore_check: {len(secrets)} state/variable/plan/cache paths kept out of build contexts "
          f"(and {len(secret_paths())} out of git); {len(inputs)} build inputs sent")


if __name__ == "__main__":
    main()
