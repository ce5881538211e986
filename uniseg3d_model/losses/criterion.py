"""UniSeg3D training criterion: ``build_criterion(cfg)`` picks the recipe.

``LossConfig.recipe = "official"``: :class:`uniseg3d_model.losses.official.OfficialCriterion`,
the released code's terms, matcher and scalings (the default of ``unified_scannet.yaml``).
``recipe = "ours"``: :class:`UniSeg3DCriterion` below (the recipe our small CPU models were
trained with):

Per decoder stage (final + auxiliary when ``aux``):
- unified queries: Hungarian matching (class + mask BCE + dice costs, sparse matching),
  then class cross-entropy (down-weighted "no object"), mask BCE, dice and mask-score
  regression (predicted IoU vs. the IoU of the binarised mask with its target);
- prompted queries: each click / sentence knows its target instance -> direct class, BCE,
  dice and score losses, scaled by ``prompt_weight`` (0.1 in the paper).
On the final stage (UniSeg3D's inter-task terms):
- ``kd_unified``: interactive -> unified distillation; on the ``kd_ratio`` superpoints where
  a click's mask is most confident, the matched unified query's mask is pulled (BCE) towards
  the click mask (teacher detached);
- ``kd_referring``: interactive -> referring; a sentence's class distribution (KL) and its
  mask on the same confident superpoints (BCE) follow a click on the same instance;
- ``contrastive``: InfoNCE over the batch between click and sentence query embeddings of the
  same instance (symmetric, learnable temperature from the model), plus a margin ranking
  term (``ranking_weight``) that keeps each matching pair above the mismatched ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from uniseg3d_model.data.labels import STUFF_CLASSES
from uniseg3d_model.encoding import DecoderOutput, LayerPrediction
from uniseg3d_model.losses.matcher import dice_loss, hungarian_match, mask_iou
from uniseg3d_model.losses.targets import SceneTargets, build_targets
from uniseg3d_model.structures import SceneSample

RECIPES = ("ours", "official")


@dataclass
class LossConfig:
    """Weights and switches. ``recipe`` picks the criterion (see module doc); the weights are the
    official config's values; ``mask_rule`` (superpoint targets, :mod:`.targets`) defaults to
    ``"half"`` (official) under the official recipe and ``"majority"`` under ours."""

    recipe: str = "ours"
    mask_rule: str | None = None
    class_weight: float = 0.5
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    score_weight: float = 0.1
    no_object_weight: float = 0.1
    match_weights: tuple[float, float, float] = (0.5, 1.0, 1.0)  # class, bce, dice
    sparse_matching: bool = True
    aux: bool = True
    use_unified: bool = True
    use_clicks: bool = True
    use_texts: bool = True
    prompt_weight: float = 0.1
    kd_unified_weight: float = 0.1
    kd_referring_weight: float = 0.1
    kd_ratio: float = 0.1
    contrastive_weight: float = 0.1
    ranking_weight: float = 0.1
    stuff_classes: tuple[str, ...] = field(default=STUFF_CLASSES)
    # official recipe only
    pseudo_bce_weight: float = 0.1  # SAM3D pseudo masks (OVInstanceCriterion loss_weight[4])
    pseudo_dice_weight: float = 0.1  # loss_weight[5]
    semantic_weight: float = 0.2  # ScanNetSemanticCriterion
    text_class_loss: bool = True  # TextPromptInstanceCriterion use_cls_supervise

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.mask_rule is None:
            self.mask_rule = "half" if self.recipe == "official" else "majority"
        if self.mask_rule not in ("majority", "half"):
            raise ValueError(f"mask_rule must be 'majority' or 'half', got {self.mask_rule!r}")


def build_criterion(cfg: LossConfig | None = None):  # noqa: ANN201 - either criterion
    """The criterion of ``cfg.recipe``: ``criterion(outputs, scenes) -> (loss, logs)``."""
    cfg = cfg or LossConfig()
    if cfg.recipe == "official":
        from uniseg3d_model.losses.official import OfficialCriterion

        return OfficialCriterion(cfg)
    return UniSeg3DCriterion(cfg)


def _zero(out: DecoderOutput) -> torch.Tensor:
    return out.final.masks.new_zeros(())


class UniSeg3DCriterion:
    """``criterion(outputs, scenes) -> (loss, logs)``; ``logs`` holds every component as a float
    (final stage; ``aux_*`` the sum over auxiliary stages) and ``loss`` their weighted sum."""

    def __init__(self, cfg: LossConfig | None = None) -> None:
        self.cfg = cfg or LossConfig()

    # ------------------------------------------------------------------ pieces
    def _mask_terms(self, pred: LayerPrediction, tgt_masks: torch.Tensor):
        """Mask BCE, dice and mask-score (IoU regression) losses of rows with known targets."""
        bce = F.binary_cross_entropy_with_logits(pred.masks, tgt_masks)
        dice = dice_loss(pred.masks, tgt_masks)
        score = F.mse_loss(pred.scores.sigmoid(), mask_iou(pred.masks, tgt_masks))
        return bce, dice, score

    def _unified(self, pred: LayerPrediction, out: DecoderOutput, tg: SceneTargets):
        c = self.cfg
        sp = out.query_superpoints if c.sparse_matching else None
        q_idx, g_idx = hungarian_match(
            pred.masks, pred.class_logits, tg.masks, tg.labels, sp, c.match_weights
        )
        v = pred.class_logits.shape[1] - 1
        cls_target = torch.full((pred.class_logits.shape[0],), v, dtype=torch.long, device=pred.masks.device)
        cls_target[q_idx] = tg.labels[g_idx]
        weight = pred.class_logits.new_ones(v + 1)
        weight[v] = c.no_object_weight
        terms = {"cls": F.cross_entropy(pred.class_logits, cls_target, weight)}
        if len(q_idx):
            bce, dice, score = self._mask_terms(pred.select(q_idx), tg.masks[g_idx])
        else:
            bce = dice = score = _zero(out)
        terms.update(bce=bce, dice=dice, score=score)
        return terms, q_idx, g_idx

    def _prompt(self, pred: LayerPrediction, rows: torch.Tensor, tg: SceneTargets, out: DecoderOutput):
        if len(rows) == 0:
            z = _zero(out)
            return {"cls": z, "bce": z, "dice": z, "score": z}
        sel = pred.select(rows[:, 0])
        masks, labels = tg.masks[rows[:, 1]], tg.labels[rows[:, 1]]
        bce, dice, score = self._mask_terms(sel, masks)
        return {"cls": F.cross_entropy(sel.class_logits, labels), "bce": bce, "dice": dice, "score": score}

    def _weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.cfg
        return (
            c.class_weight * terms["cls"]
            + c.bce_weight * terms["bce"]
            + c.dice_weight * terms["dice"]
            + c.score_weight * terms["score"]
        )

    @staticmethod
    def _prompt_rows(instances, num: int, tg: SceneTargets) -> torch.Tensor:
        """(P, 2) [prompt index, target row] for prompts whose instance has a target."""
        dev = tg.masks.device
        if num == 0 or instances is None:
            return torch.zeros(0, 2, dtype=torch.long, device=dev)
        inst = torch.as_tensor(instances, dtype=torch.long, device=dev).reshape(-1)
        if len(inst) != num:
            raise ValueError(f"got {len(inst)} prompt instance ids for {num} prompts")
        if len(inst) and (int(inst.min()) < 0 or int(inst.max()) >= len(tg.instance_to_target)):
            raise ValueError(f"prompt instance ids must be in [0, {len(tg.instance_to_target)})")
        row = tg.instance_to_target[inst]
        keep = row >= 0
        return torch.stack([torch.arange(num, device=dev)[keep], row[keep]], dim=1)

    def _topk_bce(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """BCE of student mask probs towards detached teacher probs on the teacher's most
        confident ``kd_ratio`` superpoints; student, teacher (S,) logits."""
        k = max(1, int(self.cfg.kd_ratio * teacher.shape[0]))
        top = teacher.detach().topk(k).indices
        return F.binary_cross_entropy_with_logits(student[top], teacher.detach()[top].sigmoid())

    def _inter_task(self, out: DecoderOutput, click_rows, text_rows, matched, b: int, kd_u, kd_r, pairs):
        """Final-stage distillation terms and contrastive pairs of one scene (appended to the
        given lists). ``matched``: (query_idx, target_idx) of the unified queries or None."""
        c = self.cfg
        if not (out.num_clicks and len(click_rows)):
            return
        clicks = out.clicks()
        if c.kd_unified_weight > 0 and matched is not None and len(matched[0]):
            query_of_target = dict(zip(matched[1].tolist(), matched[0].tolist()))
            uni_masks = out.unified().masks
            for k, g in click_rows.tolist():
                if g in query_of_target:
                    kd_u.append(self._topk_bce(uni_masks[query_of_target[g]], clicks.masks[k]))
        if not (out.num_texts and len(text_rows)):
            return
        texts = out.texts()
        first_click = {g: k for k, g in reversed(click_rows.tolist())}
        for t, g in text_rows.tolist():
            if g not in first_click:
                continue
            k = first_click[g]
            if c.kd_referring_weight > 0:
                teacher = clicks.class_logits[k].detach().float().softmax(-1)
                student = texts.class_logits[t].float().log_softmax(-1)
                kl = F.kl_div(student, teacher, reduction="sum")
                kd_r.append(kl + self._topk_bce(texts.masks[t], clicks.masks[k]))
            pairs.append((clicks.embeddings[k], texts.embeddings[t], (b, g)))

    # ------------------------------------------------------------------ call
    def __call__(self, outputs: list[DecoderOutput], scenes: list[SceneSample]) -> tuple[torch.Tensor, dict]:
        c = self.cfg
        if len(outputs) != len(scenes):
            raise ValueError(f"got {len(outputs)} outputs for {len(scenes)} scenes")
        if not outputs:
            raise ValueError("outputs must not be empty")
        n_layers = len(outputs[0].layers)
        stages = list(range(n_layers)) if c.aux else [n_layers - 1]
        parts: dict[str, torch.Tensor] = {}  # log name -> unweighted value (summed over stages)
        total = _zero(outputs[0])
        pairs: list = []  # (click emb, text emb, (scene, target)) for the contrastive loss
        kd_u: list[torch.Tensor] = []
        kd_r: list[torch.Tensor] = []
        for b, (out, scene) in enumerate(zip(outputs, scenes)):
            vocab = out.vocabulary
            stuff = [vocab.index(n) for n in c.stuff_classes if n in vocab]
            tg = build_targets(scene, out.num_superpoints, len(vocab), stuff, out.final.masks.device,
                               c.mask_rule)
            click_rows = self._prompt_rows(scene.click_instance, out.num_clicks, tg)
            text_rows = self._prompt_rows(scene.text_instance, out.num_texts, tg)
            matched = None
            for st in stages:
                tag = "" if st == n_layers - 1 else "aux_"
                groups = {}
                if c.use_unified and out.num_unified:
                    groups["unified"], *matched = self._unified(out.unified(st), out, tg)
                if c.use_clicks and out.num_clicks:
                    groups["click"] = self._prompt(out.clicks(st), click_rows, tg, out)
                if c.use_texts and out.num_texts:
                    groups["text"] = self._prompt(out.texts(st), text_rows, tg, out)
                for name, terms in groups.items():
                    w = 1.0 if name == "unified" else c.prompt_weight
                    total = total + w * self._weighted(terms) / len(outputs)
                    for k, val in terms.items():
                        key = f"{tag}{name}_{k}"
                        parts[key] = parts.get(key, 0.0) + val.detach().float() / len(outputs)
            self._inter_task(out, click_rows, text_rows, matched, b, kd_u, kd_r, pairs)
        con, rank = self._contrastive(pairs, outputs[0].contrastive_scale)
        extra = {
            "kd_unified": (c.kd_unified_weight, torch.stack(kd_u).mean() if kd_u else None),
            "kd_referring": (c.kd_referring_weight, torch.stack(kd_r).mean() if kd_r else None),
            "contrastive": (c.contrastive_weight, con),
            "ranking": (c.ranking_weight, rank),
        }
        for name, (w, val) in extra.items():
            if val is None or w <= 0:
                continue
            total = total + w * val
            parts[name] = val.detach().float()
        parts["loss"] = total.detach().float()
        values = torch.stack([torch.as_tensor(v, device=total.device).float() for v in parts.values()])
        return total, dict(zip(parts, values.tolist()))  # one device sync for all logs

    def _contrastive(self, pairs, scale: torch.Tensor):
        c = self.cfg
        if len(pairs) < 2 or (c.contrastive_weight <= 0 and c.ranking_weight <= 0):
            return None, None
        e_click = torch.stack([p[0] for p in pairs])
        e_text = torch.stack([p[1] for p in pairs])
        keys = [p[2] for p in pairs]
        same = torch.tensor([[a == b for b in keys] for a in keys], device=e_click.device)
        sim = F.normalize(e_click, dim=-1) @ F.normalize(e_text, dim=-1).t()
        logits = scale * sim
        neg_inf = torch.finfo(logits.dtype).min

        def multi_pos_ce(lg: torch.Tensor) -> torch.Tensor:
            pos = torch.where(same, lg, torch.full_like(lg, neg_inf)).logsumexp(1)
            return (lg.logsumexp(1) - pos).mean()

        con = 0.5 * (multi_pos_ce(logits) + multi_pos_ce(logits.t()))
        diag = sim.diagonal()
        diff = (sim - diag[None, :]).clamp_min(0)  # sim[i, j] should stay below sim[j, j]
        rank = diff[~same].mean() if bool((~same).any()) else None
        return con, rank
