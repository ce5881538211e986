"""Building the node's :class:`InferenceEngine` from a checkpoint (or the random test model).

``load_engine`` is what the node, the demo, the benches and evaluation call; the node wraps it in
:func:`uniseg3d_ros.inference.preflight.load_engine_checked` (one-line reasons for bad settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uniseg3d_ros.inference.engine import EngineConfig, InferenceEngine

__all__ = ["RANDOM_MODEL", "default_checkpoint", "load_engine"]

RANDOM_MODEL = "random"  # checkpoint value that asks for the random small model explicitly


def default_checkpoint() -> Path:
    """The shipped model: ``uniseg3d_model/weights/default.pt`` (may be absent)."""
    import uniseg3d_model

    return Path(uniseg3d_model.__file__).resolve().parent / "weights" / "default.pt"


def load_engine(
    checkpoint: str = "",
    device: str = "cpu",
    text_encoder: str = "",
    cfg: EngineConfig | None = None,
    text_encoder_weights: str = "",
) -> InferenceEngine:
    """Build the engine: ``checkpoint`` ('' = :func:`default_checkpoint` when present, else a
    randomly initialised ``ModelConfig.small()`` model, reported in ``engine.notes``; 'random'
    asks for that random model explicitly, e.g. for tests). ``text_encoder`` '' = the checkpoint's
    own encoder ('minilm' for the untrained model); another name replaces it.
    Raises ``FileNotFoundError`` for a named checkpoint that does not exist."""
    import torch

    notes: list[str] = []
    if checkpoint == RANDOM_MODEL:
        path = None
    else:
        path = Path(checkpoint).expanduser() if checkpoint else default_checkpoint()
    if checkpoint and path is not None and not path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint!r} does not exist")
    if path is not None and path.is_file():
        from uniseg3d_model.checkpoint import load_checkpoint, read_checkpoint

        trained_with = str(read_checkpoint(path).get("text_encoder", ""))
        encoder = None
        if text_encoder and text_encoder != trained_with:
            from uniseg3d_model.text_encoders import build_text_encoder

            encoder = build_text_encoder(text_encoder, **_encoder_kw(text_encoder, text_encoder_weights))
            notes.append(f"text encoder {text_encoder!r} overrides the checkpoint's {trained_with!r}")
        model, _meta = load_checkpoint(str(path), device=device, text_encoder=encoder)
        notes.append(f"loaded checkpoint {path}")
    else:
        from uniseg3d_model.model import ModelConfig, UniSeg3D
        from uniseg3d_model.text_encoders import build_text_encoder

        name = text_encoder or "minilm"
        encoder = build_text_encoder(name, **_encoder_kw(name, text_encoder_weights))
        torch.manual_seed(0)  # the same random model in every process (tests compare node and engine)
        model = UniSeg3D(ModelConfig.small(), encoder).to(device)
        why = "checkpoint 'random' requested" if path is None else f"{path} is missing"
        notes.append(
            f"NO CHECKPOINT ({why}): running a RANDOMLY INITIALISED small model - "
            "masks and labels are NOT meaningful"
        )
    model.eval()
    return InferenceEngine(model, cfg, device=device, notes=notes)


def _encoder_kw(name: str, weights: str) -> dict[str, Any]:
    return {"weights": weights} if name.startswith("openclip:") and weights else {}
