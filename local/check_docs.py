"""The documentation's links: every Markdown link in README.md, CHANGELOG.md and docs/
points inside the repository, at a file that exists, and, with a #fragment, at a
heading of that file (GitHub's anchors: lower-cased, punctuation dropped, spaces to
hyphens). Run by `make test` and `make check`; exits 1 listing every bad link.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def documents():
    yield os.path.join(ROOT, "README.md")
    yield os.path.join(ROOT, "CHANGELOG.md")
    for name in sorted(os.listdir(os.path.join(ROOT, "docs"))):
        if name.endswith(".md"):
            yield os.path.join(ROOT, "docs", name)


def prose(path):
    """The lines outside code fences, with inline code removed."""
    inside = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if FENCE.match(line.strip()):
                inside = not inside
                continue
            if not inside:
                yield number, re.sub(r"`[^`]*`", "", line)


def anchor(heading):
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    found = set()
    counts = {}
    for _, line in prose(path):
        match = re.match(r"^#{1,6}\s+(.*)$", line)
        if match:
            base = anchor(match.group(1))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def main():
    bad = []
    checked = 0
    for doc in documents():
        if not os.path.exists(doc):
            continue
        for number, line in prose(doc):
            for target in LINK.findall(line):
                checked += 1
                where = f"{os.path.relpath(doc, ROOT)}:{number}: {target}"
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    bad.append(f"{where}: points outside the repository")
                    continue
                path, _, fragment = target.partition("#")
                resolved = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
                if not resolved.startswith(ROOT + os.sep) and resolved != ROOT:
                    bad.append(f"{where}: points outside the repository")
                elif not os.path.exists(resolved):
                    bad.append(f"{where}: no such file")
                elif fragment and resolved.endswith(".md") and fragment not in anchors(resolved):
                    bad.append(f"{where}: no heading #{fragment}")
    if bad:
        print("\n".join(bad), file=sys.stderr)
        print(f"check_docs: {len(bad)} bad links of {checked}", file=sys.stderr)
        return 1
    print(f"check_docs: {checked} links, all inside the repository and resolving")
    return 0


if __name__ == "__main__":
    sys.exit(main())
