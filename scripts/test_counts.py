#!/usr/bin/env python3
"""Counts what a test step ran and skipped, for scripts/test.sh's summary.

    test_counts.py junit FILE.xml      pytest's --junitxml report
    test_counts.py tap FILE.tap        node --test's TAP report
    test_counts.py cargo FILE.log      cargo test's output

Prints one line, `passed=N skipped=M failed=F`, then one line per skipped
test: `skip NAME`. NAME is the pytest node id (path::test), the node test's
name, or the Rust test's path as cargo prints it. Exit 2 when the report is
missing or unreadable (a step that wrote no report ran nothing we can count).
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from typing import List, Tuple


def junit(path: str) -> Tuple[int, int, int, List[str]]:
    passed = skipped = failed = 0
    names: List[str] = []
    for case in ET.parse(path).getroot().iter("testcase"):
        # classname is the dotted module path: tests.integration.test_x
        module = case.get("classname", "").replace(".", "/")
        name = f"{module}.py::{case.get('name')}"
        if case.find("skipped") is not None:
            skipped += 1
            names.append(name)
        elif case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        else:
            passed += 1
    return passed, skipped, failed, names


def tap(path: str) -> Tuple[int, int, int, List[str]]:
    passed = skipped = failed = 0
    names: List[str] = []
    for line in open(path, encoding="utf-8", errors="replace"):
        # Subtests are indented; every `ok`/`not ok` line is one test or suite.
        m = re.match(r"\s*(not ok|ok) \d+ - (.*?)(?:\s+#\s*(SKIP|TODO)\b.*)?$", line)
        if not m:
            continue
        status, name, directive = m.groups()
        if directive:
            skipped += 1
            names.append(name)
        elif status == "ok":
            passed += 1
        else:
            failed += 1
    return passed, skipped, failed, names


def cargo(path: str) -> Tuple[int, int, int, List[str]]:
    passed = skipped = failed = 0
    names: List[str] = []
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", line)
        if m:
            passed += int(m.group(1))
            failed += int(m.group(2))
            skipped += int(m.group(3))
            continue
        m = re.match(r"test (\S+) \.\.\. ignored", line)
        if m:
            names.append(m.group(1))
    return passed, skipped, failed, names


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("junit", "tap", "cargo"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, path = sys.argv[1], sys.argv[2]
    try:
        passed, skipped, failed, names = {"junit": junit, "tap": tap, "cargo": cargo}[kind](path)
    except (OSError, ET.ParseError) as e:
        print(f"test_counts.py: cannot read the {kind} report {path}: {e}", file=sys.stderr)
        return 2
    print(f"passed={passed} skipped={skipped} failed={failed}")
    for n in names:
        print(f"skip {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
