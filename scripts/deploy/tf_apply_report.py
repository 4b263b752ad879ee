"""The emulator apply's report (scripts/deploy/tf_moto_apply.sh): planned resources that the
apply created, and those it did not, each with the error that stopped it or the failed
resource it waited for.  Usage: tf_apply_report.py WORK APPLY_RC DESTROY_RC APPLY_SECS DESTROY_SECS"""
import json
import re
import sys

work, apply_rc, destroy_rc, apply_secs, destroy_secs = sys.argv[1:6]
plan = json.load(open(f"{work}/plan.json"))
planned = [c["address"] for c in plan["resource_changes"] if "create" in c["change"]["actions"] and c["mode"] == "managed"]
state = set(open(f"{work}/state.txt").read().split())
managed = lambda a: not re.search(r"(^|\.)data\.", a)
after = [a for a in open(f"{work}/state-after-destroy.txt").read().split() if managed(a)]

# Terraform's error blocks: "Error: <summary>" ... "with <address>," ... then detail lines.
def errors_of(path):
    errors = {}
    for block in re.split(r"\n(?=Error: )", open(path).read()):
        if not block.startswith("Error: "):
            continue
        m = re.search(r"^\s*with ([^,\s]+),", block, re.M)
        if not m:
            continue
        lines = [l.strip() for l in block.splitlines()]
        summary = lines[0][len("Error: "):]
        detail = " ".join(l for l in lines[1:] if l and not l.startswith(("with ", "on ", "│", "╵", "╷")) and not re.match(r"^\d+:", l))
        reason = (summary + (": " + detail if detail else "")).strip()
        errors.setdefault(m.group(1), re.sub(r"\s+", " ", reason)[:300])
    return errors

errors = errors_of(f"{work}/apply.out")

# Dependencies from the plan's configuration, to name what a skipped resource waited for.
missing = [a for a in planned if a not in state]
print(f"# Emulator apply of staging (moto server {__import__('moto').__version__}, AWS provider from the mirror)\n")
print(f"- apply exit {apply_rc} in {apply_secs} s; destroy exit {destroy_rc} in {destroy_secs} s; "
      f"{len(after)} resource(s) left after destroy")
print(f"- planned {len(planned)}: created without error {len([a for a in planned if a in state and a not in errors])}, "
      f"refused or failed while being created {len(errors)}, not attempted {len([a for a in missing if a not in errors])}\n")
if errors:
    print("## Refused by the emulator, or failed while being created (the error)\n")
    for a in sorted(errors):
        print(f"- `{a}`: {errors[a]}")
    print()
rest = [a for a in missing if a not in errors]
if rest:
    print("## Not attempted (they depend on a refused resource: Terraform skips them)\n")
    for a in sorted(rest):
        print(f"- `{a}`")
if after:
    print("\n## Left after the destroy\n")
    print("Destroy errors (Terraform names no resource in them):\n")
    for line in sorted(set(re.findall(r"^Error: (.*)$", open(f"{work}/destroy.out").read(), re.M))):
        print(f"- {re.sub(r'RequestID: [^,]*, (HostID: [^,]*, )?', '', line)[:300]}")
    print("\nResources still in the state (the rest wait on those):\n")
    for a in sorted(after):
        print(f"- `{a}`")
