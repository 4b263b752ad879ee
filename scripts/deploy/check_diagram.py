#!/usr/bin/env python3
"""Compares the secure-access diagram's source (docs/diagram/secure_access.py: COMPONENTS
and FLOWS) with the code, the Dockerfiles and the Terraform: every service name is an ECS
service, every port is the one the code listens on, the Dockerfile exposes and Terraform
opens, every flow between two security groups has its rule, and the proxy metrics the
alarms use are ones the proxy exports. Exit 1 with one line per difference.
Run with the python-hcl2 virtualenv's Python (make lint-deploy does)."""
import os
import re
import sys

import hcl2

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "docs", "diagram"))
import secure_access  # noqa: E402

problems = []


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def tf(path):
    with open(os.path.join(ROOT, path)) as f:
        return hcl2.load(f)


def blocks(parsed, kind):
    """{(type, name): body} for resources/data, {name: body} for modules."""
    out = {}
    for block in parsed.get(kind, []):
        for k, v in block.items():
            if k.startswith("__"):
                continue
            if kind == "module":
                out[k.strip('"')] = v
            else:
                for name, body in v.items():
                    if not name.startswith("__"):
                        out[(k.strip('"'), name.strip('"'))] = body
    return out


def num(value):
    return int(str(value).strip('"'))


def expect(what, found, wanted):
    if found != wanted:
        problems.append(f"{what}: diagram says {wanted}, found {found}")


C = secure_access.COMPONENTS
stack = {}
for f in os.listdir(os.path.join(ROOT, "terraform/modules/stack")):
    if f.endswith(".tf"):
        parsed = tf(f"terraform/modules/stack/{f}")
        for kind in ("module", "resource", "locals"):
            if kind == "locals":
                for block in parsed.get("locals", []):
                    stack.setdefault("locals", {}).update(block)
            else:
                stack.setdefault(kind, {}).update(blocks(parsed, kind))

# 1. ECS services: names and ports in Terraform, Dockerfiles and code.
code_ports = {
    "proxy": [int(re.search(r'listen: "127\.0\.0\.1:(\d+)"', read("proxy/src/settings.rs")).group(1)),
              int(re.search(r'admin_listen: "127\.0\.0\.1:(\d+)"', read("proxy/src/settings.rs")).group(1))],
    "rates-api": [int(re.search(r'listen: "127\.0\.0\.1:(\d+)"', read("rates-api/src/settings.rs")).group(1))],
}
dockerfiles = {"proxy": "proxy/Dockerfile", "rates-api": "rates-api/Dockerfile", "approvals": "approvals/Dockerfile"}
services = {str(body["name"]).strip('"'): body for body in stack["module"].values() if "container_ports" in body}
for name, dockerfile in dockerfiles.items():
    if name not in services:
        problems.append(f"{name}: no ECS service of that name in terraform/modules/stack")
        continue
    expect(f"{name}: Terraform container_ports", [num(p) for p in services[name]["container_ports"]], C[name]["ports"])
    exposed = [int(p) for p in re.search(r"^EXPOSE (.+)$", read(dockerfile), re.M).group(1).split()]
    expect(f"{name}: {dockerfile} EXPOSE", exposed, C[name]["ports"])
    if name in code_ports:
        # The code's defaults are the ports every deployment has (the proxy's peer port is
        # off unless a fleet is configured).
        expect(f"{name}: default ports in the code", code_ports[name], C[name]["ports"][: len(code_ports[name])])
    health = num(services[name]["health_port"])
    if health not in C[name]["ports"]:
        problems.append(f"{name}: Terraform health_port {health} is not one of its ports")
# The proxy serves its own; the web services mount the shared routes of libs/service.
shared_ready = '.route("/health/ready"' in read("libs/service/src/health.rs")
for name in ("proxy", "rates-api"):
    src = read(f"{name}/src/metrics.rs" if name == "proxy" else f"{name}/src/routes.rs")
    serves = "/health/ready" in src or (shared_ready and "service::health::routes(" in src)
    if not serves:
        problems.append(f"{name}: the code serves no /health/ready, which the load balancers and the diagram use")

