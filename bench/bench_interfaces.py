"""Transport cost of the uniseg3d_msgs services over rclpy + Fast DDS on loopback.

Starts a server process (this file with ``--serve``) that answers Segment with a labelled cloud of
``--points`` points (the x y z rgb label instance layout, 24 bytes a point) and Refer with one
instance whose mask holds a tenth of them, then prints, measured in this run:
  - start-up: child process start to service discovered by the client,
  - median round trip of Segment without / with the cloud, and of Refer.

Run: ``. scripts/env.sh && python bench/bench_interfaces.py [--points 300000] [--calls 15]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import rosutil  # noqa: E402

rosutil.ensure_interfaces()

import rclpy  # noqa: E402
from rclpy.executors import ExternalShutdownException  # noqa: E402
from sensor_msgs.msg import PointField  # noqa: E402
from uniseg3d_msgs.msg import InstanceResult  # noqa: E402
from uniseg3d_msgs.srv import Refer, Segment  # noqa: E402

FIELDS = [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7), ("label", 16, 6), ("instance", 20, 6)]


def serve(num_points: int) -> None:
    rclpy.init()
    node = rclpy.create_node("bench_iface_server")
    data = np.random.default_rng(0).integers(0, 255, size=num_points * 24, dtype=np.uint8).tobytes()
    mask = np.arange(0, num_points, 10, dtype=np.uint32)

    def segment(req: Segment.Request, res: Segment.Response) -> Segment.Response:
        res.success, res.num_points = True, num_points
        res.instances = [InstanceResult(id=i, point_count=100) for i in range(20)]
        if req.return_cloud:
            c = res.segmented_cloud
            c.height, c.width, c.point_step, c.row_step = 1, num_points, 24, 24 * num_points
            c.fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in FIELDS]
            c.data = data
        return res

    def refer(req: Refer.Request, res: Refer.Response) -> Refer.Response:
        res.success = True
        res.instances = [InstanceResult(id=1, label=req.text, point_count=len(mask), point_indices=mask)]
        return res

    node.create_service(Segment, "/bench_iface/segment", segment)
    node.create_service(Refer, "/bench_iface/refer", refer)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def median_ms(node, client, request, calls: int, server) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        rosutil.call_service(node, client, request, timeout=60.0, procs=[server])
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=300_000)
    ap.add_argument("--calls", type=int, default=15)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.points)
        return
    with rosutil.ros_domain() as domain, rosutil.ros_context(domain) as ctx:
        node = rclpy.create_node("bench_iface_client", context=ctx)
        seg = node.create_client(Segment, "/bench_iface/segment")
        ref = node.create_client(Refer, "/bench_iface/refer")
        t0 = time.perf_counter()
        cmd = [__file__, "--serve", "--points", str(args.points)]
        with rosutil.start_python(cmd, env=rosutil.ros_env(domain)) as server:
            rosutil.wait_for_service(node, seg, timeout=60.0, procs=[server])
            rosutil.wait_for_service(node, ref, timeout=60.0, procs=[server])
            startup = time.perf_counter() - t0
            no_cloud = median_ms(node, seg, Segment.Request(return_cloud=False), args.calls, server)
            cloud = median_ms(node, seg, Segment.Request(return_cloud=True), args.calls, server)
            refer = median_ms(node, ref, Refer.Request(text="the chair"), args.calls, server)
        node.destroy_node()
    mb = args.points * 24 / 1e6
    print(f"uniseg3d_msgs over rclpy/Fast DDS loopback, {args.calls} calls each (medians)")
    rows = [
        ("server start -> service discovered", f"{startup:8.2f} s"),
        ("Segment round trip, no cloud", f"{no_cloud:8.2f} ms"),
        (
            f"Segment round trip, {args.points} pt cloud ({mb:.1f} MB)",
            f"{cloud:8.2f} ms ({mb / cloud * 1e3:.0f} MB/s)",
        ),
        (f"Refer round trip, 1 instance, {args.points // 10} indices", f"{refer:8.2f} ms"),
    ]
    for name, value in rows:
        print(f"  {name:<52}{value}")


if __name__ == "__main__":
    main()
