#!/usr/bin/env python3
"""Runs compose.yaml with podman, for `make test-containers`: podman-compose 1.0 (Debian 12)
adds a bridge network to host-network services and fails, so this starts exactly what
`docker-compose config` resolves from compose.yaml (images, environment, volumes, host
network) with `podman run`, services in depends_on order.

Fargate mode (FARGATE_TASKS = the JSON of scripts/deploy/fargate_tasks.py): every compose
service that is a container of an ECS task definition (proxy, audit-shipper, rates-api,
approvals) runs as Fargate runs it, with the settings Terraform renders:
  - the task definition's `user`, and a read-only root when readonlyRootFilesystem
    (--read-only --read-only-tmpfs=false: podman would otherwise put writable tmpfs on
    /run, /tmp and /var/tmp, which Fargate does not);
  - the image's own VOLUME declarations ignored (--image-volume ignore): a path the task
    does not mount stays part of the read-only root;
  - each task volume as Fargate makes a bind mount: where every image mounting it declares
    a VOLUME at the mount path, a podman named volume per task and volume (podman copies the
    image's content, owner and mode into it on first mount, as Fargate does); otherwise an
    empty host directory owned root:root, mode 0755; readOnly mounts read-only;
  - the container health check of the task definition (its port mapped to the port the
    local service listens on: the task variable *_LISTEN on that port) instead of the image's;
  - the task's dependsOn order (SUCCESS: the dependency must have exited 0 first);
  - the task's other containers built here (the proxy-cert container of the proxy task) run
    too, from the task definition alone: its environment, overlaid with FARGATE_LOCAL_ENV
    (JSON {container: {VAR: value}}: the emulator's endpoint and ids, never a secret);
  - environment: compose's local wiring, except that every variable holding a path takes the
    task definition's value (and a path variable the task does not set is dropped, so the
    image's default applies as on Fargate). Stand-ins for what a task gets from AWS: the file
    secret store (Secrets Manager) and the test database's CA in place of the RDS bundle,
    mounted from the compose state volume; PEM values (FARGATE_FILE_ENV, JSON
    {service: {VAR: "volume:relative path"}}) passed as environment variables the entrypoint
    writes to /run/dbgw, read from a file and never on a command line.
FARGATE_PRETEND_NO_VOLUME=SERVICE:PATH treats SERVICE's image as not declaring PATH (the
negative check: the mount becomes root-owned and the service must fail).
One-off tasks (no container of theirs is a compose service: the db-admin task) run with
`task`, with the same settings; their command is the task definition's, with the values of
the options in FARGATE_LOCAL_ARGS (JSON {container: {OPTION: value, or [values] for a
repeated option}}) replaced by the local stack's (the database's address, the stand-in CA,
the file store's secret ids for ARNs): every option named there must be in the task's
command, as many times as values are given, so a renamed or dropped option fails the run.

Usage: compose_run.py up PROJECT [SERVICE...]     starts the services (all by default) not yet running
       compose_run.py down|health|files PROJECT    (environment: PODMAN_CMD = the podman command line)
                      health: every task container's health check passes now; files: every
                      file a task's environment names outside its volumes is in its image
       compose_run.py probe PROJECT SERVICE SECS   runs SERVICE once in the foreground (Fargate
                                                   settings), exits with its status (124: still running)
       compose_run.py task PROJECT TASK SECS       runs a one-off task's containers once in the
                                                   foreground, in order; exits with the first failure
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import yaml

podman = shlex.split(os.environ.get("PODMAN_CMD", "podman"))
action, project = sys.argv[1], sys.argv[2]
state_dir = os.path.join(".dev", "containers", "env")
fargate_dir = os.path.join(".dev", "containers", "fargate")
fargate = json.load(open(os.environ["FARGATE_TASKS"])) if os.environ.get("FARGATE_TASKS") else None
file_env = json.loads(os.environ.get("FARGATE_FILE_ENV") or "{}")
local_env = json.loads(os.environ.get("FARGATE_LOCAL_ENV") or "{}")
local_args = json.loads(os.environ.get("FARGATE_LOCAL_ARGS") or "{}")
pretend = os.environ.get("FARGATE_PRETEND_NO_VOLUME", "")
# What a task gets from AWS, mounted from the compose state volume (relative path, mode).
STAND_INS = {"/var/lib/dbgw/secrets": ("secrets", "rw"), "/var/lib/dbgw/pg/ca.crt": ("pg/ca.crt", "ro")}
# The test database is no RDS: its pg_hba admits people's roles only with the proxy's client
# certificate (where RDS takes IAM tokens), so the proxy, and only the proxy, gets that too.
PROXY_STAND_INS = {"/var/lib/dbgw/proxy/upstream-client.crt": ("proxy/upstream-client.crt", "ro"),
                   "/var/lib/dbgw/proxy/upstream-client.key": ("proxy/upstream-client.key", "ro")}
RDS_CA_DIR = "/etc/dbgw/rds-ca/"
LABEL = f"io.podman.compose.project={project}"


def run(*args, check=True, env=None):
    # podman complains on stderr that it cannot start health-check timers without systemd;
    # `podman healthcheck run` below does the checking.
    return subprocess.run([*podman, *args], check=check, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env)


def output(*args):
    return subprocess.run([*podman, *args], check=True, capture_output=True, text=True).stdout.strip()


config = yaml.safe_load(subprocess.run(
    ["docker-compose", "-f", "compose.yaml", "config"], check=True, capture_output=True, text=True).stdout)
services = config["services"]


def task_of(service):
    """(task name, task, container) of the task definition container named like the service."""
    for tname, task in (fargate or {}).get("tasks", {}).items():
        for c in task["containers"]:
            if c["name"] == service:
                return tname, task, c
    return None


def add_task_containers():
    """The other containers of the tasks whose containers are compose services, where this
    stack builds their image (one-shot and sidecar containers defined only in Terraform)."""
    for task in (fargate or {}).get("tasks", {}).values():
        if not any(c["name"] in services for c in task["containers"]):
            continue
        for c in task["containers"]:
            image = local_image(c)
            if c["name"] not in services and image:
                services[c["name"]] = {"image": image, "network_mode": "host",
                                       "environment": dict(c["environment"], **local_env.get(c["name"], {}))}


def add_one_off_task(tname):
    """The containers of a task none of whose containers is a compose service (db-admin)."""
    task = (fargate or {}).get("tasks", {}).get(tname) or sys.exit(f"no task {tname} in the task definitions")
    for c in task["containers"]:
        image = local_image(c) or sys.exit(f"task {tname}: image {c['image']} of {c['name']} is not built by this stack")
        services[c["name"]] = {"image": image, "network_mode": "host",
                               "environment": dict(c["environment"], **local_env.get(c["name"], {}))}
    return task


def local_command(name, command):
    """The task's command with the options of FARGATE_LOCAL_ARGS[name] given local values."""
    command = list(command or [])
    for option, values in local_args.get(name, {}).items():
        values = values if isinstance(values, list) else [values]
        at = [i for i, a in enumerate(command) if a == option and i + 1 < len(command)]
        if len(at) != len(values):
            sys.exit(f"{name}: the task definition's command has {option} {len(at)} time(s), "
                     f"the local stack gives {len(values)} value(s): {command}")
        for i, value in zip(at, values):
            command[i + 1] = str(value)
    return command