# 2. Load balancers and the database.
res = stack["resource"]
expect("nlb: listener port", [num(res[("aws_lb_listener", "proxy")]["port"])], C["nlb"]["ports"])
expect("nlb: target port = proxy's first port", num(res[("aws_lb_target_group", "proxy")]["port"]), C["proxy"]["ports"][0])
expect("alb: listener port", [num(res[("aws_lb_listener", "web")]["port"])], C["alb"]["ports"])
db = blocks(tf("terraform/modules/database/main.tf"), "resource")[("aws_db_instance", "this")]
expect("rds: port", [num(db["port"])], C["rds"]["ports"])

# 3. Flows between security groups: each has its rule.
SG = {"proxy": "proxy", "approvals": "approvals", "rates-api": "rates_api", "nlb": "proxy_lb", "alb": "web_lb"}


def sg_of(expr):
    m = re.search(r"aws_security_group\.(\w+)\.id", str(expr))
    if m:
        return m.group(1)
    if "module.database.security_group_id" in str(expr):
        return "db"
    return None


rules = []
for direction in ("ingress", "egress"):
    for key, r in stack["locals"][direction].items():
        rules.append((direction, sg_of(r["sg"]), num(r["port"]), sg_of(r["from_sg"]), str(r["cidrs"])))
db_clients = stack["module"]["database"]["client_security_group_ids"]
for src, dst, port, what in secure_access.FLOWS:
    if port is None:
        continue
    s, d = SG.get(src), SG.get(dst, "db" if dst == "rds" else None)
    if src in ("person", "approver"):
        if not any(r[0] == "ingress" and r[1] == d and r[2] == port and "client_cidrs" in r[4] for r in rules):
            problems.append(f"flow {src} -> {dst} :{port}: no ingress rule from client_cidrs")
        continue
    if src == "rotation":
        rot = read("terraform/modules/rotation/main.tf")
        if f"from_port         = {port}" not in rot:
            problems.append(f"flow rotation -> {dst} :{port}: no egress rule in modules/rotation")
    elif not any(r[0] == "egress" and r[1] == s and r[2] == port and r[3] == d for r in rules):
        problems.append(f"flow {src} -> {dst} :{port}: no egress rule {s} -> {d}")
    if dst == "rds" and not re.search(rf"\b{src.replace('-', '_')}\b", str(db_clients)):
        problems.append(f"flow {src} -> rds: {src} is not among the database's client security groups")
    if dst != "rds" and d and not any(r[0] == "ingress" and r[1] == d and r[2] == (C[dst]["ports"][0] if dst != "nlb" else port) for r in rules):
        problems.append(f"flow {src} -> {dst} :{port}: no ingress rule on {d}")

# Only the three the design names reach the database in normal operation.
allowed = {"proxy", "rotation", "approvals"}
drawn = {src for src, dst, _, _ in secure_access.FLOWS if dst == "rds"}
if drawn != allowed:
    problems.append(f"the diagram draws {sorted(drawn)} reaching the database; the design allows only {sorted(allowed)}")
keys = set(re.findall(r"\b(proxy|rotation|approvals|rates_api|db_admin)\s*=", str(db_clients)))
if keys - {"db_admin"} != allowed:
    problems.append(f"the database admits {sorted(keys)}; the design allows only {sorted(allowed)} (and db_admin while switched on)")

# 4. The proxy metrics that Terraform's alarms and agent use are exported by the proxy.
metrics_rs = read("proxy/src/metrics.rs")
registered = set(re.findall(r'register\(\s*"(\w+)"', metrics_rs))
used = set(re.findall(r"dbgw_proxy_(\w+)", read("terraform/modules/stack/alarms.tf")))
for m in sorted(used):
    base = m[:-6] if m.endswith("_total") else m
    if base not in registered:
        problems.append(f"metric dbgw_proxy_{m} used in Terraform is not exported by proxy/src/metrics.rs")

for p in problems:
    print(p)
if problems:
    print(f"check_diagram: {len(problems)} difference(s)", file=sys.stderr)
    sys.exit(1)
print(f"check_diagram: OK ({len(C)} components, {len(secure_access.FLOWS)} flows, {len(used)} metrics match code and Terraform)")
