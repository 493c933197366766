"""The README is a short front door and the manual in docs/ builds: MkDocs in strict mode
(every link between pages resolves), the README's set-up lines that CI runs, and every
relative link of the README."""

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 200

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
# [text](target) and ![alt](target), with an optional "title"; and [label]: target
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)


def readme() -> str:
    return README.read_text(encoding="utf-8")


def set_up_line(text: str, intro: str) -> str:
    """The one command line of the first fenced block after the paragraph that starts with
    `intro` (e.g. "Set up and run the tests")."""
    start = text.find(intro)
    assert start >= 0, f"README.md has no paragraph starting {intro!r}"
    block = FENCE.search(text, start)
    assert block, f"README.md has no fenced code block after {intro!r}"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 1, f"the block after {intro!r} should be one command line, got {lines}"
    return lines[0]


def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "index.html").is_file()


def test_readme_is_short_and_keeps_the_set_up_lines():
    text = readme()
    lines = text.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; keep it to {MAX_README_LINES}"

    tests = set_up_line(text, "Set up and run the tests")
    assert "tox" in tests, tests
    assert tests.startswith("python3 -m venv .venv && . .venv/bin/activate && "), tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in ci, f".ci/run runs the README's test command; it has no line {tests!r}"

    main_job = set_up_line(text, "Set up and run the main job")
    assert main_job.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install "), main_job
    assert " -e . " in main_job and "&& bench run " in main_job, main_job


def readme_links(text: str) -> list[str]:
    prose = FENCE.sub("", text)
    prose = re.sub(r"(`+)(?:(?!\1).)+?\1", "", prose, flags=re.S)  # inline code spans
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def test_readme_links_resolve():
    links = readme_links(readme())
    assert links, "README.md links to nothing: it should link into the manual"
    missing = []
    for link in links:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", link) or link.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor of the README itself
        path = unquote(link.split("#", 1)[0].split("?", 1)[0])
        target = (README.parent / path).resolve() if not path.startswith("/") else ROOT / path.lstrip("/")
        if not target.exists():
            missing.append(link)
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_readme_links_are_found():
    """The link finder itself: the forms the README uses, and none inside code."""
    sample = ("![alt](a/b.png) [text](docs/x.md#anchor) [`code` text](y.md)\n"
              "`[not](a-link.md)`\n```\n[nor](this.md)\n```\n[ref]: docs/z.md\n")
    assert readme_links(sample) == ["a/b.png", "docs/x.md#anchor", "y.md", "docs/z.md"]
