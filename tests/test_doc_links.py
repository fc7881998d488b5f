"""Every relative link in README.md and docs/*.md resolves: the file exists and, where the
link names an anchor, the target page has a heading with that anchor (GitHub's rule)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    text = FENCE.sub("", page.read_text())
    return {
        re.sub(r"[^\w\- ]", "", m[1].strip().lower()).replace(" ", "-")
        for m in re.finditer(r"^#+ (.+)$", text, re.M)
    }


def links(page: Path) -> list[str]:
    return [m[1] for m in LINK.finditer(FENCE.sub("", page.read_text()))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path):
    broken = []
    for link in links(page):
        if re.match(r"^[a-z]+:", link):  # http(s), mailto: not checked here
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no file {target.relative_to(ROOT)}")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.name}")
    assert not broken, f"{page.name}: {broken}"


def test_the_check_finds_a_broken_link(tmp_path: Path):
    page = tmp_path / "a.md"
    page.write_text("# Title\n\n## A section: here\n\n[x](a.md#a-section-here) [y](b.md)\n")
    assert links(page) == ["a.md#a-section-here", "b.md"]
    assert anchors(page) == {"title", "a-section-here"}
    assert not (tmp_path / "b.md").exists()


def test_no_page_points_at_files_or_issues_a_user_does_not_have():
    for page in [*PAGES, *(ROOT / "conf").rglob("*.yaml")]:
        text = page.read_text()
        assert "DESIGN" not in text, page.name
        assert not re.search(r"\bissues? #?\d+", text, re.I), page.name
