#!/usr/bin/env python3
"""The ECS task definitions exactly as Terraform renders them, for `make test-containers`
(scripts/deploy/containers.sh runs every service container with these settings).

A copy of terraform/ gets a `terraform test` file with one run block, `command = apply`
against the test suites' mock AWS provider (terraform/environments/_shared/tests/mocks):
nothing is created or called, and every value is concrete. `terraform test -json -verbose`
prints the applied state, from which this takes each aws_ecs_task_definition's
container_definitions and volumes. So a change in the Terraform is what the containers run.

Usage: fargate_tasks.py OUT.json [ENVIRONMENT]     (default production; ~15 s)
Writes:
  {"environment": ..., "tasks": {TASK: {"family", "volumes": [name...], "containers": [
     {"name", "image" (the repository's last component: proxy, audit-shipper...), "user",
      "readonly", "mounts": [{"volume", "path", "readonly"}], "health" (the command list or
      null), "entrypoint", "command", "depends_on": [{"container", "condition"}],
      "environment": {NAME: VALUE}}]}}}
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEST = """
variables {
  write_secret_values = false
}
provider "aws" {
  alias                       = "generator"
  region                      = "eu-west-1"
  access_key                  = "offline"
  secret_key                  = "offline"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}
mock_provider "aws" {
  source = "./tests/mocks"
}
run "task_definitions" {
  command = apply
}
"""
# The audit key's prevent_destroy refuses the test's in-memory destroy (as in tf_check.sh).
OVERRIDE = """
resource "aws_kms_key" "audit" {
  lifecycle {
    prevent_destroy = false
  }
}
"""


def fail(msg):
    sys.exit(f"fargate_tasks: FAIL: {msg}")


def main():
    out = sys.argv[1]
    env = sys.argv[2] if len(sys.argv) > 2 else "production"
    terraform = os.environ.get("TERRAFORM") or shutil.which("terraform") or fail("no terraform on PATH")
    plugins = os.environ.get("TF_PLUGIN_DIR", "/opt/tf-plugins")
    work = os.path.join(ROOT, ".dev", "containers", "tf")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    shutil.copytree(os.path.join(ROOT, "terraform"), os.path.join(work, "terraform"), symlinks=True)
    with open(os.path.join(work, "terraform/modules/audit-bucket/fargate_tasks_override.tf"), "w") as f:
        f.write(OVERRIDE)
    rotation_zip = os.path.join(work, "rotation.zip")
    with zipfile.ZipFile(rotation_zip, "w") as z:  # a stand-in package (the plan hashes it)
        z.writestr("bootstrap", "stand-in")
        z.writestr("rds-ca/global-bundle.pem", "stand-in")
    envdir = os.path.join(work, "terraform", "environments", env)
    os.makedirs(os.path.join(envdir, "fargate_tasks"))
    with open(os.path.join(envdir, "fargate_tasks", "tasks.tftest.hcl"), "w") as f:
        f.write(TEST)
    tf_env = dict(os.environ, TF_CLI_CONFIG_FILE="/dev/null", TF_IN_AUTOMATION="1")
    init = subprocess.run([terraform, f"-chdir={envdir}", "init", "-backend=false", f"-plugin-dir={plugins}",
                           "-input=false", "-no-color"], env=tf_env, capture_output=True, text=True)
    if init.returncode != 0:
        fail(f"terraform init of environments/{env}:\n{init.stdout}{init.stderr}")
    test = subprocess.run([terraform, f"-chdir={envdir}", "test", "-test-directory=fargate_tasks", "-json",
                           "-verbose", "-no-color", "-var-file=terraform.tfvars.example",
                           f"-var=rotation_zip_path={rotation_zip}"], env=tf_env, capture_output=True, text=True)
    state = None
    for line in test.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("type") == "test_state":
            state = msg["test_state"]
    if test.returncode != 0 or state is None:
        fail(f"terraform test (mock apply) of environments/{env}:\n{test.stdout[-4000:]}{test.stderr}")

    tasks = {}
    prefix = None

    def walk(module):
        for r in module.get("resources", []):
            if r.get("type") != "aws_ecs_task_definition" or r.get("mode") != "managed":
                continue
            v = r["values"]
            containers = []
            for c in json.loads(v["container_definitions"]):
                repo = c["image"].split("@")[0].rsplit("/", 1)[-1].split(":")[0]
                health = c.get("healthCheck")
                containers.append({
                    "name": c["name"],
                    "image": repo,
                    "user": c.get("user"),
                    "readonly": bool(c.get("readonlyRootFilesystem")),
                    "mounts": [{"volume": m["sourceVolume"], "path": m["containerPath"],
                                "readonly": bool(m.get("readOnly"))} for m in c.get("mountPoints") or []],
                    "health": health["command"] if health else None,
                    "entrypoint": c.get("entryPoint"),
                    "command": c.get("command"),
                    "depends_on": [{"container": d["containerName"], "condition": d["condition"]}
                                   for d in c.get("dependsOn") or []],
                    "environment": {e["name"]: e["value"] for e in c.get("environment") or []},
                })
            tasks[v["family"]] = {"family": v["family"], "volumes": sorted(x["name"] for x in v.get("volume") or []),
                                  "containers": containers}
        for child in module.get("child_modules", []):
            walk(child)

    walk(state["root_module"])
    if not tasks:
        fail("no aws_ecs_task_definition in the state")
    # Families are <cluster>-<task>; the cluster name is their longest common prefix ending in "-".
    prefix = os.path.commonprefix(list(tasks))
    prefix = prefix[: prefix.rfind("-") + 1]
    result = {"environment": env, "tasks": {fam[len(prefix):]: t for fam, t in sorted(tasks.items())}}
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    for name, t in result["tasks"].items():
        print(f"  task {name}: " + ", ".join(
            f"{c['name']} (user {c['user']}, {'read-only root' if c['readonly'] else 'writable root'}, "
            f"{len(c['mounts'])} mount(s){', health check' if c['health'] else ''})" for c in t["containers"]))


if __name__ == "__main__":
    main()
