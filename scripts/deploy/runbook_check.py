#!/usr/bin/env python3
"""The first-deploy runbook (docs/operations.md, the sh block after
<!-- runbook:first-deploy -->) checked against the code, for `make lint-deploy`. The runbook
cannot run here (it needs an AWS account); what it names can be checked:

  - it parses as bash (`bash -n`);
  - every `terraform output NAME` exists (bootstrap's or the environments'), every `-var NAME=`
    and every tfvars key it edits is a variable of the environments, every `make TARGET` a
    target, every directory it enters exists;
  - the images it builds and pins are bootstrap's ECR repositories and the `images` of the
    environments' terraform.tfvars.example, each from
    a Dockerfile that exists;
  - the last step restarts, waits for and describes every ECS service the stack defines (a
    service left out keeps tasks that started before their secrets existed);
  - the alarm prefix it lists is the one every alarm of the stack has;
  - the approvals client secret goes in as the JSON key the app reads, typed without echo and
    piped (never a file or an argument); the block writes no file;
  - step 4 waits for the setup task and checks its exit code before closing db_admin_access,
    and step 6 starts (start_services, false in the examples' first apply) and restarts the
    services only after every secret is put and every login rotated;
  - every numbered step says what checks it here and what cannot be checked here;
  - every `terraform init` with a backend in README.md and docs/ names the state's region.

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


def order_problems(code):
    """The db-admin window closes only after the setup task stopped with exit code 0, and the
    services are restarted only after every secret and the rotation are in place."""
    problems = []

    def at(pattern):
        m = re.search(pattern, code)
        return m.start() if m else None

    run = at(r'TASK=\$\(aws ecs run-task ')
    wait = at(r'aws ecs wait tasks-stopped [^\n]*--tasks "\$TASK"')
    code_read = at(r"--tasks \"\$TASK\" [^\n]*containers\[0\]\.exitCode")
    checked = at(r'if \[ "\$CODE" = 0 \]')
    close = at(r"-var db_admin_access=false")
    if None in (run, wait, code_read, checked, close) or not run < wait < code_read < checked < close:
        problems.append("step 4 does not run the setup task, wait for it to stop, read its exit code and check it is 0 "
                        "before closing db_admin_access")
    restart = at(r"aws ecs update-service [^\n]*--force-new-deployment")
    before = [m.start() for m in re.finditer(r"put-secret-value|rotate-secret|enable_rotation = true", code)]
    if restart is None or not before or max(before) > restart:
        problems.append("the services are restarted before every secret is put and every login rotated")
    # The first apply creates the services with no task; they start once all of the above is in place.
    start = at(r"s/\^start_services \*=\.\*/start_services = true/")
    applied = at(r"s/\^start_services [^\n]*\n[^\n]*terraform apply")
    first_apply = at(r"terraform plan -out plan && terraform apply plan")
    if start is None or applied is None or (before and start < max(before)) or (restart is not None and start > restart):
        problems.append("the services are not started (start_services = true, then an apply) after the secrets and rotation and before the restart")
    for example in sorted(glob.glob(os.path.join(ROOT, "terraform/environments/*/terraform.tfvars.example"))):
        text = open(example).read()
        for setting in ("enable_rotation = false", "start_services = false"):
            if not re.search(rf"(?m)^{setting}\s*$", text):
                problems.append(f"{os.path.relpath(example, ROOT)}: the first apply needs `{setting}`")
    if first_apply is None or (start is not None and first_apply > start):
        problems.append("no first apply before the services are started")
    return problems


def secret_problems(code):
    """A secret typed in goes to Secrets Manager through a pipe: never a file, never an argument."""
    problems = []
    for m in re.finditer(r"--secret-string (\S+)", code):
        if m.group(1) != "file:///dev/stdin":
            problems.append(f"--secret-string {m.group(1)}: a secret on a command line or in a file (use file:///dev/stdin)")
    for m in re.finditer(r"(?<![0-9&])>\s*([^\s&|)]+)", code):
        if m.group(1) not in ("/dev/null", "/dev/stderr"):
            problems.append(f"the runbook writes a file ({m.group(1)}): secrets and outputs stay out of the clone")
    if re.search(r"\btee\b", code):
        problems.append("the runbook writes a file with tee")
    if not re.search(r"read -rsp ", code):
        problems.append("the approvals client secret is not read without echo (read -s)")
    return problems


def step_problems(sh):
    """Every numbered step says what checks it here and what only a real account can."""
    problems = []
    for number, body in re.findall(r"(?ms)^# (\d+)\. (.*?)(?=^# \d+\. |\Z)", sh):
        comment = " ".join(line.lstrip("# ") for line in body.splitlines() if line.startswith("#"))
        if "Checked:" not in comment and "Checked here:" not in comment:
            problems.append(f"step {number} does not say what checks it (Checked: ...)")
        if "Not checked here:" not in comment:
            problems.append(f"step {number} does not say what cannot be checked here (Not checked here: ...)")
    return problems


def init_problems():
    """Every `terraform init` with the S3 backend in README.md and docs/ names the state's region
    (the bucket's region is not the provider's: init fails or finds no state without it)."""
    problems = []
    for path in ["README.md"] + sorted(glob.glob("docs/*.md", root_dir=ROOT)):
        for line in read(path).splitlines():
            if re.search(r"terraform (?:-chdir=\S+ )?init .*-backend-config", line) and "region=" not in line:
                problems.append(f"{path}: `terraform init` without -backend-config=\"region=...\": {line.strip()[:80]}")
    return problems


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
        keys = names(r"(?m)^\s*([a-z_]+)\s*=", block)
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

    problems += order_problems(code) + secret_problems(code) + step_problems(sh) + init_problems()

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
