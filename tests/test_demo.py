"""``uniseg3d_demo``: the ground-truth scoring it prints (pure, on a generated room), its figures, and
the whole demo run end to end in a subprocess on an isolated ROS domain (node and planner over real
rclpy on loopback), including the failure path and the clean-up of its child processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests import rosutil
from tests.test_render import _read_png
from uniseg3d_ros.tools.demo.annotate import place_labels
from uniseg3d_ros.tools.demo.figures import ANSWER, TRUTH, FigureMaker, Panel, class_color
from uniseg3d_ros.tools.demo.main import parse_args
from uniseg3d_ros.tools.demo.scene import (
    DemoRoom,
    best_match,
    click_point,
    indices_to_mask,
    iou,
    is_thing,
    matches_word,
    pick_click_object,
    pick_referrals,
    semantic_scores,
    transfer_labels,
    vertex_semantic20,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def room():
    from uniseg3d_model.synthetic.scene import generate_scene
    from uniseg3d_model.synthetic.sentences import scene_referrals

    scene = generate_scene(3, "demo0003_00", room_type="living room")
    return DemoRoom(scene, Path("unused"), scene_referrals(scene, np.random.default_rng(3)), 0)


# ----------------------------------------------------------------------------- ground truth (pure)
def test_transfer_labels_gives_map_points_their_vertex_labels(room):
    scene = room.scene
    pts = scene.vertices[::7] + np.float32(1e-4)  # a map is near, not exactly on, the mesh
    far = np.array([[50.0, 50.0, 50.0]])
    truth = transfer_labels(scene, np.concatenate([pts, far]), max_distance=0.1)
    np.testing.assert_array_equal(truth.object_id[:-1], scene.instance[::7])
    np.testing.assert_array_equal(truth.semantic[:-1], vertex_semantic20(scene)[::7])
    assert truth.object_id[-1] == -1 and truth.semantic[-1] == -1


def test_vertex_semantic20_maps_nyu40_and_marks_other_classes(room):
    scene = room.scene
    sem = vertex_semantic20(scene)
    for o in scene.objects:
        got = np.unique(sem[scene.instance == o.object_id])
        assert got.tolist() == [o.scannet20 if o.annotated else -1], o.raw_category


def test_best_match_finds_the_object_and_scores_partial_masks(room):
    scene = room.scene
    truth = transfer_labels(scene, scene.vertices)
    oid = next(o.object_id for o in scene.objects if is_thing(o))
    full = truth.mask(oid)
    assert best_match(full, truth) == (oid, 1.0)
    half = full.copy()
    half[np.flatnonzero(full)[::2]] = False
    assert best_match(half, truth)[0] == oid
    assert iou(half, full) == pytest.approx(half.sum() / full.sum())
    assert best_match(np.zeros(len(full), bool), truth) == (-1, 0.0)
    assert iou(np.zeros(3, bool), np.zeros(3, bool)) == 0.0


def test_indices_to_mask_rejects_indices_outside_the_map():
    np.testing.assert_array_equal(indices_to_mask(np.array([0, 2]), 4), [True, False, True, False])
    with pytest.raises(ValueError, match="outside a map of 4 points"):
        indices_to_mask(np.array([4]), 4)


def test_click_point_lies_on_the_object_near_its_centre(room):
    scene = room.scene
    truth = transfer_labels(scene, scene.vertices)
    oid = pick_click_object(room, truth, exclude=set())
    obj = scene.object(oid)
    assert is_thing(obj) and obj.raw_category not in ("door", "window", "picture", "curtain")
    mask = truth.mask(oid)
    click = click_point(scene.vertices, mask)
    assert truth.object_id[np.argmin(np.linalg.norm(scene.vertices - click, axis=1))] == oid
    spread = np.linalg.norm(scene.vertices[mask] - scene.vertices[mask].mean(0), axis=1)
    assert np.linalg.norm(click - scene.vertices[mask].mean(0)) <= np.percentile(spread, 5) + 1e-6
    with pytest.raises(ValueError, match="no map points"):
        click_point(scene.vertices, np.zeros(len(mask), bool))


def test_pick_referrals_takes_distinct_targets_the_map_saw(room):
    scene = room.scene
    truth = transfer_labels(scene, scene.vertices)
    picked = pick_referrals(room, truth, 3, min_points=50)
    assert len(picked) == 3 and len({r.object_id for r in picked}) == 3
    assert all(r in room.referrals for r in picked)
    cats = [room.scene.object(r.object_id).raw_category for r in picked]
    assert len(set(cats)) == len(cats)  # the room has more than three referable categories
    unseen = transfer_labels(scene, scene.vertices[scene.instance != picked[0].object_id])
    assert picked[0].object_id not in {r.object_id for r in pick_referrals(room, unseen, 3, min_points=50)}


def test_semantic_scores_on_perfect_and_confused_labels(room):
    truth = transfer_labels(room.scene, room.scene.vertices)
    assert semantic_scores(truth.semantic, truth) == (1.0, 1.0)
    wrong = np.where(truth.semantic == 0, 1, truth.semantic)  # every wall point called floor
    acc, miou = semantic_scores(wrong, truth)
    valid = truth.semantic >= 0
    assert acc == pytest.approx(1 - np.mean(truth.semantic[valid] == 0))
    classes = np.unique(truth.semantic[valid])
    floor_iou = np.sum(truth.semantic == 1) / np.sum(valid & ((truth.semantic == 1) | (truth.semantic == 0)))
    assert miou == pytest.approx((len(classes) - 2 + floor_iou) / len(classes))


def test_open_vocabulary_words_match_raw_and_nyu40_names(room):
    by_raw = {o.raw_category: o for o in room.scene.objects}
    assert matches_word(by_raw["couch"], "sofa") and matches_word(by_raw["couch"], "couch")
    assert not matches_word(by_raw["couch"], "chair")
    if "coffee table" in by_raw:
        assert matches_word(by_raw["coffee table"], "table")


# ----------------------------------------------------------------------------- figures and CLI
def _near(image: np.ndarray, color: np.ndarray, tol: int = 12) -> np.ndarray:
    """(H, W) bool: pixels within ``tol`` of ``color`` in every channel."""
    return np.all(np.abs(image.astype(int) - np.asarray(color, int)) <= tol, axis=-1)


def test_mask_figure_views_put_the_answer_left_the_truth_right_and_crop_the_canvas(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 3, (4000, 3)) * np.array([1, 1, 0.5])
    colors = rng.uniform(0, 1, (4000, 3))
    answer, truth = points[:, 0] < 1.0, points[:, 0] > 2.0
    fm = FigureMaker(points, colors, tmp_path, size=120)
    left, right = fm.grey.copy(), fm.grey.copy()
    left[answer], right[truth] = ANSWER, TRUTH
    (top_l, top_r), (persp_l, persp_r) = fm.views([Panel("a", left, answer), Panel("t", right, truth)])
    red, green = np.all(top_l.image == ANSWER, axis=-1), np.all(top_r.image == TRUTH, axis=-1)
    w = top_l.image.shape[1]
    assert red[:, : w // 4].mean() > 0.5 and not red[:, int(0.4 * w) :].any()  # x < 1 m: the left third
    assert green[:, int(0.72 * w) :].mean() > 0.5 and not green[:, : int(0.6 * w)].any()
    assert not np.all(top_l.image == TRUTH, axis=-1).any()
    # cropped to what is drawn: the perspective render (160 x 120) loses its empty border
    assert persp_l.image.shape[0] < 120 and persp_l.image.shape[1] < 160
    assert (persp_l.image != 255).any(axis=-1).mean() > 0.4


def test_mask_figure_png_has_title_legend_labels_and_the_click_star(tmp_path):
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 3, (4000, 3)) * np.array([1, 1, 0.5])
    answer = np.linalg.norm(points[:, :2] - 1.5, axis=1) < 0.5
    click = points[answer][0]
    fm = FigureMaker(points, rng.uniform(0, 1, (4000, 3)), tmp_path, size=120)
    plain = _read_png(fm.mask_figure(answer, answer, "plain.png", "", "chair", "brown chair #3"))
    image = _read_png(fm.mask_figure(answer, answer, "q.png", "~/interactive click at (1, 2, 3)", "chair",
                                     "brown chair #3", [click]))
    assert image.shape[0] > plain.shape[0]  # the title takes rows above the renders
    half = image.shape[1] // 2
    assert _near(image[:, :half], ANSWER).sum() > 200 and not _near(image[:, half:], ANSWER).any()
    assert _near(image[:, half:], TRUTH).sum() > 200
    gold = _near(image, np.array([255, 214, 0]), tol=20)
    assert gold[:, :half].any() and gold[:, half:].any()  # the click star in both columns
    assert not _near(plain, np.array([255, 214, 0]), tol=20).any()
    assert (image[: image.shape[0] // 12] < 100).all(axis=-1).any()  # dark title text on top


def test_panoptic_prediction_takes_the_colour_of_its_own_class_not_of_the_truth(tmp_path):
    rng = np.random.default_rng(2)
    points = rng.uniform(0, 3, (4000, 3)) * np.array([1, 1, 0.5])
    table = np.linalg.norm(points[:, :2] - 1.5, axis=1) < 0.6
    fm = FigureMaker(points, rng.uniform(0, 1, (4000, 3)), tmp_path, size=200)  # a one-row legend
    path = fm.class_masks_figure([(table, "chair", "chair 0.9")], [(table, "table", "table #1")], "p.png")
    image = _read_png(path)
    half = image.shape[1] // 2
    chair, tab = class_color("chair"), class_color("table")
    legend, image = image[-40:], image[:-40]  # the legend row shows both colours
    assert _near(image[:, :half], chair).sum() > 200 and _near(image[:, :half], tab).sum() < 20
    assert _near(image[:, half:], tab).sum() > 200 and _near(image[:, half:], chair).sum() < 20
    assert _near(legend, chair).any() and _near(legend, tab).any()  # both classes in the legend
    assert class_color("chair").tolist() != class_color("table").tolist()
    assert class_color("Lamp").tolist() == class_color("lamp").tolist()


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_crowded_labels_are_moved_apart_inside_the_image_and_off_the_click():
    anchors = [(50.0, 40.0), (52.0, 41.0), (49.0, 40.0), (55.0, 44.0), (195.0, 2.0)]
    sizes = [(60.0, 14.0), (40.0, 14.0), (70.0, 14.0), (30.0, 14.0), (50.0, 14.0)]
    star = (60.0, 50.0, 82.0, 72.0)
    centres = place_labels(anchors, sizes, 200, 120, [star])
    boxes = [(x - w / 2, y - h / 2, x + w / 2, y + h / 2) for (x, y), (w, h) in zip(centres, sizes)]
    assert centres[0] == anchors[0]  # the first (most important) stays on its centroid
    for i, a in enumerate(boxes):
        assert 0 <= a[0] and a[2] <= 200 and 0 <= a[1] and a[3] <= 120, a  # inside, not cut off
        assert not _overlap(a, star)
        assert not any(_overlap(a, b) for b in boxes[i + 1 :])
    assert centres[4] == (175.0, 7.0)  # at the corner: pushed in, no other reason to move
    # with no room anywhere, a label keeps its (clamped) centroid instead of vanishing
    assert place_labels([(5.0, 5.0)] * 2, [(20.0, 10.0)] * 2, 20, 10) == [(10.0, 5.0), (10.0, 5.0)]


def test_drawn_labels_of_neighbouring_objects_do_not_cover_each_other():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from uniseg3d_ros.tools.demo.annotate import _draw_labels

    fig = Figure(figsize=(3.0, 2.0), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(np.full((200, 300, 3), 200, np.uint8))
    ax.set_xlim(-0.5, 299.5)
    ax.set_ylim(199.5, -0.5)
    names = ["otherfurniture 0.93", "table 0.90", "chair 0.84", "coffee table 0.88", "sofa 0.95"]
    color = np.array([200, 30, 30], np.uint8)
    _draw_labels(ax, [(140.0 + 4 * i, 100.0 + i, n, color) for i, n in enumerate(names)], 300, 200, [])
    canvas.draw()
    texts = ax.texts
    assert [t.get_text() for t in texts] == names
    boxes = [t.get_bbox_patch().get_window_extent() for t in texts]
    for i, a in enumerate(boxes):
        assert a.x0 >= 0 and a.x1 <= 300 and a.y0 >= 0 and a.y1 <= 200  # on the canvas
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    assert len(ax.lines) == len(names) - 1  # every moved label has its line back to the centroid


def test_cli_help_documents_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--seed", "--frames", "--checkpoint", "--rate", "--keep-going", "--replay-process"):
        assert opt in text


def test_cli_rejects_bad_values(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--frames", "0"])
    assert exc.value.code == 2 and "--frames" in capsys.readouterr().err
    assert parse_args([]).out.name.startswith("demo-")


# ----------------------------------------------------------------------------- end to end
SMALL = [
    "--frames",
    "10",
    "--width",
    "160",
    "--height",
    "120",
    "--sentences",
    "2",
    "--rate",
    "0",
    "--checkpoint",
    "random",
    "--text-encoder",
    "hash",
    "--timeout",
    "60",
]


def _run_demo(out: Path, extra: list[str], timeout: float = 150.0) -> tuple[subprocess.CompletedProcess, int]:
    with rosutil.ros_domain() as domain:
        env = rosutil.ros_env(domain)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "uniseg3d_ros.tools.demo.main",
                "--out",
                str(out),
                "--domain-id",
                str(domain),
                *extra,
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return proc, domain


def _leftover_children(domain: int) -> list[str]:
    """Processes of this user on ``domain`` running the node or the replay tool."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "uniseg3d_ros.node.node" not in cmd and "uniseg3d_ros.tools.replay" not in cmd:
            continue
        try:
            if p.environ().get("ROS_DOMAIN_ID") == str(domain):
                found.append(f"{p.pid}: {cmd}")
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return found


