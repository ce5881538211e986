"""Command blocks of README.md and docs/*.md marked runnable run as written, so the docs stay true.

A block is runnable when the line just before its opening fence is an HTML comment::

    <!-- runnable -->
    <!-- runnable slow; test sizes: "--num-scenes 40" -> "--num-scenes 4", "--epochs 20" -> "--epochs 1" -->

``test sizes`` lists exact text replacements that shrink the work (scene counts, epochs) and nothing
else; ``slow`` marks the block for the slow set. Blocks of one file run in order in one scratch
folder (later blocks may use what earlier ones wrote, as a reader following the page would), with
every top-level entry of the repository linked into it, so paths like ``training/configs/...`` and
``. scripts/env.sh`` resolve while new files (``data/``, ``runs/``, ``out/``) land in the scratch folder.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!--\s*runnable\b(?P<opts>.*?)-->\s*$")
REPLACEMENT = re.compile(r'"(?P<old>[^"]+)"\s*->\s*"(?P<new>[^"]*)"')
#: repository entries never linked into the scratch folder (outputs a block may create)
NOT_LINKED = {".git", "data", "runs", "out", "results.json"}


@dataclass
class Block:
    doc: Path
    line: int
    script: str
    slow: bool


def runnable_blocks(doc: Path) -> list[Block]:
    """The runnable blocks of ``doc`` with their test-size replacements applied."""
    lines = doc.read_text().splitlines()
    blocks = []
    for i, text in enumerate(lines[:-1]):
        marker = MARKER.match(text.strip())
        if not marker or not lines[i + 1].startswith("```"):
            continue
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        script = "\n".join(lines[i + 2 : end])
        opts = marker.group("opts")
        for rep in REPLACEMENT.finditer(opts):
            if rep.group("old") not in script:
                raise AssertionError(f"{doc.name}:{i + 1}: test size {rep.group('old')!r} not in the block")
            script = script.replace(rep.group("old"), rep.group("new"))
        blocks.append(Block(doc, i + 1, script, "slow" in opts.split(";")[0]))
    return blocks


def _doc_params():
    for doc in DOCS:
        blocks = runnable_blocks(doc)
        if blocks:
            marks = [pytest.mark.slow] if any(b.slow for b in blocks) else []
            yield pytest.param(doc, blocks, id=str(doc.relative_to(REPO)), marks=marks)


def _scratch(tmp_path: Path) -> Path:
    for entry in REPO.iterdir():
        if entry.name not in NOT_LINKED:
            (tmp_path / entry.name).symlink_to(entry)
    return tmp_path


@pytest.mark.parametrize("doc, blocks", list(_doc_params()))
def test_runnable_doc_blocks_run_as_written(doc: Path, blocks: list[Block], tmp_path: Path):
    cwd = _scratch(tmp_path)
    env = dict(os.environ, UNISEG3D_ROOT=str(REPO), OMP_NUM_THREADS="1")
    for block in blocks:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.script],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=1500,
        )
        where = f"{doc.relative_to(REPO)}:{block.line}"
        output = f"{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == 0, f"{where} failed:\n{block.script}\n--- output ---\n{output}"


def test_markers_parse(tmp_path: Path):
    doc = tmp_path / "page.md"
    doc.write_text(
        'text\n<!-- runnable slow; test sizes: "--n 40" -> "--n 2" -->\n```bash\nrun --n 40\n```\n'
        "```bash\nnot marked\n```\n"
    )
    (block,) = runnable_blocks(doc)
    assert block.script == "run --n 2" and block.slow and block.line == 2
