#!/usr/bin/python3
"""check-functions.py — no function in src/ longer than 80 lines (the house
style aims for 60), run by `make test`. A function is a definition at
column 0 whose body opens with "{" alone on a line and closes with "}" alone
on a line (what .clang-format produces); its length counts the signature's
first line through the closing brace. Prints every offender; exits 1 if any."""
import os
import re
import sys

LIMIT = 80
SIGNATURE = re.compile(r"^[A-Za-z_][^;=]*\(")


def functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    start = None
    for i, line in enumerate(lines):
        if SIGNATURE.match(line) and not line.startswith(("typedef", "struct ", "enum ", "union ")) \
                or (SIGNATURE.match(line) and line.rstrip().endswith(")")):
            start = i
        elif line == "{" and start is not None:
            name = re.search(r"(\w+)\s*\(", lines[start])
            body_start = start
            for j in range(i + 1, len(lines)):
                if lines[j] == "}":
                    yield (name.group(1) if name else "?", body_start + 1, j - body_start + 1)
                    break
            start = None
        elif line and not line[0].isspace() and not line.startswith(("#", "/", "*", " ")) \
                and not SIGNATURE.match(line):
            if not line.rstrip().endswith((",", "(")):
                start = None


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
    bad = 0
    for root, _, files in os.walk(src):
        for f in sorted(files):
            if not f.endswith(".c"):
                continue
            path = os.path.join(root, f)
            for name, line, length in functions(path):
                if length > LIMIT:
                    print(f"{os.path.relpath(path, src)}:{line}: {name} is {length} lines (limit {LIMIT})")
                    bad += 1
    if bad:
        print(f"check-functions: {bad} function(s) over {LIMIT} lines")
        return 1
    print(f"check-functions: no function over {LIMIT} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
