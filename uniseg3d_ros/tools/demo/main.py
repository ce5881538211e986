"""``uniseg3d_demo`` (``make demo``): the whole mission in one command, on a synthetic room.

1. generates a seeded synthetic room, records an RGB-D sequence of a loop around it and keeps
   its ground truth (per-vertex class and object, ScanRefer-style sentences);
2. starts ``uniseg3d_node`` (RGB-D input, poses from a topic) on an isolated ROS domain and
   replays the recording into it with ``uniseg3d_replay`` until the map holds the frames;
3. acts as a task planner with a real rclpy client: ``~/segment``, ``~/refer`` (sentences whose
   target is known), ``~/open_vocab`` and ``~/interactive`` (a click on an object's centre);
4. prints a summary (instances, IoU of every answer against ground truth, latencies) and writes
   PNG renders of each answer next to the ground truth under the output folder.

Child processes are always stopped (also on errors and Ctrl-C); any failed step exits non-zero
with a message saying which step failed and why.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from uniseg3d_ros.tools.demo.queries import QueryRunner
from uniseg3d_ros.tools.demo.report import Query
from uniseg3d_ros.tools.demo.ros_io import Child, DemoError, Planner, child_env, lease_domain, ros_arg

NODE_NAME = "uniseg3d_node"
DEFAULT_VOCABULARY = ("chair", "table", "bed", "lamp", "sofa")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from uniseg3d_model.synthetic.layout import ROOM_TYPES

    ap = argparse.ArgumentParser(
        prog="uniseg3d_demo",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run the whole UniSeg3D-ROS mission on a synthetic room: record, fuse, segment, "
        "query by text / vocabulary / click, and score every answer against ground truth.",
    )
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: out/demo-<timestamp>)")
    ap.add_argument("--seed", type=int, default=5, help="room seed: same seed, same room and sentences")
    ap.add_argument("--room-type", default="living room", choices=sorted(ROOM_TYPES), help="kind of room")
    ap.add_argument("--frames", type=int, default=48, help="RGB-D frames along the loop around the room")
    ap.add_argument("--width", type=int, default=320, help="image width [px]")
    ap.add_argument("--height", type=int, default=240, help="image height [px]")
    ap.add_argument(
        "--checkpoint",
        default="",
        help="model checkpoint; '' = the shipped uniseg3d_model/weights/default.pt when present, "
        "else an untrained model; 'random' = the untrained model",
    )
    ap.add_argument(
        "--text-encoder",
        default="",
        help="node text encoder ('minilm', 'openclip:<model>', 'hash'); '' = the checkpoint's own, "
        "'minilm' for the untrained model",
    )
    ap.add_argument(
        "--rate",
        type=float,
        default=4.0,
        help="replay speed x the recording's 5 fps (0 = as fast as possible)",
    )
    ap.add_argument(
        "--replay-process",
        action="store_true",
        help="feed the node with the uniseg3d_replay tool in a child process (free-running: a busy machine "
        "drops frames) instead of the demo's acknowledged in-process replay",
    )
    ap.add_argument("--sentences", type=int, default=3, help="~/refer queries (distinct target objects)")
    ap.add_argument("--vocabulary", nargs="+", default=list(DEFAULT_VOCABULARY), help="~/open_vocab classes")
    ap.add_argument("--timeout", type=float, default=240.0, help="deadline of each step [s]")
    ap.add_argument("--keep-going", action="store_true", help="run every query even after one fails")
    ap.add_argument("--no-figures", action="store_true", help="skip the PNG renders")
    ap.add_argument("--domain-id", type=int, default=None, help="ROS domain (default: a free one)")
    args = ap.parse_args(argv)
    limits = [  # (flag, value, ok, what it must be)
        ("--frames", args.frames, args.frames >= 1, ">= 1"),
        ("--width", args.width, args.width >= 8, ">= 8 pixels"),
        ("--height", args.height, args.height >= 8, ">= 8 pixels"),
        ("--sentences", args.sentences, args.sentences >= 0, ">= 0"),
        ("--rate", args.rate, args.rate >= 0, ">= 0"),
        ("--timeout", args.timeout, args.timeout > 0, "> 0 seconds"),
        ("--domain-id", args.domain_id, args.domain_id is None or 0 <= args.domain_id <= 232, "in 0..232"),
    ]
    for flag, value, ok, what in limits:
        if not ok:
            ap.error(f"{flag} must be {what}, got {value}")
    if args.checkpoint not in ("", "random") and not Path(args.checkpoint).is_file():
        ap.error(f"--checkpoint {args.checkpoint}: no such file ('' = shipped model, 'random' = untrained)")
    if args.out is None:
        args.out = Path("out") / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return args


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.t0 = time.perf_counter()
        self.queries: list[Query] = []
        self.facts: dict[str, Any] = {}

    def step(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f} s] {text}", flush=True)

    # ----------------------------------------------------------------- steps
    def make_room(self) -> None:
        from uniseg3d_ros.tools.demo.scene import make_room

        a = self.args
        t = time.perf_counter()
        self.room = make_room(self.out, a.seed, a.frames, a.width, a.height, a.room_type)
        s = self.room.scene
        self.facts.update(
            scene_id=s.scene_id,
            room_type=s.room_type,
            room_size_m=[round(s.room.length, 2), round(s.room.width, 2)],
            objects=len(s.objects),
            frames=a.frames,
            image_size=[a.width, a.height],
        )
        self.step(
            f"room {s.scene_id}: {s.room_type} {s.room.length:.1f} x {s.room.width:.1f} m, {len(s.objects)} "
            f"objects; {a.frames} RGB-D frames {a.width}x{a.height} in {time.perf_counter() - t:.1f} s"
        )

    def start_node(self, domain: int) -> Child:
        a = self.args
        params = {
            "input_mode": "rgbd",
            "pose_source": "topic",
            "checkpoint": a.checkpoint,
            "text_encoder": a.text_encoder or _default_text_encoder(a.checkpoint),
            "stats_period": 0.05,
            "map_publish_rate": 0.0,
            "queue_depth": 20,
            "sync_buffer": 30,
        }
        ros_args = [x for k, v in params.items() for x in ("-p", f"{k}:={ros_arg(v)}")]
        return Child(
            NODE_NAME,
            ["-m", "uniseg3d_ros.node.node", "--ros-args", *ros_args],
            child_env(domain),
            self.out / "node.log",
        )

    def wait_for_node(self, planner: Planner, node: Child) -> None:
        t = time.perf_counter()
        try:
            planner.spin_until(
                lambda: planner.stats_count > 0, self.args.timeout, "the node to start (~/stats)"
            )
        except DemoError:
            if node.returncode() != 2:
                raise
            # exit code 2: a parameter was rejected or the model cannot load; the node said why in one line
            fatal = [ln.split("]: ", 1)[-1] for ln in node.output().splitlines() if "[FATAL]" in ln]
            reason = fatal[-1] if fatal else node.output(5)
            what = "rejected a parameter" if " must be " in reason else "could not load the model"
            raise DemoError(f"the node {what}: {reason} (log: {node.log_path})") from None
        log = node.output()
        untrained = "NO CHECKPOINT" in log or _default_text_encoder(self.args.checkpoint) == "minilm"
        loaded = [
            ln.split("loaded checkpoint", 1)[1].strip()
            for ln in log.splitlines()
            if "loaded checkpoint" in ln
        ]
        if not planner.stats.get("model_loaded", False):
            raise DemoError(f"the node could not load the model; see {node.log_path}:\n{node.output(15)}")
        self.facts["model"] = (
            "UNTRAINED (random weights)" if untrained else f"checkpoint {loaded[0] if loaded else '?'}"
        )
        self.facts["untrained"] = untrained
        self.step(f"node up in {time.perf_counter() - t:.1f} s; model: {self.facts['model']}")

    def replay(self, planner: Planner, domain: int) -> None:
        from uniseg3d_ros.tools.demo.feed import (
            RESEND_AFTER,
            feed_in_process,
            feed_with_replay_tool,
            wait_settled,
        )

        a = self.args
        t = time.perf_counter()
        seq = self.room.sequence_dir
        if a.replay_process:
            self.step(f"replaying with uniseg3d_replay at {a.rate}x (log: {self.out / 'replay.log'}) ...")
            feed_with_replay_tool(
                planner, seq, NODE_NAME, a.rate, a.timeout, child_env(domain), self.out / "replay.log"
            )
        else:
            self.step(f"replaying {a.frames} frames into the node (up to {a.rate}x, one frame per ack) ...")
            _, resent = feed_in_process(planner, seq, NODE_NAME, a.rate, a.timeout)
            self.facts["frames_resent"] = resent
        wait_settled(planner, a.timeout)
        s = planner.stats
        fused, points = int(s.get("rgbd_integrated", 0)), int(s.get("map_points", 0))
        causes = {k: v for k, v in s.items() if k in ("no_pose", "malformed_rgbd", "pose_wrong_frame") and v}
        self.facts.update(frames_fused=fused, map_points=points, replay_s=round(time.perf_counter() - t, 1))
        again = self.facts.get("frames_resent", 0)
        self.step(
            f"replay done: {fused}/{a.frames} frames fused -> {points} map points"
            + (f" (dropped: {causes})" if causes else "")
            + (f" ({again} sent again after {RESEND_AFTER:.0f} s without acknowledgement)" if again else "")
        )
        if fused == 0 or points == 0:
            raise DemoError(f"no frame reached the map (node counters: {s}); see {self.out / 'node.log'}")

    # ----------------------------------------------------------------- queries
    def run_queries(self, planner: Planner) -> None:
        runner = self.runner = QueryRunner(self, planner)
        runner.segment()
        for ref in runner.pick_sentences(self.args.sentences):
            runner.refer(ref)
        runner.open_vocab(list(self.args.vocabulary))
        runner.interactive()

    def record(self, q: Query) -> Query:
        self.queries.append(q)
        status = "ok" if q.ok else "FAILED"
        score = f", IoU {q.iou:.2f}" if q.iou is not None else ""
        self.step(
            f"{q.kind} {q.request}: {status} ({q.latency_ms:.0f} ms{score}) {'' if q.ok else q.message}"
        )
        if not q.ok and not self.args.keep_going:
            raise DemoError(f"{q.kind} {q.request} failed: {q.message} (use --keep-going to continue)")
        return q

    # ----------------------------------------------------------------- main
    def run(self) -> int:
        from uniseg3d_ros.tools.demo.report import format_summary, write_summary

        self.out.mkdir(parents=True, exist_ok=True)
        self.facts["out"] = str(self.out.resolve())
        print(f"UniSeg3D-ROS demo -> {self.out}", flush=True)
        _check_interfaces()
        self.make_room()
        with lease_domain(self.args.domain_id) as domain:
            self.facts["ros_domain_id"] = domain
            node = self.start_node(domain)
            planner = None
            try:
                self.step(f"started {NODE_NAME} (ROS domain {domain}, localhost only); loading the model ...")
                planner = Planner(domain, NODE_NAME, watch=[node])
                self.wait_for_node(planner, node)
                self.replay(planner, domain)
                self.run_queries(planner)
            finally:
                if planner is not None:
                    planner.close()
                code = node.stop()
                self.facts["node_exit_code"] = code
        if not self.args.no_figures:
            self.runner.figures()
        self.facts["total_s"] = round(time.perf_counter() - self.t0, 1)
        text = format_summary(self.facts, self.queries, self.runner)
        write_summary(self.out, text, self.facts, self.queries)
        print(text, flush=True)
        failed = [q for q in self.queries if not q.ok]
        if failed:
            print(f"uniseg3d_demo: {len(failed)} query(ies) failed (see above)", file=sys.stderr)
            return 1
        return 0


def _default_text_encoder(checkpoint: str) -> str:
    """'' (the node keeps the checkpoint's text encoder) when a checkpoint will be loaded, else
    'minilm' (the untrained model needs one; the node then runs random weights)."""
    from uniseg3d_ros.inference.loading import RANDOM_MODEL, default_checkpoint

    if checkpoint == RANDOM_MODEL:
        return "minilm"
    return "" if checkpoint or default_checkpoint().is_file() else "minilm"


def _check_interfaces() -> None:
    try:
        import rclpy  # noqa: F401
        import uniseg3d_msgs  # noqa: F401
    except ImportError as exc:
        raise DemoError(
            f"cannot import the ROS interfaces ({exc}); build them and set up the environment first: "
            "`make demo` does both, or `bash scripts/build_msgs.sh && . scripts/env.sh`"
        ) from exc


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    demo = Demo(args)
    # Ctrl-C and `kill` both unwind through the clean-up (child processes are stopped)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return demo.run()
    except DemoError as exc:
        print(f"uniseg3d_demo: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("uniseg3d_demo: interrupted; child processes stopped", file=sys.stderr)
        return 130


def cli() -> None:
    """The command (``uniseg3d_demo``, ``python -m uniseg3d_ros.tools.demo``): :func:`main`, then
    exit with its code. Interrupted (130), the node is already stopped and the process ends at once:
    through the interpreter's normal shutdown it ended by SIGINT (-2) instead of 130 about 1 run in
    20 when the signal came while the planner's rclpy context was being set up (not pinned further)."""
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    cli()
