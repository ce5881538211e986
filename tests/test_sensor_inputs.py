"""The node's sensor path (``uniseg3d_ros.node.inputs.SensorInputs``) against ``~/clear_map``: data
received before a clear is never fused after it, even when the clear lands while that data is on
its way into the map (released from the pose-wait queue, or resolved and about to be fused).

The mixin runs on a plain host with the node's real map, locks, pose resolver and wait queue; the
services' clear is the node's own (``ServiceHandlers._srv_clear_map``), so no rclpy is needed.
"""

from __future__ import annotations

import threading
from collections import Counter
from types import SimpleNamespace

import numpy as np
from std_srvs.srv import Trigger

from uniseg3d_ros.mapping.frames import PoseResolver, PoseWaitQueue
from uniseg3d_ros.mapping.rgbd_sync import RGBDSynchronizer
from uniseg3d_ros.mapping.scene_map import SceneMap
from uniseg3d_ros.node.inputs import SensorInputs
from uniseg3d_ros.node.services import ServiceHandlers


class Host(SensorInputs, ServiceHandlers):
    """What the node provides to the sensor mixin and to ``~/clear_map`` (no model, no publishers)."""

    def __init__(self) -> None:
        self.p = SimpleNamespace(fixed_frame="map", pose_tolerance=0.05)
        self.active = True
        self.map = SceneMap(0.05)
        self.map_lock = threading.Lock()
        self._sensor_lock = threading.Lock()
        self.clear_epoch = 0
        self._last_stamp = 0.0
        self.resolver = PoseResolver("map", "topic", sensor_frame="camera")
        self.waiting = PoseWaitQueue(5, 0.05)
        self.sync = RGBDSynchronizer()
        self.engine = None
        self.counts: Counter = Counter()
        self.pub_markers = SimpleNamespace(publish=lambda msg: None)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def warn_once(self, key: str, message: str) -> None:
        pass

    def clear_objects(self) -> None:
        pass

    def clear(self) -> None:
        res = self._srv_clear_map(Trigger.Request(), Trigger.Response())
        assert res.success, res.message


def _points(n=500, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 2.0, (n, 3)).astype(np.float32)


def test_cloud_waiting_for_its_pose_is_not_fused_when_a_clear_lands_as_it_is_released():
    host = Host()
    epoch = host.clear_epoch
    host._place("camera", 1.0, _points(), None, "clouds_integrated", epoch)
    assert len(host.waiting) == 1 and len(host.map) == 0  # waits for its pose

    resolve = host._resolve

    def resolve_then_clear(frame_id, stamp):  # the clear lands between release and fusion
        pose = resolve(frame_id, stamp)
        if pose is not None:
            host.clear_epoch += 1
        return pose

    host._resolve = resolve_then_clear
    host.resolver.buffer.add(1.0, np.eye(4))
    host._release_waiting()
    assert len(host.map) == 0 and host.counts["cleared_in_flight"] == 1
    assert host.counts["clouds_integrated"] == 0


def test_cloud_received_before_a_clear_is_dropped_and_one_received_after_is_fused():
    host = Host()
    before = host.clear_epoch  # a callback read the epoch, then the clear ran
    host.clear()
    host._place("map", 1.0, _points(), None, "clouds_integrated", before)
    assert len(host.map) == 0 and host.counts["cleared_in_flight"] == 1

    host._place("map", 2.0, _points(seed=1), None, "clouds_integrated", host.clear_epoch)
    assert len(host.map) > 0 and host.counts["clouds_integrated"] == 1
    host.clear()
    assert len(host.map) == 0 and len(host.waiting) == 0 and host.clear_epoch == 2
