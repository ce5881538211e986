"""Real service calls: ``~/refer`` answers while ``~/segment`` encodes a new map version in the same
node (reentrant query group + the engine's build discipline), instead of waiting seconds behind it."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tests import rosutil

NODE = "/uniseg3d_node"
PARAMS = {"text_encoder": "hash", "checkpoint": "random", "stats_period": 0.1, "map_publish_rate": 0.0}


@pytest.mark.ros
def test_refer_answers_while_segment_encodes_a_new_map():
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String
    from uniseg3d_msgs.srv import Refer, Segment

    from tests.synthetic_room import make_room
    from uniseg3d_ros.mapping.frames import stamp_msg
    from uniseg3d_ros.mapping.pointcloud2 import Header, points_to_cloud

    small, big = make_room(seed=0, density=150.0), make_room(seed=1, density=2500.0, size=3.0)
    big_points = big.points + np.float32([3.5, 0.0, 0.0])
    with rosutil.ros_domain() as domain, rosutil.ros_context(domain) as ctx:
        env = rosutil.ros_env(domain)
        args = ["-m", "uniseg3d_ros.node.node", "--ros-args"]
        for k, v in PARAMS.items():
            args += ["-p", f"{k}:={v}"]
        with rosutil.start_python(args, env=env, name="uniseg3d_node") as server:
            server.wait_for_output("ready:", timeout=120.0)
            node = rclpy.create_node("concurrency_probe", context=ctx)
            stats: dict = {}
            node.create_subscription(String, f"{NODE}/stats", lambda m: stats.update(json.loads(m.data)), 10)
            pub = node.create_publisher(
                PointCloud2, f"{NODE}/cloud", QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
            )
            refer = node.create_client(Refer, f"{NODE}/refer")
            segment = node.create_client(Segment, f"{NODE}/segment")

            def spin(pred, what, timeout=120.0):
                rosutil.spin_until(node, pred, timeout, what, procs=[server])

            def feed(points, colors, n):
                msg = points_to_cloud(Header(frame_id="map", stamp=stamp_msg(float(n))), points, colors,
                                      msg_factory=PointCloud2)
                last = [0.0]

                def sent():
                    if stats.get("clouds_integrated", 0) >= n:
                        return True
                    if time.monotonic() - last[0] > 1.0:
                        pub.publish(msg)
                        last[0] = time.monotonic()
                    return False

                spin(sent, f"cloud {n} integrated")

            try:
                rosutil.wait_for_service(node, refer, 60.0, [server])
                rosutil.wait_for_service(node, segment, 60.0, [server])
                feed(small.points, small.colors, 1)
                request = Refer.Request(text="the red chair")
                first = rosutil.call_service(node, refer, request, 300.0, [server])
                assert first.success, first.message
                feed(big_points, big.colors, 2)

                seg = segment.call_async(Segment.Request())
                spin(lambda: stats.get("encoding_version", -1) > 0, "the node encoding the new map")
                t0 = time.perf_counter()
                ans = refer.call_async(Refer.Request(text="the red chair"))
                spin(ans.done, "refer response")
                round_trip = time.perf_counter() - t0
                assert not seg.done(), "segment finished before refer: the test map is too small"
                res = ans.result()
                print(f"refer during segment: {res.latency_ms:.1f} ms in the engine, "
                      f"{1e3 * round_trip:.1f} ms round trip; {res.message}")
                assert res.success and "on map version" in res.message, res.message
                assert res.latency_ms < 100.0
                assert round_trip < 1.0  # a refer behind the encode would take seconds
                spin(seg.done, "segment response", timeout=600.0)
                assert seg.result().success, seg.result().message
            finally:
                node.destroy_node()
            assert server.stop() == 0