def depends(name):
    deps = list(services[name].get("depends_on", {}))
    found = task_of(name)
    if found:
        deps += [d["container"] for d in found[2]["depends_on"] if d["container"] in services]
    return deps


def order():
    done = []
    def visit(name):
        if name not in done:
            for dep in depends(name):
                visit(dep)
            done.append(name)
    for name in sorted(services):
        visit(name)
    return done


def wait_healthy(name, timeout=180):
    """Waits for a started container's health check to pass (depends_on: service_healthy)."""
    deadline = time.monotonic() + timeout
    cname = f"{project}_{name}_1"
    while time.monotonic() < deadline:
        if subprocess.run([*podman, "healthcheck", "run", cname],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            return
        if output("inspect", "--format", "{{.State.Running}}", cname) != "true":
            break
        time.sleep(1)
    logs = subprocess.run([*podman, "logs", "--tail", "20", cname], capture_output=True, text=True)
    state = output("inspect", "--format", "{{.State.Status}} (exit {{.State.ExitCode}})", cname)
    sys.exit(f"{name} did not become healthy ({state}){empty_mounts_note(name)}:\n{logs.stdout}{logs.stderr}")


def empty_mounts_note(name):
    """Which of a task container's mounts Fargate would give as empty root:root 0755 directories
    (the likely cause when a container running as a user cannot start)."""
    found = task_of(name)
    if not found:
        return ""
    tname, task, c = found
    empty = [m["path"] for m in c["mounts"] if volume_source(tname, task, m["volume"])[0] == "empty"]
    if not empty:
        return ""
    return (f"; as on Fargate, {', '.join(empty)} {'is' if len(empty) == 1 else 'are'} an empty root:root 0755 "
            f"directory for user {c['user']} (not a VOLUME of every image that mounts it)")


def local_image(container):
    """The image this stack built for a task container (same repository name): a compose
    service's, or one built beside them (same registry and tag: dbgw-db)."""
    for s in services.values():
        if s["image"].rsplit("/", 1)[-1].split(":")[0] == container["image"]:
            return s["image"]
    some = next(iter(services.values()))["image"]
    beside = f"{some.rsplit('/', 1)[0]}/{container['image']}:{some.rsplit(':', 1)[1]}"
    if subprocess.run([*podman, "image", "exists", beside]).returncode == 0:
        return beside
    return None


_image_volumes = {}


def image_volumes(image):
    if image not in _image_volumes:
        _image_volumes[image] = set(json.loads(output("image", "inspect", "--format", "{{json .Config.Volumes}}", image)) or {})
    return _image_volumes[image]


def declares(container, path):
    image = local_image(container)
    if pretend == f"{container['name']}:{path}":
        return False
    return image is not None and path in image_volumes(image)


def volume_source(tname, task, volume):
    """The podman source of a task volume, made on first use: ("named", name) or ("empty", dir)."""
    users = [(c, m) for c in task["containers"] for m in c["mounts"] if m["volume"] == volume]
    if all(declares(c, m["path"]) for c, m in users):
        name = f"{project}_{tname}_{volume}"
        if subprocess.run([*podman, "volume", "exists", name]).returncode != 0:
            run("volume", "create", "--label", LABEL, name)
        return "named", name
    path = os.path.abspath(os.path.join(fargate_dir, tname, volume))
    if not os.path.isdir(path):
        os.makedirs(path)
        os.chown(path, 0, 0)
        os.chmod(path, 0o755)
    return "empty", path


def volume_path(source):
    kind, name = source
    return output("volume", "inspect", "--format", "{{.Mountpoint}}", name) if kind == "named" else name


def fargate_args(name, s, tname, task, c, env, penv):
    """podman run arguments of a task container; adjusts env (compose's) in place."""
    args = ["--image-volume", "ignore"]
    if c["user"]:
        args += ["--user", c["user"]]
    if c["readonly"]:
        args += ["--read-only", "--read-only-tmpfs=false"]
    for m in c["mounts"]:
        source = volume_source(tname, task, m["volume"])
        args += ["-v", f"{source[1]}:{m['path']}" + (":ro" if m["readonly"] else "")]
    state = volume_path(("named", f"{project}_state"))
    stand_ins = dict(STAND_INS, **(PROXY_STAND_INS if name == "proxy" else {}))
    for target, (rel, mode) in stand_ins.items():
        args += ["-v", f"{os.path.join(state, rel)}:{target}:{mode}"]
    # Paths: the task definition's (the RDS bundle aside: the test database has its own CA).
    for k in list(env):
        v = str(env[k])
        if v.startswith("/") and k not in c["environment"] and not any(v.startswith(t) for t in stand_ins):
            del env[k]
    for k, v in c["environment"].items():
        if v.startswith("/") and not v.startswith(RDS_CA_DIR):
            env[k] = v
    for var, where in file_env.get(name, {}).items():
        volume, rel = where.split(":", 1)
        with open(os.path.join(volume_path(("named", f"{project}_{volume}")), rel)) as f:
            penv[var] = f.read()
        args += ["-e", var]
    if c["health"]:
        cmd = list(c["health"])
        for i, a in enumerate(cmd):
            m = re.match(r"(https?://(?:127\.0\.0\.1|localhost):)(\d+)(/.*)?$", a)
            if not m:
                continue
            listen = [k for k, v in c["environment"].items() if k.endswith("LISTEN") and v.rsplit(":", 1)[-1] == m.group(2)]
            if not listen:
                sys.exit(f"{name}: the task's health check calls port {m.group(2)}, where the task listens nowhere")
            if listen[0] not in env:
                sys.exit(f"{name}: compose.yaml does not set {listen[0]}, the local port of the health check")
            cmd[i] = m.group(1) + str(env[listen[0]]).rsplit(":", 1)[-1] + (m.group(3) or "")
        if cmd[0] == "CMD":
            args += ["--health-cmd", json.dumps(cmd[1:])]
        elif cmd[0] == "CMD-SHELL":
            args += ["--health-cmd", cmd[1]]
        else:
            sys.exit(f"{name}: health check {cmd} is neither CMD nor CMD-SHELL")
    if c["entrypoint"]:
        args += ["--entrypoint", json.dumps(c["entrypoint"])]
    return args, local_command(name, c["command"])


def start(name, detach=True, container_name=None, timeout=None):
    s = services[name]
    assert s.get("network_mode") == "host", f"{name}: only host networking is supported here"
    env = dict(s.get("environment", {}))
    penv = dict(os.environ)
    cname = container_name or f"{project}_{name}_1"
    args = ["run", "--name", cname, "--network", "host", "--label", LABEL]
    found = task_of(name)
    command = []
    if found:
        tname, task, c = found
        extra, command = fargate_args(name, s, tname, task, c, env, penv)
        args += extra
    else:
        for v in s.get("volumes", []):
            source, target = v.split(":")[:2] if isinstance(v, str) else (v["source"], v["target"])
            args += ["-v", f"{project}_{source}:{target}"]
    env_file = os.path.join(state_dir, f"{name}.env")
    with open(os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        for k, v in sorted(env.items()):
            f.write(f"{k}={v}\n")
    args += ["--env-file", env_file]
    if detach:
        run(*args, "-d", s["image"], *command, env=penv)
        return None
    return subprocess.run([*podman, *args, "--rm", s["image"], *command], env=penv,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def wait_task_dependencies(name):
    """dependsOn SUCCESS/COMPLETE: the container must have exited (with 0 for SUCCESS)."""
    found = task_of(name)
    for d in found[2]["depends_on"] if found else []:
        if d["condition"] in ("SUCCESS", "COMPLETE"):
            dep = f"{project}_{d['container']}_1"
            code = output("wait", dep)
            if d["condition"] == "SUCCESS" and code != "0":
                logs = subprocess.run([*podman, "logs", dep], capture_output=True, text=True)
                sys.exit(f"{d['container']} exited {code}{empty_mounts_note(d['container'])}, and {name} starts only "
                         f"after its success:\n{logs.stdout}{logs.stderr}")
        elif d["condition"] == "HEALTHY":
            wait_healthy(d["container"])


def describe():
    """One line per task container: what Fargate settings it runs with here."""
    for name in order():
        found = task_of(name)
        if not found:
            continue
        tname, task, c = found
        mounts = []
        for m in c["mounts"]:
            kind, _ = volume_source(tname, task, m["volume"])
            mounts.append(f"{m['path']}{' ro' if m['readonly'] else ''} ({'image VOLUME content' if kind == 'named' else 'empty root:root 0755'})")
        print(f"  {name} (task {tname}): user {c['user']}, {'read-only root' if c['readonly'] else 'writable root'}, "
              f"mounts: {', '.join(mounts) or 'none'}, health check: {' '.join(c['health'][1:]) if c['health'] else 'none'}")
    for tname, task in fargate["tasks"].items():
        if any(c["name"] in services for c in task["containers"]):
            for c in task["containers"]:
                if c["name"] not in services:
                    print(f"  not run here: {c['name']} (task {tname}; image {c['image']} is not built by this stack)")


add_task_containers()
if action == "up":
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    wanted = sys.argv[3:] or order()
    os.makedirs(fargate_dir, exist_ok=True)
    for name in order():
        if name not in wanted or subprocess.run([*podman, "container", "exists", f"{project}_{name}_1"]).returncode == 0:
            continue
        for dep, how in services[name].get("depends_on", {}).items():
            if how.get("condition") == "service_healthy":
                wait_healthy(dep)
        wait_task_dependencies(name)
        start(name)
        print(f"started {name}")
    if fargate and not sys.argv[3:]:
        print("Fargate settings (task definitions of environments/" + fargate["environment"] + "):")
        describe()
        # Where each task volume is on this machine, for the checks of containers.sh.
        paths = {}
        for name in order():
            found = task_of(name)
            if found:
                for m in found[2]["mounts"]:
                    paths[f"{found[0]}/{m['volume']}"] = volume_path(volume_source(found[0], found[1], m["volume"]))
        with open(os.path.join(fargate_dir, "volumes.json"), "w") as f:
            json.dump(paths, f, indent=1, sort_keys=True)
elif action == "health":
    # Every task container's health check, as ECS would run it, must pass now.
    bad = 0
    for name in order():
        found = task_of(name)
        if not found or not found[2]["health"]:
            continue
        cname = f"{project}_{name}_1"
        r = subprocess.run([*podman, "healthcheck", "run", cname], capture_output=True, text=True)
        local = json.loads(output("inspect", "--format", "{{json .Config.Healthcheck.Test}}", cname))
        print(f"  {name}: {' '.join(found[2]['health'][1:])} (here: {' '.join(local[1:])}): "
              f"{'healthy' if r.returncode == 0 else (r.stdout.strip() or r.stderr.strip())}")
        bad += r.returncode != 0
    sys.exit(1 if bad else 0)
elif action == "files":
    # Every file a task container's environment names outside its volumes must be in its image.
    # The RDS CA bundle only when `make rds-ca` could run (it needs the internet): a notice.
    bad = 0
    for name in order():
        found = task_of(name)
        if not found:
            continue
        c = found[2]
        paths = sorted({v for v in c["environment"].values() if v.startswith("/")
                        and not any(v == m["path"] or v.startswith(m["path"].rstrip("/") + "/") for m in c["mounts"])})
        if not paths:
            continue
        missing = subprocess.run([*podman, "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh",
                                  services[name]["image"], "-c", 'for p; do [ -e "$p" ] || echo "$p"; done', "sh", *paths],
                                 capture_output=True, text=True, check=True).stdout.split()
        for path in missing:
            if path.startswith(RDS_CA_DIR):
                print(f"  NOTE: {name}: {path} is not in the image (`make rds-ca` fetches it where the internet is reachable)")
            else:
                print(f"  {name}: the task names {path}, which is neither in the image nor on a task volume")
                bad += 1
        print(f"  {name}: {len(paths) - len(missing)} of {len(paths)} file(s) the task names outside its volumes are in the image")
    sys.exit(1 if bad else 0)
elif action == "probe":
    name, secs = sys.argv[3], float(sys.argv[4])
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    cname = f"{project}_{name}_probe"
    run("rm", "-f", "-t", "0", cname, check=False)
    # A fresh directory for any volume made empty (root:root 0755) for the probe.
    found = task_of(name)
    if found:
        shutil.rmtree(os.path.join(fargate_dir, found[0]), ignore_errors=True)
    proc = subprocess.Popen([sys.executable, __file__, "probe-run", project, name, cname], env=os.environ)
    try:
        code = proc.wait(timeout=secs)
    except subprocess.TimeoutExpired:
        run("rm", "-f", "-t", "0", cname, check=False)
        proc.wait()
        code = 124
    sys.exit(code)
elif action == "task":
    tname, secs = sys.argv[3], float(sys.argv[4])
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    task = add_one_off_task(tname)
    for c in task["containers"]:
        cname = f"{project}_{c['name']}_task"
        run("rm", "-f", "-t", "0", cname, check=False)
        try:
            result = start(c["name"], detach=False, container_name=cname, timeout=secs)
        except subprocess.TimeoutExpired:
            run("rm", "-f", "-t", "0", cname, check=False)
            sys.exit(f"task {tname}: {c['name']} still running after {secs:.0f} s")
        sys.stdout.write(result.stdout)
        if result.returncode != 0:
            sys.exit(f"task {tname}: {c['name']} exited {result.returncode}")
elif action == "probe-run":
    result = start(sys.argv[3], detach=False, container_name=sys.argv[4])
    sys.stdout.write(result.stdout)
    sys.exit(result.returncode)
elif action == "down":
    for name in reversed(order()):
        run("rm", "-f", "-t", "30", f"{project}_{name}_1", check=False)
    # Whatever else runs under the project's label (task-only containers, probes).
    for container in output("ps", "-a", "-q", "--filter", f"label={LABEL}").split():
        run("rm", "-f", "-t", "30", container, check=False)
    for volume in config.get("volumes", {}):
        run("volume", "rm", "-f", f"{project}_{volume}", check=False)
    for volume in output("volume", "ls", "-q", "--filter", f"label={LABEL}").split():
        run("volume", "rm", "-f", volume, check=False)
    shutil.rmtree(fargate_dir, ignore_errors=True)
else:
    sys.exit(__doc__)
