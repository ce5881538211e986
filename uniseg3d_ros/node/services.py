"""The service side of ``uniseg3d_node``: request handlers and response building (a mixin).

Each handler validates through the engine (bad requests answer ``success=false`` with the
reason), never raises (``_guard``), and never changes the map except ``~/clear_map``.
The node class (``uniseg3d_ros.node.node.UniSeg3DNode``) provides ``engine``, ``answerer``, ``map``,
``map_lock``, ``map_directory``, ``p`` (parameters), the publishers and the bookkeeping used here.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np
from geometry_msgs.msg import Point
from std_srvs.srv import Trigger
from uniseg3d_msgs.msg import InstanceResult
from uniseg3d_msgs.srv import Interactive, OpenVocab, Refer, SaveMap, Segment

from uniseg3d_ros.inference.results import QueryResult
from uniseg3d_ros.mapping.map_io import save_map
from uniseg3d_ros.node.map_files import MapPathError, ensure_map_directory, resolve_map_path
from uniseg3d_ros.node.markers import build_markers, to_marker_array


def instance_msgs(result: QueryResult) -> list[InstanceResult]:
    out = []
    for inst in result.instances:
        m = InstanceResult(
            id=int(inst.id),
            class_id=int(inst.class_id),
            label=inst.label,
            score=float(inst.score),
            point_count=int(inst.point_count),
            object_id=int(getattr(inst, "object_id", -1)),
        )
        m.centroid = Point(**dict(zip("xyz", map(float, inst.centroid))))
        m.bbox_min = Point(**dict(zip("xyz", map(float, inst.bbox_min))))
        m.bbox_max = Point(**dict(zip("xyz", map(float, inst.bbox_max))))
        m.point_indices = array.array("I", inst.point_indices.astype(np.uint32).tobytes())
        out.append(m)
    return out


class ServiceHandlers:
    """Service handlers mixed into the node class."""

    def _guard(self, srv_type: Any, handler: Any) -> Any:
        """Wrap a handler: count the call, turn unexpected exceptions into success=false (never crash)."""
        name = srv_type.__name__

        def call(request: Any, response: Any) -> Any:
            self.count(f"srv_{name}")
            if not self.active:
                response.success, response.message = False, "node is inactive (lifecycle): activate it first"
                self.count(f"srv_{name}_failed")
                return response
            try:
                response = handler(request, response)
            except Exception as exc:  # noqa: BLE001 - a service must answer, whatever happened
                self.count("srv_errors")
                self.warn_once(f"srv_error:{name}:{type(exc).__name__}", f"{name} failed: {exc!r}")
                response.success, response.message = False, f"internal error: {type(exc).__name__}: {exc}"
            if not response.success:
                self.count(f"srv_{name}_failed")
            return response

        return call

    def _snapshot(self) -> Any:
        with self.map_lock:
            return self.map.snapshot()

    def _query(self, response: Any, run: Any) -> QueryResult | None:
        if self.engine is None:
            response.success, response.message = False, self.engine_error or "model not loaded"
            return None
        snapshot = self._snapshot()
        # no node lock around the engine: it builds one encoding at a time and light queries answer
        # from the last finished one (never behind a running segment); the lock guards the objects.
        # Maps beyond one room are answered by the tiled engine (node/tiling.py), same calls
        result: QueryResult = run(self.answerer(snapshot), snapshot)
        if result.success:
            with self.inference_lock:
                result = self.track_objects(result, snapshot) if result.query == "segment" else result
                self.name_objects(result, snapshot)
        response.success, response.message = result.success, result.message
        response.header = self._header()
        response.latency_ms = float(result.latency_ms)
        if result.success:
            response.instances = instance_msgs(result)
        return result

    def _srv_segment(self, req: Segment.Request, resp: Segment.Response, progress: Any = None) -> Any:
        """Also the action's body (``resp`` a Segment action Result, ``progress`` its feedback)."""
        result = self._query(resp, lambda e, s: e.segment(s, float(req.score_threshold), progress=progress))
        if result is not None:
            self.last_segment_ms = float(result.latency_ms)
        if result is not None and result.success:
            resp.class_names = list(result.class_names)
            resp.num_points = len(result.points)
            if req.publish:
                self.publish_result(result)
            if req.return_cloud:
                resp.segmented_cloud = self._segmented(result)
        return resp

    def _srv_refer(self, req: Refer.Request, resp: Refer.Response) -> Refer.Response:
        result = self._query(resp, lambda e, s: e.refer(s, req.text, int(req.top_k)))
        if result is not None and result.success:
            self.publish_result(result)
        return resp

    def _srv_open_vocab(self, req: OpenVocab.Request, resp: OpenVocab.Response) -> OpenVocab.Response:
        result = self._query(
            resp, lambda e, s: e.open_vocab(s, list(req.class_names), float(req.score_threshold))
        )
        if result is not None and result.success:
            self.publish_result(result)
        return resp

    def _srv_interactive(self, req: Interactive.Request, resp: Interactive.Response) -> Interactive.Response:
        clicks = np.array([[c.x, c.y, c.z] for c in req.clicks], dtype=np.float64).reshape(-1, 3)
        result = self._query(resp, lambda e, s: e.interactive(s, clicks, float(req.max_click_distance)))
        if result is not None and result.success:
            self.publish_result(result)
        return resp

    def _srv_save_map(self, req: SaveMap.Request, resp: SaveMap.Response) -> SaveMap.Response:
        """Write the map under ``map_directory`` only (rules: node/map_files.py)."""
        try:
            path = resolve_map_path(self.map_directory, req.path, bool(req.overwrite))
            ensure_map_directory(self.map_directory)
        except MapPathError as exc:
            resp.success, resp.message = False, str(exc)
            return resp
        with self.map_lock:
            n = len(self.map)
            if n == 0:
                resp.success, resp.message = False, "map is empty: nothing to save"
                return resp
            try:
                save_map(self.map, path, overwrite=bool(req.overwrite))
            except FileExistsError:  # created between the check and the write
                resp.success, resp.message = False, f"{req.path!r} exists; set overwrite=true to replace it"
                return resp
            except OSError as exc:
                resp.success, resp.message = False, f"cannot write {req.path!r}: {exc.strerror or exc}"
                return resp
        resp.success, resp.message, resp.path, resp.num_voxels = True, f"saved {n} voxels", str(path), n
        return resp

    def _srv_clear_map(self, req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        with self.map_lock:
            n = len(self.map)
            self.map.clear()
            self.clear_epoch += 1  # sensor data received before this clear is not fused after it
        with self._sensor_lock:
            self.sync.clear()
            self.waiting.clear()
        if self.engine is not None:
            with self.inference_lock:
                self.engine.invalidate()
                self.invalidate_tiles()
        self.clear_objects()
        self.pub_markers.publish(to_marker_array(build_markers([], np.zeros((0, 3))), self.p.fixed_frame))
        resp.success, resp.message = True, f"cleared {n} voxels"
        return resp

    def _auto_segment(self) -> None:
        if self.engine is None or not self.active:
            return
        snap = self._snapshot()
        if len(snap.points) == 0:
            return
        result = self.answerer(snap).segment(snap)
        if result.success:
            with self.inference_lock:
                result = self.track_objects(result, snap)
        self.last_segment_ms = float(result.latency_ms)
        if result.success:
            self.publish_result(result)
        else:
            self.warn_once("auto_segment", f"auto segment failed: {result.message}")
