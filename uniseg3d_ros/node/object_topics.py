"""The node's persistent object map: association after each segmentation, ``~/objects`` (latched
``uniseg3d_msgs/ObjectArray``), and naming the object every other query's result hits (a mixin).

The rules live in :mod:`uniseg3d_ros.inference.objects` (pure numpy). Here: which runs update the
map (``~/segment``, the action, auto-segment; any other query on a map version newer than the
object map's first refreshes it with a panoptic run on the same snapshot, which reuses the cached
encoding), and the messages. Callers hold ``inference_lock`` (it guards the object map only).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from uniseg3d_msgs.msg import ObjectArray, SceneObject

from uniseg3d_ros.inference.objects import ObjectConfig, ObjectMap, PersistentObject
from uniseg3d_ros.inference.results import QueryResult
from uniseg3d_ros.mapping.frames import stamp_msg


def _point(v: Any) -> Any:
    from geometry_msgs.msg import Point

    return Point(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def object_msg(obj: PersistentObject) -> SceneObject:
    return SceneObject(
        id=int(obj.id),
        class_id=int(obj.class_id),
        label=obj.label,
        score=float(obj.score),
        centroid=_point(obj.centroid),
        bbox_min=_point(obj.bbox_min),
        bbox_max=_point(obj.bbox_max),
        point_count=int(obj.point_count),
        first_seen=stamp_msg(obj.first_seen),
        last_seen=stamp_msg(obj.last_seen),
        times_seen=int(obj.times_seen),
        times_missed=int(obj.misses),
    )


class ObjectTracking:
    """Mixed into the node class (needs ``p``, ``engine``, ``answerer``, ``create_publisher``,
    ``_header``)."""

    def build_objects(self) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        p = self.p
        self.objects = ObjectMap(
            ObjectConfig(
                voxel_size=p.voxel_size,
                min_overlap=p.objects_min_overlap,
                retire_after=p.objects_retire_after,
            )
        )
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.pub_objects = self.create_publisher(ObjectArray, "~/objects", latched)

    def track_objects(self, result: QueryResult, snapshot: Any) -> QueryResult:
        """Update the object map with a segment result; returns the result with every instance's
        ``id`` and ``object_id`` set to its persistent id (instances without points dropped)."""
        update = self.objects.update(result.points, result.instances, self._last_stamp, result.map_version)
        instances = [
            replace(inst, id=pid, object_id=pid)
            for inst, pid in zip(result.instances, update.ids)
            if pid >= 0
        ]
        self.publish_objects()
        return replace(result, instances=instances)

    def name_objects(self, result: QueryResult, snapshot: Any) -> None:
        """Set ``object_id`` of each instance of a refer / interactive / open-vocabulary result."""
        if result.query == "segment":
            return
        # refresh a stale object map with a panoptic run on the same (cached) encoding; a light query
        # answered on an older version while a newer one is being encoded is looked up as it stands
        if self.objects.map_version != result.map_version and result.map_version == int(snapshot.version):
            base = self.answerer(snapshot).segment(snapshot)
            if base.success:
                self.track_objects(base, snapshot)
        for inst in result.instances:
            inst.object_id = self.objects.lookup(result.points, inst.point_indices)

    def clear_objects(self) -> None:
        self.objects.clear()
        self.publish_objects()

    def publish_objects(self) -> None:
        update = self.objects.last_update
        msg = ObjectArray(
            header=self._header(),
            map_version=max(0, int(self.objects.map_version)),
            class_names=list(self.engine.class_names) if self.engine is not None else [],
            objects=[object_msg(o) for o in self.objects.snapshot()],
            retired_ids=[int(i) for i in update.retired],
            merged_into=[int(v) for v in update.retired.values()],
        )
        self.pub_objects.publish(msg)
