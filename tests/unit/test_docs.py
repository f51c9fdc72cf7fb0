"""The README stays short and every link between the documents leads somewhere (README.md, docs/*.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import sizing

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def local_links(document: Path) -> list[str]:
    text = FENCE.sub("", document.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def anchors(document: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens."""
    text = FENCE.sub("", document.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(document: Path) -> list[str]:
    broken = []
    for link in local_links(document):
        path, _, anchor = link.partition("#")
        target = (document.parent / path).resolve() if path else document
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no such heading in {target.name}")
    return broken


def test_the_readme_is_at_most_250_lines() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def test_the_readme_links_every_document() -> None:
    linked = {(README.parent / link.partition("#")[0]).resolve() for link in local_links(README)}
    for name in ("DESIGN", "DEPLOY", "OPERATIONS", "LAUNCHDARKLY", "CONTRACTS", "CLI"):
        assert ROOT / "docs" / f"{name}.md" in linked, f"README.md does not link docs/{name}.md"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_link_leads_to_a_file_and_heading(document: Path) -> None:
    assert broken_links(document) == []


def test_the_link_check_catches_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "OTHER.md").write_text("# Other\n\n## A section, with `code`\n")
    document = tmp_path / "DOC.md"
    document.write_text("[ok](OTHER.md#a-section-with-code) [gone](GONE.md) [bad](OTHER.md#nothing) [web](https://x.y)")
    assert broken_links(document) == ["GONE.md: no such file", "OTHER.md#nothing: no such heading in OTHER.md"]


def test_bench_rewrites_only_the_sizing_section_of_the_deploy_guide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = sizing.DEPLOY_DOC.read_text(encoding="utf-8")
    copy = tmp_path / "DEPLOY.md"
    copy.write_text(original, encoding="utf-8")
    monkeypatch.setattr(sizing, "DEPLOY_DOC", copy)
    sizing.update_deploy_doc(f"{sizing.HEADING}\n\nrewritten\n")
    rewritten = copy.read_text(encoding="utf-8")
    before, after = original.split(sizing.HEADING)
    assert rewritten.startswith(before + sizing.HEADING + "\n\nrewritten\n")
    assert rewritten.endswith(after[after.index("\n### ") :])
