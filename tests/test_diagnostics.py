"""/diagnostics statuses from the node's counters (uniseg3d_ros.node.diagnostics, no ROS)."""

from __future__ import annotations

from uniseg3d_ros.node.diagnostics import ERROR, OK, WARN, build_statuses


def _stats(**kw):
    base = {
        "model_loaded": True,
        "map_points": 1000,
        "max_voxels": 4000,
        "map_version": 7,
        "encoded_version": 7,
        "encodes": 2,
        "clouds": 10,
        "clouds_integrated": 9,
        "malformed_cloud": 1,
        "sync_dropped": {},
        "srv_errors": 0,
        "last_segment_ms": 12.5,
    }
    return {**base, **kw}


def _by_part(statuses):
    return {s.name.split(": ")[1]: s for s in statuses}


def test_healthy_node_reports_ok_with_its_figures():
    s = _by_part(build_statuses("uniseg3d_node", _stats(), _stats()))
    assert set(s) == {"model", "map", "inputs", "queries"}
    assert all(st.level == OK and st.hardware_id == "uniseg3d_node" for st in s.values())
    assert s["model"].values["encoding"] == "current (map version 7)"
    assert s["model"].values["last_segment_ms"] == "12.5"
    assert s["map"].values["fill_percent"] == "25.0" and s["inputs"].values["dropped_malformed_cloud"] == "1"


def test_problems_raise_the_level_and_name_the_cause():
    prev = _stats()
    now = _stats(
        model_loaded=False,
        model_error="not configured",
        map_points=3900,
        map_version=8,
        no_pose=3,
        sync_dropped={"unmatched": 2},
        srv_errors=1,
    )
    s = _by_part(build_statuses("n", now, prev))
    assert s["model"].level == ERROR and s["model"].message == "not configured"
    assert s["model"].values["encoding"] == "stale"
    assert s["map"].level == WARN and "capacity" in s["map"].message
    assert s["inputs"].level == WARN
    assert "no_pose x3" in s["inputs"].message and "rgbd_sync_unmatched x2" in s["inputs"].message
    assert "malformed_cloud" not in s["inputs"].message  # an old drop is not news
    assert s["queries"].level == WARN
    # the next report without new drops is OK again
    assert _by_part(build_statuses("n", now, now))["inputs"].level == OK
