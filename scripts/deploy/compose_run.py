#!/usr/bin/env python3
"""Runs compose.yaml with podman, for `make test-containers`: podman-compose 1.0 (Debian 12)
adds a bridge network to host-network services and fails, so this starts exactly what
`docker-compose config` resolves from compose.yaml (images, environment, volumes, host
network) with `podman run`, services in depends_on order.

Usage: compose_run.py up|down PROJECT   (environment: PODMAN_CMD = the podman command line)
"""
import os
import shlex
import subprocess
import sys
import time

import yaml

podman = shlex.split(os.environ.get("PODMAN_CMD", "podman"))
action, project = sys.argv[1], sys.argv[2]
state_dir = os.path.join(".dev", "containers", "env")


def run(*args, check=True):
    # podman complains on stderr that it cannot start health-check timers without systemd;
    # `podman healthcheck run` below does the checking.
    return subprocess.run([*podman, *args], check=check, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)


config = yaml.safe_load(subprocess.run(
    ["docker-compose", "-f", "compose.yaml", "config"], check=True, capture_output=True, text=True).stdout)
services = config["services"]


def order():
    done = []
    def visit(name):
        if name not in done:
            for dep in services[name].get("depends_on", {}):
                visit(dep)
            done.append(name)
    for name in sorted(services):
        visit(name)
    return done


def wait_healthy(name, timeout=180):
    """Waits for a started container's HEALTHCHECK to pass (depends_on: service_healthy)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run([*podman, "healthcheck", "run", f"{project}_{name}_1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            return
        time.sleep(1)
    sys.exit(f"{name} did not become healthy in {timeout} s")


if action == "up":
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    for name in order():
        s = services[name]
        for dep, how in s.get("depends_on", {}).items():
            if how.get("condition") == "service_healthy":
                wait_healthy(dep)
        assert s.get("network_mode") == "host", f"{name}: only host networking is supported here"
        env_file = os.path.join(state_dir, f"{name}.env")
        with open(os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            for k, v in sorted(s.get("environment", {}).items()):
                f.write(f"{k}={v}\n")
        args = ["run", "-d", "--name", f"{project}_{name}_1", "--network", "host",
                "--label", f"io.podman.compose.project={project}", "--env-file", env_file]
        for v in s.get("volumes", []):
            source, target = v.split(":")[:2] if isinstance(v, str) else (v["source"], v["target"])
            args += ["-v", f"{project}_{source}:{target}"]
        run(*args, s["image"])
        print(f"started {name}")
elif action == "down":
    for name in reversed(order()):
        run("rm", "-f", "-t", "30", f"{project}_{name}_1", check=False)
    for volume in config.get("volumes", {}):
        run("volume", "rm", "-f", f"{project}_{volume}", check=False)
else:
    sys.exit(__doc__)
