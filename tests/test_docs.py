"""The documentation: README.md is a front page, docs/ builds into a site with every link and
anchor resolved, and every flag of the command is in the reference and on the front page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from mcp_proxy.config.options import build_parser

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """The ids of a page's headings, as GitHub and MkDocs both make them for ours."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
        found.add(slug.replace(" ", "-"))
    return found


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    done = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict",
                           "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr
    pages = {path.relative_to(tmp_path / "site").as_posix()
             for path in (tmp_path / "site").rglob("index.html")}
    assert {f"{page.stem}/index.html" for page in DOCS.glob("*.md") if page.stem != "index"} \
        <= pages


def test_the_readme_is_a_front_page_whose_links_all_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    links = [link for link in LINK.findall(text) if not link.startswith(("http://", "https://"))]
    assert len(links) > 10
    for link in links:
        path, _, anchor = link.partition("#")
        target = (ROOT / path) if path else README
        assert target.exists(), link
        if anchor:
            assert anchor in anchors(target.read_text()), link


def test_every_flag_is_in_the_reference_and_on_the_front_page():
    flags = {option for action in build_parser()._actions for option in action.option_strings}
    assert {"--port", "--transport", "--no-shared-child", "-H"} <= flags
    reference, readme = (DOCS / "configuration.md").read_text(), README.read_text()
    assert [flag for flag in sorted(flags) if f"`{flag}" not in reference] == []
    assert [flag for flag in sorted(flags) if f"`{flag}" not in readme] == []
