"""`python -m training.generate_synthetic`: layout of the output and byte-identical reruns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.generate_synthetic import main
from uniseg3d_model.data.rgbd_sequence import RGBDSequence

ARGS = ["--num-scenes", "3", "--seed", "4", "--spacing", "0.1", "--scanrefer", "--render-frames", "2",
        "--width", "32", "--height", "24", "--val-fraction", "0.3", "--no-progress"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    assert main(["--out", str(root / "a"), *ARGS]) == 0
    return root


def test_writes_scannet_layout_splits_scanrefer_and_sequences(out):
    a = out / "a"
    assert (a / "scannetv2_train.txt").read_text().split() == ["scene0000_00", "scene0001_00"]
    assert (a / "scannetv2_val.txt").read_text().split() == ["scene0002_00"]
    for sid in ("scene0000_00", "scene0001_00", "scene0002_00"):
        for suffix in ("_vh_clean_2.ply", "_vh_clean_2.labels.ply", "_vh_clean_2.0.010000.segs.json",
                       ".aggregation.json", ".txt"):
            assert (a / "scans" / sid / f"{sid}{suffix}").is_file()
        seq = RGBDSequence(a / "sequences" / sid)
        assert len(seq) == 2 and seq[0].depth.shape == (24, 32) and seq[0].depth.max() > 0
    train = json.loads((a / "ScanRefer_filtered_train.json").read_text())
    val = json.loads((a / "ScanRefer_filtered_val.json").read_text())
    assert train and val
    assert {e["scene_id"] for e in val} == {"scene0002_00"}
    header = (a / "scannetv2-labels.combined.tsv").read_text().splitlines()[0].split("\t")
    assert header[:5] == ["id", "raw_category", "category", "count", "nyu40id"]


def test_same_arguments_give_identical_files(out):
    assert main(["--out", str(out / "b"), *ARGS]) == 0
    files_a = sorted(p.relative_to(out / "a") for p in (out / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(out / "b") for p in (out / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 20
    for rel in files_a:
        if rel.name == "generation.json":  # records --out
            continue
        assert (out / "a" / rel).read_bytes() == (out / "b" / rel).read_bytes(), rel


def test_bad_arguments_exit_with_message():
    cmd = [sys.executable, "-m", "training.generate_synthetic", "--out", "x", "--num-scenes", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2 and "--num-scenes must be >= 1" in proc.stderr
