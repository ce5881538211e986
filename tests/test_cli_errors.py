"""Command-line tools answer user mistakes with one line naming the argument and exit code 2."""

from __future__ import annotations

import pytest

from uniseg3d_ros.tools.demo.main import parse_args as demo_args
from uniseg3d_ros.tools.replay import parse_args as replay_args


def _user_error(parse, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    return err[-1]  # argparse prints the usage, then one "prog: error: ..." line


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--width", "-5"], "--width"),
        (["--height", "0"], "--height"),
        (["--frames", "0"], "--frames"),
        (["--timeout", "0"], "--timeout"),
        (["--checkpoint", "no_such_model.pt"], "no_such_model.pt"),
    ],
)
def test_demo_rejects_bad_arguments_naming_them(argv, named, capsys):
    line = _user_error(demo_args, argv, capsys)
    assert line.startswith("uniseg3d_demo: error:") and named in line


def test_replay_rejects_a_file_that_is_no_recording(tmp_path, capsys):
    text = tmp_path / "notes.md"
    text.write_text("# not a bag\n")
    line = _user_error(replay_args, [str(text)], capsys)
    assert "neither an RGB-D sequence" in line and str(text) in line


def test_replay_rejects_a_missing_source(tmp_path, capsys):
    line = _user_error(replay_args, [str(tmp_path / "nothing_here")], capsys)
    assert "does not exist" in line


@pytest.mark.parametrize("flag, value", [("--rate", "-1"), ("--stride", "0"), ("--max-frames", "-3")])
def test_replay_validates_numbers_before_any_ros_setup(tmp_path, flag, value, capsys):
    (tmp_path / "sequence.json").write_text("{}")  # a valid-looking source: the number is the mistake
    line = _user_error(replay_args, [str(tmp_path), flag, value], capsys)
    assert flag in line and value in line


def test_prepare_names_a_missing_raw_folder(tmp_path, capsys):
    from training.prepare_scannet import main as prepare

    line = _user_error(prepare, ["--raw", str(tmp_path / "nope"), "--out", str(tmp_path / "out")], capsys)
    assert "--raw" in line and "no such directory" in line


def test_prepare_reports_a_wrong_layout_in_one_line(tmp_path, capsys):
    from training.prepare_scannet import main as prepare

    line = _user_error(prepare, ["--raw", str(tmp_path), "--out", str(tmp_path / "out")], capsys)
    assert "no 'scans' directory" in line and not (tmp_path / "out").exists()
