"""README.md and docs/*.md stay inside the repository (no link or path to a sibling folder such as
``../shared``, which a clone does not have), and a docs page is not a copy of a README section:
each topic has one source, the other links to it."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# every text a reader or a script of the repository sees: no absolute path into the folder around the clone
TEXTS = [*PAGES, *sorted((ROOT / "bench").glob("*.md")), *sorted((ROOT / "bench").glob("*.py")),
         *sorted((ROOT / "src").rglob("*.py"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
UP_PATH = re.compile(r"(?<![\w/.])((?:\.\./)+[\w./-]+)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def escapes(page: pathlib.Path, target: str) -> bool:
    path = (page.parent / target.split("#", 1)[0]).resolve()
    return not path.is_relative_to(ROOT)


def test_relative_links_resolve_inside_the_repository() -> None:
    bad = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http:, mailto:, in-page anchors
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if escapes(page, target) or not path.exists():
                bad.append(f"{page.relative_to(ROOT)}: {target}")
    assert bad == []


def test_no_path_leaves_the_repository() -> None:
    bad = [f"{page.relative_to(ROOT)}: {p}" for page in PAGES for p in UP_PATH.findall(page.read_text())
           if escapes(page, p)]
    assert bad == []


def units(text: str) -> set[str]:
    """Prose paragraphs and table rows (code blocks aside), whitespace-normalised, long enough to
    be more than a shared phrase."""
    text = FENCE.sub("", text)
    out = set()
    for para in re.split(r"\n\s*\n", text):
        lines = para.strip().splitlines()
        if lines and all(line.startswith("|") for line in lines):
            out.update(" ".join(line.split()) for line in lines)
        else:
            out.add(" ".join(para.split()))
    return {u for u in out if len(u) >= 80}


def test_docs_pages_are_not_copies_of_readme_sections() -> None:
    readme = units((ROOT / "README.md").read_text())
    for page in PAGES[1:]:
        shared = readme & units(page.read_text())
        assert not shared, f"{page.relative_to(ROOT)} repeats README: {sorted(shared)[:3]}"


def test_no_absolute_path_outside_the_repository() -> None:
    """No text names where this checkout lives, nor the team folder beside it: a clone elsewhere has
    neither (temporary paths such as /tmp/... in example commands are fine)."""
    here = re.compile("|".join((re.escape(str(ROOT)) + r"(?![\w.-])", re.escape(str(ROOT.parent / "shared")),
                                re.escape("shared/PEERS.md"), re.escape("../shared"))))
    bad = [str(t.relative_to(ROOT)) for t in TEXTS if here.search(t.read_text())]
    assert bad == []
