#!/usr/bin/env python3
"""Prints the commands of the README's ```sh blocks under the given headings, one per line
(comments and blank lines left out), so that scripts/e2e.sh can run them as written.

Usage: scripts/readme_commands.py README.md "### Query the rates API" "### Read and ..."
Exits 1 if a heading is missing or has no sh block: the test must not pass on nothing.
"""
import sys


def commands(text, heading):
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        sys.exit(f"readme_commands: no heading {heading!r}")
    out, inside = [], False
    for line in lines[start + 1:]:
        if not inside and line.startswith("#") and not line.startswith("```"):
            break  # the next heading: the section ended
        if line.strip() == "```sh":
            inside = True
            continue
        if inside and line.strip() == "```":
            inside = False
            continue
        if inside and line.strip() and not line.lstrip().startswith("#"):
            out.append(line)
    if not out:
        sys.exit(f"readme_commands: no sh commands under {heading!r}")
    return out


def main():
    path, headings = sys.argv[1], sys.argv[2:]
    text = open(path, encoding="utf-8").read()
    for heading in headings:
        for command in commands(text, heading):
            print(command)


if __name__ == "__main__":
    main()