@pytest.mark.slow  # 16-34 s on 2 busy cores
def test_demo_runs_the_mission_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc, domain = _run_demo(out, SMALL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    for needle in (
        "UniSeg3D-ROS demo summary",
        "UNTRAINED",
        "10/10 frames",
        "~/segment",
        "~/refer",
        "~/open_vocab [chair, table, bed, lamp, sofa]",
        "~/interactive click",
        "5/5 succeeded",
    ):
        assert needle in text, needle
    assert f"output      {out.resolve()}" in text
    assert (out / "summary.txt").read_text().strip() == text[text.index("=" * 78) :].strip()

    summary = json.loads((out / "summary.json").read_text())
    facts, queries = summary["facts"], summary["queries"]
    assert facts["frames_fused"] == 10 and facts["map_points"] > 1000 and facts["untrained"] is True
    assert [q["kind"] for q in queries] == ["segment", "refer", "refer", "open_vocab", "interactive"]
    assert all(q["ok"] for q in queries)
    sentences = {s["description"] for s in json.loads((out / "ground_truth.json").read_text())["sentences"]}
    for q in queries:
        if q["kind"] in ("refer", "interactive"):
            assert 0.0 <= q["iou"] <= 1.0 and q["rows"][0]["truth_points"] >= 200
        if q["kind"] == "refer":
            assert q["request"].strip('"') in sentences
        assert q["latency_ms"] > 0 and q["round_trip_ms"] >= q["latency_ms"]
        image = _read_png(Path(q["figure"]))
        assert 600 < image.shape[0] < 900 and 700 < image.shape[1] < 2 * 533 + 24  # cropped, annotated
        assert (image != 255).any(axis=-1).mean() > 0.3  # the map is drawn, not a blank canvas
    seq = json.loads((out / "sequence" / "sequence.json").read_text())
    assert (seq["width"], seq["height"], seq["num_frames"]) == (160, 120, 10)
    assert _leftover_children(domain) == []


def test_demo_fails_clearly_and_stops_the_node_when_the_model_cannot_load(tmp_path):
    broken = tmp_path / "broken_checkpoint.pt"  # exists (a missing file is refused by the argument check)
    broken.write_bytes(b"not a checkpoint")
    extra = list(SMALL)
    extra[extra.index("random")] = str(broken)
    extra[extra.index("--frames") + 1] = "2"
    t0 = time.monotonic()
    proc, domain = _run_demo(tmp_path / "demo", extra)
    assert proc.returncode == 1
    assert "FAILED: the node could not load the model" in proc.stderr
    assert "cannot load the model" in proc.stderr and str(broken) in proc.stderr
    assert time.monotonic() - t0 < 100
    assert _leftover_children(domain) == []


def test_keep_going_runs_every_query_after_a_failure_and_exits_non_zero(tmp_path):
    small = list(SMALL)
    small[small.index("--frames") + 1] = "4"
    small[small.index("--sentences") + 1] = "1"
    out = tmp_path / "demo"
    proc, domain = _run_demo(out, [*small, "--vocabulary", "chair", " ", "--keep-going", "--no-figures"])
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3/4 succeeded; FAILED: open_vocab (class_names[1] is empty)" in proc.stdout
    assert "1 query(ies) failed" in proc.stderr
    kinds = [q["kind"] for q in json.loads((out / "summary.json").read_text())["queries"]]
    assert kinds == ["segment", "refer", "open_vocab", "interactive"]
    assert not (out / "figures").exists()
    assert _leftover_children(domain) == []


def test_sigterm_stops_the_demo_and_its_node(tmp_path):
    with rosutil.ros_domain() as domain:
        env = rosutil.ros_env(domain)
        cmd = [
            sys.executable,
            "-m",
            "uniseg3d_ros.tools.demo.main",
            "--out",
            str(tmp_path / "demo"),
            "--domain-id",
            str(domain),
            *SMALL,
        ]
        log = tmp_path / "demo.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while "started uniseg3d_node" not in log.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            assert len(_leftover_children(domain)) == 1
            proc.terminate()
            assert proc.wait(30) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
        assert "interrupted; child processes stopped" in log.read_text()
        assert _leftover_children(domain) == []
