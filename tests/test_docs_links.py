"""Every relative link in README.md and the documentation pages points at a file that exists, so a page moved or
renamed (README's reference sections went to docs/ in issue 42) cannot leave a dead link behind. No network: links
with a scheme (https:, mailto:) are not followed, and anchors are left to `mkdocs build --strict` (.ci/run)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), the target up to the first space or closing parenthesis
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_links(text: str):
    """The link targets of a Markdown text that name a file of the repository: code blocks and inline code left out,
    as are links with a scheme and links to an anchor of the same page."""
    text = CODE.sub("", FENCE.sub("", text))
    for target in LINK.findall(text):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        yield target


def test_the_link_finder_sees_links_and_skips_code():
    text = ("see [a](docs/a.md#part), ![b](b.png) and [c](https://example.org/x)\n`[d](d.md)`\n"
            "```\n[e](e.md)\n```\n[f](#anchor)\n")
    assert list(relative_links(text)) == ["docs/a.md#part", "b.png"]


def test_there_are_pages_to_check():
    assert {p.name for p in PAGES} >= {"README.md", "usage.md", "results.md", "performance.md", "design.md"}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_points_at_a_file_that_exists(page):
    dead = [target for target in relative_links(page.read_text())
            if not (page.parent / target.split("#")[0]).exists()]
    assert not dead, f"{page.relative_to(ROOT)} links to files that do not exist: {dead}"


def test_readme_keeps_no_private_data_path():
    """README's examples use a path a user can create; the project's own CIFAR-10 copy beside the clone is not one."""
    assert "shared/data" not in (ROOT / "README.md").read_text()
