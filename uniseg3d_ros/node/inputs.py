"""The sensor side of ``uniseg3d_node``: pose, cloud and RGB-D callbacks that fuse into the map
(a mixin). They run in the sensor callback group, only decode and fuse (under ``map_lock``), and
count every drop with its cause (``~/stats``); data whose pose may still arrive waits in a small
bounded queue (``PoseWaitQueue``).

The node class (``uniseg3d_ros.node.node.UniSeg3DNode``) provides ``p``, ``active``, ``map``,
``map_lock``, ``clear_epoch``, ``resolver``, ``sync``, ``waiting``, ``_sensor_lock``, ``count`` and
``warn_once``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sensor_msgs.msg import PointCloud2

from uniseg3d_ros.mapping.frames import msg_pose_to_matrix, stamp_to_sec
from uniseg3d_ros.mapping.pointcloud2 import cloud_to_arrays
from uniseg3d_ros.mapping.rgbd import depth_to_points
from uniseg3d_ros.mapping.rgbd_sync import SyncedFrame, image_to_array

#: what to do when sensor data finds no pose (logged with the first drop of each kind)
POSE_HINT = (
    "publish the sensor pose on ~/pose (PoseStamped) or ~/odom (Odometry), or TF from the fixed frame to "
    "the data's frame_id, or set pose_source:=identity when the data is already in the fixed frame"
)


class SensorInputs:
    """Sensor callbacks mixed into the node class."""

    def _on_pose(self, header: Any, pose: Any) -> None:
        if not self.active:
            self.count("inactive_dropped")
            return
        if header.frame_id.lstrip("/") != self.p.fixed_frame.lstrip("/"):
            self.count("pose_wrong_frame")
            self.warn_once(
                "pose_wrong_frame",
                f"pose in frame {header.frame_id!r}, expected {self.p.fixed_frame!r}; ignored",
            )
            return
        try:
            self.resolver.buffer.add(stamp_to_sec(header.stamp), msg_pose_to_matrix(pose))
            self.count("poses")
            self._release_waiting()
        except ValueError as exc:
            self.count("malformed_pose")
            self.warn_once("malformed_pose", f"malformed pose: {exc}")

    def _resolve(self, frame_id: str, stamp: float) -> np.ndarray | None:
        return self.resolver.resolve(frame_id, stamp).pose

    def _place(
        self, frame_id: str, stamp: float, points: np.ndarray, colors: Any, counter: str, epoch: int
    ) -> None:
        """Integrate data stamped ``stamp`` in ``frame_id`` once its pose is known. Data whose pose
        may still arrive (pose topic, or TF newer than the data) waits in a small bounded queue
        (see PoseWaitQueue); data with an empty frame_id is rejected. ``epoch``: the node's clear
        count when the data arrived (data that arrived before a ``~/clear_map`` is never fused
        after it)."""
        if not frame_id.strip("/ "):
            self.count("empty_frame_id")
            self.warn_once("empty_frame_id", "data with an empty header.frame_id rejected (frame unknown)")
            return
        if len(self.waiting):  # transforms may have arrived since (tf2_ros gives no callback)
            self._release_waiting()
        res = self.resolver.resolve(frame_id, stamp)
        if res.pose is not None:
            self._integrate(points, colors, res.pose, stamp, counter, epoch)
            return
        if res.pending and self.waiting.may_still_come(stamp, self.resolver.buffer.latest_stamp()):
            with self._sensor_lock:
                dropped = self.waiting.push(frame_id, stamp, (points, colors, stamp, counter, epoch))
            if dropped is not None:
                self.count("no_pose")
                self.warn_once(
                    "no_pose_overflow", f"data waited too long for its pose and was dropped: {POSE_HINT}"
                )
            return
        self.count(res.cause)
        self.warn_once(f"{res.cause}:{frame_id}", res.reason)

    def _release_waiting(self) -> None:
        with self._sensor_lock:
            ready, expired = self.waiting.release(self._resolve, self.resolver.buffer.latest_stamp())
        for (points, colors, stamp, counter, epoch), pose in ready:
            self._integrate(points, colors, pose, stamp, counter, epoch)
        if expired:
            self.count("no_pose", len(expired))
            self.warn_once(
                "no_pose", f"no pose within {self.p.pose_tolerance} s of a frame; frame dropped: {POSE_HINT}"
            )

    def _integrate(
        self,
        points: np.ndarray,
        colors: np.ndarray | None,
        pose: np.ndarray,
        stamp: float,
        counter: str,
        epoch: int,
    ) -> None:
        """Fuse points (N, 3) sensor frame with ``pose`` T_fixed_sensor; count ``counter`` when any point
        landed in the map, else count the batch dropped with its reason. Data that arrived before
        the latest ``~/clear_map`` (``epoch`` behind the node's) is dropped, counted
        ``cleared_in_flight``: a clear empties the map of everything received before it."""
        if colors is None:
            colors = np.full(points.shape, 0.5, dtype=np.float32)
        with self.map_lock:
            stale = epoch != self.clear_epoch
            fused = 0 if stale else self.map.integrate(points, colors, pose, stamp=stamp)
            if fused:
                self._last_stamp = max(self._last_stamp, stamp)
        if stale:
            self.count("cleared_in_flight")
            return
        if fused:
            self.count(counter)
            return
        far = self.map.max_range is not None and bool(
            np.all(np.linalg.norm(np.asarray(points, dtype=np.float64), axis=1) > self.map.max_range)
        )
        cause = "dropped_out_of_range" if far else "dropped_outside_map"
        self.count(cause)
        self.warn_once(
            cause,
            f"a batch of {len(points)} points had none inside the map "
            + (f"(all beyond max_range {self.map.max_range} m)" if far else "(beyond the map extent or crop)")
            + "; dropped",
        )

    def _on_cloud(self, msg: PointCloud2) -> None:
        if not self.active:
            self.count("inactive_dropped")
            return
        self.count("clouds")
        epoch = self.clear_epoch
        try:
            points, colors = cloud_to_arrays(msg)
        except ValueError as exc:
            self.count("malformed_cloud")
            self.warn_once("malformed_cloud", f"malformed PointCloud2 dropped: {exc}")
            return
        if len(points):
            stamp = stamp_to_sec(msg.header.stamp)
            self._place(msg.header.frame_id, stamp, points, colors, "clouds_integrated", epoch)

    def _on_rgbd(self, stream: str, msg: Any) -> None:
        if not self.active:
            self.count("inactive_dropped")
            return
        self.count(f"{stream}_msgs")
        epoch = self.clear_epoch
        with self._sensor_lock:
            frame = self.sync.add(stream, stamp_to_sec(msg.header.stamp), msg)
        if frame is not None:
            self._integrate_rgbd(frame, epoch)

    def _integrate_rgbd(self, frame: SyncedFrame, epoch: int) -> None:
        try:
            depth = image_to_array(frame.depth)
            color = image_to_array(frame.color)
            if color.shape[:2] != depth.shape:
                raise ValueError(f"color {color.shape[:2]} and depth {depth.shape} sizes differ")
            points, colors = depth_to_points(
                depth,
                color,
                np.asarray(frame.info.k),
                min_depth=self.p.min_depth,
                max_depth=self.p.max_depth,
                stride=self.p.depth_stride,
            )
        except ValueError as exc:
            self.count("malformed_rgbd")
            self.warn_once("malformed_rgbd", f"malformed RGB-D frame dropped: {exc}")
            return
        if len(points):
            self._place(frame.depth.header.frame_id, frame.stamp, points, colors, "rgbd_integrated", epoch)
