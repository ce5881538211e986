"""How many large clouds reach uniseg3d_node, per publisher reliability and node input QoS setting?

For each subscription setting (the default ``best_available``, and the overrides ``best_effort`` and
``reliable``) a node is started on an isolated loopback domain; a reliable and then a best-effort
publisher each send ``--count`` clouds of ``--points`` points at ``--rate`` Hz; the node's ~/stats
give clouds integrated and clouds DDS reported lost. The node's queue depth is large so that only
delivery, not integration speed, limits the count.

    python bench/bench_input_qos.py [--count 40] [--rate 10] [--points 100000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import rosutil  # noqa: E402

NODE = "/uniseg3d_node"
SETTINGS = ("best_available", "best_effort", "reliable")


def run_setting(setting: str, args: argparse.Namespace, tmp: Path) -> list[tuple[str, int, int, str]]:
    """-> [(publisher kind, integrated, lost, active subscription reliability)]"""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    from uniseg3d_ros.mapping.frames import stamp_msg
    from uniseg3d_ros.mapping.pointcloud2 import Header, points_to_cloud

    rng = np.random.default_rng(0)
    clouds = [
        points_to_cloud(
            Header(frame_id="map", stamp=stamp_msg(10.0 + k)),
            rng.uniform(0, 4, (args.points, 3)).astype(np.float32),
            rng.uniform(0, 1, (args.points, 3)).astype(np.float32),
            msg_factory=PointCloud2,
        )
        for k in range(3)
    ]
    params = {
        "checkpoint": "random",
        "text_encoder": "hash",
        "stats_period": 0.2,
        "map_publish_rate": 0.0,
        "queue_depth": 100,
        "map_directory": str(tmp),
        "name_check_time": 0.0,
        f"qos_overrides.{NODE}/cloud.subscription.reliability": setting,
    }
    node_args = ["-m", "uniseg3d_ros.node.node", "--ros-args"]
    for k, v in params.items():
        node_args += ["-p", f"{k}:={v}"]
    rows = []
    with rosutil.ros_domain() as domain, rosutil.ros_context(domain) as ctx:
        with rosutil.start_python(node_args, env=rosutil.ros_env(domain), name="qos_node") as server:
            server.wait_for_output("ready:", timeout=120.0)
            probe = rclpy.create_node("qos_bench", context=ctx)
            stats: dict = {}
            probe.create_subscription(String, f"{NODE}/stats", lambda m: stats.update(json.loads(m.data)), 10)

            def now() -> float:
                return probe.get_clock().now().nanoseconds * 1e-9

            def spin(pred, timeout, what):
                rosutil.spin_until(probe, pred, timeout, what, procs=[server])

            def measure(kind: str) -> None:
                rel = ReliabilityPolicy.RELIABLE if kind == "reliable" else ReliabilityPolicy.BEST_EFFORT
                pub = probe.create_publisher(
                    PointCloud2, f"{NODE}/cloud", QoSProfile(depth=5, reliability=rel)
                )
                want = kind if setting == "best_available" else setting
                t_end = now() + 3.0  # let discovery and the node's QoS re-resolution (1 s period) settle
                spin(
                    lambda: (
                        stats.get("input_qos", {}).get("cloud", {}).get("active") == want and now() > t_end
                    ),
                    20.0,
                    "subscription settled",
                )
                stats.clear()
                spin(lambda: bool(stats), 10.0, "stats")
                base_int, base_lost = stats["clouds_integrated"], stats.get("cloud_lost", 0)
                sent, t0 = [0], now()

                def step():
                    while sent[0] < min(args.count, int((now() - t0) * args.rate) + 1):
                        pub.publish(clouds[sent[0] % len(clouds)])
                        sent[0] += 1
                    return sent[0] >= args.count

                spin(step, args.count / args.rate + 10.0, "sent")
                last = [stats.get("clouds_integrated", 0), now()]

                def settled():
                    if stats.get("clouds_integrated", 0) != last[0]:
                        last[:] = [stats.get("clouds_integrated", 0), now()]
                    return now() - last[1] > 2.0

                spin(settled, 120.0, "integration settled")
                rows.append(
                    (
                        kind,
                        stats["clouds_integrated"] - base_int,
                        stats.get("cloud_lost", 0) - base_lost,
                        stats["input_qos"]["cloud"]["active"],
                    )
                )
                probe.destroy_publisher(pub)

            for kind in ("reliable", "best_effort"):
                measure(kind)

            probe.destroy_node()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--points", type=int, default=100_000)
    args = ap.parse_args()
    import tempfile

    print(
        f"{args.count} clouds of {args.points} points ({args.points * 16 / 1e6:.1f} MB) at {args.rate:g} Hz"
    )
    print("| node subscription setting | publisher | active | integrated | reported lost |")
    print("|---|---|---|---:|---:|")
    for setting in SETTINGS:
        with tempfile.TemporaryDirectory() as tmp:
            for kind, integrated, lost, active in run_setting(setting, args, Path(tmp)):
                print(f"| {setting} | {kind} | {active} | {integrated}/{args.count} | {lost} |", flush=True)


if __name__ == "__main__":
    main()
