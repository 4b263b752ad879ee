#!/usr/bin/env python3
"""The first-deploy runbook (docs/operations.md, the sh block after
<!-- runbook:first-deploy -->) checked against the code, for `make lint-deploy`. The runbook
cannot run here (it needs an AWS account); what it names can be checked:

  - it parses as bash (`bash -n`);
  - every `terraform output NAME` exists (bootstrap's or the environments'), every `-var NAME=`
    and every tfvars key it edits is a variable of the environments, every `make TARGET` a
    target, every directory it enters exists;
  - the images it builds and pins are bootstrap's ECR repositories and the `images` of the
    environments' terraform.tfvars.example (besides the public cloudwatch_agent), each from
    a Dockerfile that exists;
  - the last step restarts, waits for and describes every ECS service the stack defines (a
    service left out keeps tasks that started before their secrets existed);
  - the alarm prefix it lists is the one every alarm of the stack has;
  - the approvals client secret goes in as the JSON key the app reads.

Usage: runbook_check.py [MARKDOWN]     (default docs/operations.md; exit 1 on a mismatch)
"""
import glob
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MARKER = "<!-- runbook:first-deploy -->"


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def runbook(markdown):
    m = re.search(re.escape(MARKER) + r"\s*```sh\n(.*?)\n```", markdown, re.S)
    if not m:
        sys.exit(f"runbook_check: FAIL: no ```sh block after {MARKER}")
    return m.group(1)


def names(pattern, text):
    return set(re.findall(pattern, text))


def main():
    doc = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "docs", "operations.md")
    with open(doc) as f:
        sh = runbook(f.read())
    # Comments say why; only the commands are checked.
    code = "\n".join(line.split(" #")[0] for line in sh.splitlines() if not line.lstrip().startswith("#"))
    problems = []

    parsed = subprocess.run(["bash", "-n"], input=sh, capture_output=True, text=True)
    if parsed.returncode != 0:
        problems.append(f"does not parse as bash: {parsed.stderr.strip()}")

    bootstrap = read("terraform/bootstrap/main.tf")
    env_outputs = names(r'output "([a-z_]+)"', read("terraform/environments/_shared/outputs.tf"))
    boot_outputs = names(r'output "([a-z_]+)"', bootstrap)
    variables = names(r'variable "([a-z_]+)"', read("terraform/environments/_shared/variables.tf"))
    for chdir, name in re.findall(r"terraform(?: -chdir=(\S+))? output (?:-raw |-json )?([a-z_]+)", code):
        known = boot_outputs if chdir == "terraform/bootstrap" else env_outputs
        if name not in known:
            problems.append(f"`terraform output {name}`: no such output in {chdir or 'the environments'}")
    for name in names(r"-var ([a-z_]+)=", code) | names(r"s/\^([a-z_]+) ", code):
        if name not in variables:
            problems.append(f"`{name}`: not a variable of the environments")
    targets = names(r"(?m)^([a-z][a-z0-9-]*):", read("Makefile"))
    for line in re.findall(r"(?m)^\s*make ([a-z0-9 -]+)", code):
        for target in line.split():
            if target not in targets:
                problems.append(f"`make {target}`: no such Makefile target")
    for path in names(r"(?m)^\s*cd (\S+)", code):
        if not os.path.isdir(os.path.join(ROOT, path)):
            problems.append(f"`cd {path}`: no such directory")

    # Images: built (name:Dockerfile pairs), pinned by digest, pushed to bootstrap's repositories.
    built = dict(re.findall(r"([a-z-]+):([\w./-]*Dockerfile)", code))
    repos = set(re.search(r"repositories\s*=\s*toset\(\[([^\]]*)\]\)", bootstrap).group(1).replace('"', "").replace(",", " ").split())
    pinned = re.search(r"for repo in ([a-z -]+); do", code)
    pinned = set(pinned.group(1).split()) if pinned else set()
    for name, dockerfile in built.items():
        if not os.path.isfile(os.path.join(ROOT, dockerfile)):
            problems.append(f"image {name}: {dockerfile} does not exist")
    if set(built) != repos:
        problems.append(f"images built {sorted(built)} are not bootstrap's ECR repositories {sorted(repos)}")
    if pinned != repos:
        problems.append(f"images pinned by digest {sorted(pinned)} are not bootstrap's ECR repositories {sorted(repos)}")
    for example in sorted(glob.glob(os.path.join(ROOT, "terraform/environments/*/terraform.tfvars.example"))):
        block = re.search(r"images\s*=\s*\{(.*?)\}", open(example).read(), re.S).group(1)
        keys = names(r"(?m)^\s*([a-z_]+)\s*=", block) - {"cloudwatch_agent"}
        if keys != {r.replace("-", "_") for r in repos}:
            problems.append(f"{os.path.relpath(example, ROOT)}: images {sorted(keys)} are not the repositories {sorted(repos)}")

    # Every ECS service of the stack: restarted, waited for, described.
    stack = "".join(read(p) for p in sorted(glob.glob("terraform/modules/stack/*.tf", root_dir=ROOT)))
    services = set()
    for body in re.findall(r'module "\w+" \{(.*?)\n\}', stack, re.S):
        if re.search(r'source\s*=\s*"\.\./ecs-service"', body):
            services.add(re.search(r'\n\s*name\s*=\s*"([^"]+)"', body).group(1))
    restarted = re.search(r"for service in ([a-z -]+); do\s*\n\s*aws ecs update-service[^\n]*--force-new-deployment", code)
    waited = re.search(r"aws ecs wait services-stable [^\n]*--services ([a-z -]+)", code)
    described = re.search(r"aws ecs describe-services [^\n]*--services ([a-z -]+)", code)
    for what, found in (("restarts (update-service --force-new-deployment)", restarted),
                        ("waits for (wait services-stable)", waited), ("describes", described)):
        got = set(found.group(1).split()) if found else set()
        if got != services:
            problems.append(f"the runbook {what} {sorted(got) or 'no service'}; the stack's ECS services are {sorted(services)}")

    prefix = re.search(r"--alarm-name-prefix (\S+)", code)
    if '"dbgw-${var.environment}"' not in re.search(r"\n\s*name\s*=\s*(\S+)", read("terraform/modules/stack/main.tf")).group(1) \
            or not prefix or prefix.group(1) != "dbgw-staging-":
        problems.append("the alarm prefix is not the stack's name (dbgw-<env>-)")
    for alarm in re.findall(r'alarm_name\s*=\s*"([^"]+)"', stack):
        if not alarm.startswith("${local.name}-"):
            problems.append(f"alarm {alarm} does not start with the stack's name: the runbook's prefix misses it")

    key = re.search(r'must be \{\{\\"(\w+)\\": ', read("approvals/src/lib.rs"))
    if not key or f"{{{key.group(1)}: .}}" not in code:
        problems.append("the approvals client secret is not written as the JSON key approvals/src/lib.rs reads")

    for p in problems:
        print(f"runbook_check: {p}", file=sys.stderr)
    if problems:
        sys.exit(f"runbook_check: FAIL: {len(problems)} mismatch(es) between the first-deploy runbook and the code")
    outputs = len(re.findall(r"terraform(?: -chdir=\S+)? output", code))
    print(f"runbook_check: the first-deploy runbook matches the code ({len(built)} images, "
          f"services {', '.join(sorted(services))}, {outputs} outputs)")


if __name__ == "__main__":
    main()
