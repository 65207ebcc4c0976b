"""The README is a short guide whose links all work, and so are the pages under docs/.

- README.md has at most 300 lines;
- every relative link in README.md and docs/*.md names an existing file, and a
  ``#anchor`` into a Markdown file (or the page itself) names one of its
  headings, slugged as GitHub does;
- the README gives exactly two set-up commands, ``make run`` and ``make test``,
  both real Makefile targets, and CI runs ``make test``;
- the README's command table lists every ``traffic`` sub-command.

No link is skipped: a page another change is still writing fails here until it
exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 300
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_INLINE_LINK = re.compile(r"!?\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a fence line itself is dropped)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower case, punctuation dropped, spaces to hyphens."""
    text = _INLINE_LINK.sub(lambda m: m.group(1), heading)
    text = _INLINE_CODE.sub(lambda m: m.group(2), text)
    text = text.replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, duplicates numbered as GitHub does (x, x-1, x-2)."""
    seen: dict[str, int] = {}
    result = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links_in(text: str) -> list[str]:
    """Every link target in Markdown prose (inline, also when wrapped over lines, and reference definitions)."""
    found = []
    for paragraph in re.split(r"\n\s*\n", "\n".join(_prose_lines(text))):
        for line in paragraph.splitlines():
            definition = _REFERENCE_DEF.match(line)
            if definition:
                found.append(definition.group(1))
        without_code = _INLINE_CODE.sub("", paragraph)
        found.extend(match.group(2) for match in _INLINE_LINK.finditer(without_code))
    return found


def links(path: Path) -> list[str]:
    """Every link target in a Markdown file, in order."""
    return links_in(path.read_text(encoding="utf-8"))


def broken_link(page: Path, target: str) -> str | None:
    """Why ``target``, linked from ``page``, does not resolve; None when it does (or is not relative)."""
    if _SCHEME.match(target) or target.startswith("//"):
        return None
    path_part, _, anchor = target.partition("#")
    linked = page if not path_part else (page.parent / unquote(path_part)).resolve()
    if not linked.is_relative_to(REPO):
        return f"{target}: outside the repository"
    if not linked.exists():
        return f"{target}: {linked.relative_to(REPO)} does not exist"
    if anchor and linked.suffix == ".md" and unquote(anchor).lower() not in anchors(linked):
        return f"{target}: no heading with the anchor #{anchor} in {linked.relative_to(REPO)}"
    return None


def _section(text: str, title: str) -> str:
    """The text of the ``## title`` section, up to the next heading of level 1 or 2."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^#{{1,2}} |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def test_readme_is_a_short_guide() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines, more than {MAX_README_LINES}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    targets = links(page)
    assert targets or page != README, "README.md has no links at all: the link scan is broken"
    broken = [reason for reason in (broken_link(page, target) for target in targets) if reason]
    assert not broken, f"{page.relative_to(REPO)} has broken links:\n" + "\n".join(broken)


def test_the_readme_names_exactly_the_two_setup_commands() -> None:
    text = README.read_text(encoding="utf-8")
    section = _section(text, "Two commands")
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", section, re.M | re.S)
    commands = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]
    in_code = re.findall(r"^\s*(make\s+[\w-]+)", "\n".join(
        block for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)), re.M)
    assert sorted(set(in_code)) == ["make run", "make test"], f"other set-up commands in README code: {in_code}"
    assert "A second run downloads nothing." in section, "the README no longer says the install is cached"
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for target in ("run", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no '{target}' target"


def test_ci_runs_make_test() -> None:
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    steps = [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert "make test" in steps, ".ci/run no longer calls `make test`"


def test_the_command_table_lists_every_traffic_command() -> None:
    traffic = Path(sys.executable).with_name("traffic")
    assert traffic.exists(), f"no `traffic` command beside {sys.executable}: run `make test` (it installs it)"
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run([str(traffic), "--help"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    commands = re.findall(r"^ {4}([a-z][\w-]*)(?:\s|$)", result.stdout, re.M)
    assert len(commands) >= 10, f"could not read the sub-commands from `traffic --help`:\n{result.stdout}"
    table = _section(README.read_text(encoding="utf-8"), "Commands")
    listed = set(re.findall(r"^\| `traffic ([a-z][\w-]*)", table, re.M))
    assert set(commands) == listed, \
        f"missing from the table: {set(commands) - listed}; not commands: {listed - set(commands)}"


@pytest.mark.parametrize(("heading", "slug"), [
    ("Kafka IO (`transforms/kafka_io.py`)", "kafka-io-transformskafka_iopy"),
    ("Where things go (`TRAFFIC_WORK_DIR`, default `<checkout>/.work`)",
     "where-things-go-traffic_work_dir-default-checkoutwork"),
    ("`traffic run`: the whole local system", "traffic-run-the-whole-local-system"),
    ("Current results (session 4, 2026-11-21 14:53-15:16 UTC)", "current-results-session-4-2026-11-21-1453-1516-utc"),
    ("A [linked](x.md) heading", "a-linked-heading"),
])
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_the_checker_finds_a_broken_file_and_a_broken_anchor() -> None:
    assert broken_link(README, "docs/no-such-page.md") is not None
    assert broken_link(README, "#no-such-heading") is not None
    assert broken_link(README, "#two-commands") is None
    assert broken_link(README, "https://example.org/missing") is None


def test_the_checker_reads_links_wrapped_over_lines_and_skips_code() -> None:
    text = ("See [the\nbenchmarks](docs/benchmarks.md#batch-pipeline) and `[not](a-link.md)`.\n\n"
            "```\n[nor](this.md)\n```\n")
    assert links_in(text) == ["docs/benchmarks.md#batch-pipeline"]
