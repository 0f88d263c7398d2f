#!/usr/bin/env python3
"""Prints the conformance runs recorded under a directory as one Markdown table.

Each `<backend>.tsv` there was written by `Report::record` (one `check<TAB>outcome<TAB>why`
line per check). Rows are checks, columns backends; skips and failures are listed with their
reasons below the table. Usage: conformance_table.py DIR
"""
import pathlib
import sys


def main() -> int:
    root = pathlib.Path(sys.argv[1])
    runs = {}
    for f in sorted(root.glob("*.tsv")):
        runs[f.stem] = [line.split("\t", 2) for line in f.read_text().splitlines() if line]
    if not runs:
        print(f"no conformance runs recorded under {root}")
        return 0
    checks = []
    for rows in runs.values():
        for name, _, _ in rows:
            if name not in checks:
                checks.append(name)
    mark = {"passed": "pass", "skipped": "skip", "failed": "**FAIL**"}
    backends = list(runs)
    print("| check | " + " | ".join(backends) + " |")
    print("| --- |" + " --- |" * len(backends))
    for check in checks:
        cells = []
        for b in backends:
            hit = [o for n, o, _ in runs[b] if n == check]
            cells.append(mark.get(hit[0], hit[0]) if hit else "-")
        print(f"| {check} | " + " | ".join(cells) + " |")
    notes = [
        f"- {b} · {n}: {o} ({why})"
        for b in backends
        for n, o, why in runs[b]
        if o != "passed"
    ]
    if notes:
        print("\nNot passed:")
        print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
