"""The official UniSeg3D training loss (``ScanNetUnifiedCriterion`` and its parts, c272954).

Every term, its weight and where it comes from (docs/model.md has the same table):

- unified queries, every decoder stage (instance_criterion.py ``OVInstanceCriterion``): targets
  are the thing instances only (stuff is the semantic head's); ``SparseMatcher(topk=1)`` with
  class 0.5 / BCE 1 / dice 1 costs; class CE 0.5 (no-object weight 0.1; queries matched to a
  pseudo mask are ignored), mask BCE 1, mask dice 1 with the official scaling (``fix_dice_loss_
  weight`` + ``fix_mean_loss``): final stage 4 x the mean over scenes (~484-503), auxiliary
  stages 4 / B x the mean (~229-239, B = scenes in the batch);
- pseudo masks (SAM3D; ``is_novel``), every stage: a second ``SparseMatcher`` (BCE + dice costs)
  over the queries left unmatched; mask BCE 0.1 and dice 0.1 (dice 4 x the mean on every stage);
- IoU head, every stage (``pred_iou``): MSE between the raw IoU prediction and the IoU of the
  binarised mask (sigmoid >= 0.5) with its target, over the matched and pseudo-matched queries,
  summed over scenes / B, weight 0.1 (``IoU_loss_weight``);
- semantic head, final stage (semantic_criterion.py): CE over the unified queries against their
  superpoint's class (ignore unlabelled), mean over scenes, weight 0.2;
- clicks and sentences, every stage (point_/text_prompt_instance_criterion.py): class CE 0.5,
  BCE 1, dice 1 (same scaling) against the prompted instance, the whole x 0.1 (``total_weight``);
- click -> unified distillation, final stage (instance_criterion.py ~397-429, weight 0.1): only
  when every object is both matched and clicked; the 10 % superpoints with the highest max over
  the click masks; BCE of the sigmoid of the unified mask of the same object there towards the
  detached sigmoid of that click mask;
- contrastive, final stage (contrastive_criterion.py, per scene with sentences): InfoNCE between
  the sentence embeddings and the click embedding of the same object, logits scaled by a RAW
  learnable multiplier initialised at log(1/0.07) = 2.66 (not exponentiated), both directions
  averaged, weight 0.1; ranking: sum over ordered pairs i != j of max(0, s_ij - s_jj) on the
  unscaled cosine, weight 0.1; click -> sentence class distillation: BCE between
  sigmoid(sentence class logits) and detached sigmoid(click class logits), weight 0.1 (~101-105).
Scene means are over the scenes where a term exists, as in the official code.

Model fields read (uniseg3d_model/encoding.py): ``LayerPrediction.masks / class_logits /
embeddings`` and, with the official heads, ``LayerPrediction.iou`` ((Q,) raw IoU head, every
layer) and the final layer's ``LayerPrediction.sem_logits`` ((Q, V + 1) semantic head, the last
column the zero background, dropped as the official does); with our heads (no ``iou``) the IoU
term regresses sigmoid(``scores``) and the semantic term is skipped.
The contrastive multiplier is ``log(DecoderOutput.contrastive_scale)``: the model's raw parameter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uniseg3d_model.encoding import DecoderOutput, LayerPrediction
from uniseg3d_model.losses.matcher import dice_loss
from uniseg3d_model.losses.sparse_matcher import sparse_topk_match
from uniseg3d_model.losses.targets import SceneTargets, build_targets
from uniseg3d_model.official_heads import STUFF_LOGIT
from uniseg3d_model.structures import SceneSample


def binarised_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(M,) IoU of ``sigmoid(logits) >= 0.5`` with ``targets > 0.5``; both (M, S); no gradient."""
    with torch.no_grad():
        p = (logits.sigmoid() >= 0.5).float()
        t = (targets > 0.5).float()
        inter = (p * t).sum(-1)
        return inter / (t.sum(-1) + p.sum(-1) - inter + 1e-6)


def _iou_pred(out: DecoderOutput, layer: int) -> tuple[torch.Tensor, bool]:
    """(Qu,) IoU predictions of the unified queries and whether they are the raw IoU head."""
    full: LayerPrediction = out.layers[layer]
    raw = getattr(full, "iou", None)
    value = raw if raw is not None else full.scores
    return value.reshape(-1)[: out.num_unified], raw is not None


def _semantic_logits(out: DecoderOutput) -> torch.Tensor | None:
    """(Q, V + 1) final-layer semantic head (official heads), or None."""
    return getattr(out.final, "sem_logits", None)


class _Scene:
    """Targets and prompt rows of one scene (built once, used by every stage)."""

    def __init__(self, out: DecoderOutput, scene: SceneSample, mask_rule: str) -> None:
        dev = out.final.masks.device
        s = out.num_superpoints
        self.tg: SceneTargets = build_targets(scene, s, len(out.vocabulary), [], dev, mask_rule)
        pseudo = scene.pseudo_masks
        self.pseudo = (torch.as_tensor(pseudo, device=dev).bool().reshape(-1, s).float() if pseudo is not None
                       else torch.zeros(0, s, device=dev))
        qsp = out.query_superpoints
        self.allowed = (self.tg.masks[:, qsp.clamp_min(0)].t() > 0) | (qsp < 0)[:, None]  # (Qu, G)
        self.allowed_pseudo = (self.pseudo[:, qsp.clamp_min(0)].t() > 0) | (qsp < 0)[:, None]
        self.clicks = self._rows(scene.click_instance, out.num_clicks)
        self.texts = self._rows(scene.text_instance, out.num_texts)

    def _rows(self, instances, num: int) -> torch.Tensor:
        """(P, 2) [prompt index, target row] for prompts whose instance has a target."""
        dev = self.tg.masks.device
        if num == 0 or instances is None:
            return torch.zeros(0, 2, dtype=torch.long, device=dev)
        inst = torch.as_tensor(instances, dtype=torch.long, device=dev).reshape(-1)
        n_inst = len(self.tg.instance_to_target)
        if len(inst) != num or (len(inst) and (int(inst.min()) < 0 or int(inst.max()) >= n_inst)):
            raise ValueError(f"prompt instance ids must be {num} values in [0, {n_inst})")
        row = self.tg.instance_to_target[inst]
        keep = row >= 0
        return torch.stack([torch.arange(num, device=dev)[keep], row[keep]], dim=1)


class OfficialCriterion:
    """``criterion(outputs, scenes) -> (loss, logs)`` with the official terms and weights (see module
    doc); ``cfg`` is a :class:`uniseg3d_model.losses.LossConfig` (weights, ``mask_rule``)."""

    def __init__(self, cfg) -> None:  # noqa: ANN001 - LossConfig (import cycle)
        self.cfg = cfg

    # ---------------------------------------------------------------- unified queries, one stage
    def _unified_stage(self, outs, scenes: list[_Scene], layer: int, final: bool) -> dict[str, torch.Tensor]:
        c, n_scenes = self.cfg, len(outs)
        zero = outs[0].final.masks.new_zeros(())
        cls, bce, dice, ov_bce, ov_dice, iou = [], [], [], [], [], []
        matches = []
        for out, sc in zip(outs, scenes):
            pred = out.unified(layer)
            q_idx, g_idx = sparse_topk_match(pred.masks, sc.tg.masks, sc.allowed, pred.class_logits,
                                             sc.tg.labels, c.match_weights)
            matches.append((q_idx, g_idx))
            free = torch.ones(len(pred.masks), dtype=torch.bool, device=zero.device)
            free[q_idx] = False
            free_idx = torch.nonzero(free)[:, 0]
            oq, og = sparse_topk_match(pred.masks[free_idx], sc.pseudo, sc.allowed_pseudo[free_idx],
                                       weights=(0.0, 1.0, 1.0))
            oq = free_idx[oq]
            v = pred.class_logits.shape[1] - 1
            target = torch.full((len(pred.masks),), v, dtype=torch.long, device=zero.device)
            target[q_idx] = sc.tg.labels[g_idx]
            target[oq] = -1
            weight = pred.class_logits.new_ones(v + 1)
            weight[v] = c.no_object_weight
            cls.append(F.cross_entropy(pred.class_logits.float(), target, weight, ignore_index=-1))
            if len(q_idx):
                bce.append(F.binary_cross_entropy_with_logits(pred.masks[q_idx], sc.tg.masks[g_idx]))
                dice.append(dice_loss(pred.masks[q_idx], sc.tg.masks[g_idx]))
            if len(oq):
                ov_bce.append(F.binary_cross_entropy_with_logits(pred.masks[oq], sc.pseudo[og]))
                ov_dice.append(dice_loss(pred.masks[oq], sc.pseudo[og]))
            rows = torch.cat([q_idx, oq])
            if len(rows):
                tgt = torch.cat([sc.tg.masks[g_idx], sc.pseudo[og]])
                value, raw = _iou_pred(out, layer)
                guess = value[rows] if raw else value[rows].sigmoid()
                iou.append(F.mse_loss(guess.float(), binarised_iou(pred.masks[rows], tgt)))
        dice_scale = 4.0 if final else 4.0 / n_scenes
        terms = {
            "cls": torch.stack(cls).mean(),
            "bce": torch.stack(bce).mean() if bce else zero,
            "dice": dice_scale * torch.stack(dice).mean() if dice else zero,
            "pseudo_bce": torch.stack(ov_bce).mean() if ov_bce else zero,
            "pseudo_dice": 4.0 * torch.stack(ov_dice).mean() if ov_dice else zero,
            "iou": torch.stack(iou).sum() / n_scenes if iou else zero,
        }
        return terms, matches

    # ---------------------------------------------------------------- prompts, one stage
    def _prompt_stage(self, outs, scenes: list[_Scene], layer: int, final: bool, kind: str):
        cls, bce, dice = [], [], []
        for out, sc in zip(outs, scenes):
            rows = sc.clicks if kind == "click" else sc.texts
            if len(rows) == 0:
                continue
            pred = (out.clicks if kind == "click" else out.texts)(layer).select(rows[:, 0])
            masks, labels = sc.tg.masks[rows[:, 1]], sc.tg.labels[rows[:, 1]]
            cls.append(F.cross_entropy(pred.class_logits.float(), labels))
            bce.append(F.binary_cross_entropy_with_logits(pred.masks, masks))
            dice.append(dice_loss(pred.masks, masks))
        if not cls:
            return None
        scale = 4.0 if final else 4.0 / len(outs)
        return {"cls": torch.stack(cls).mean(), "bce": torch.stack(bce).mean(),
                "dice": scale * torch.stack(dice).mean()}

    # ---------------------------------------------------------------- final-stage inter-task terms
    def _distill_unified(self, out: DecoderOutput, sc: _Scene, match) -> torch.Tensor | None:
        q_idx, g_idx = match
        clicks = sc.clicks
        if len(g_idx) == 0 or len(clicks) == 0:
            return None
        if sorted(g_idx.tolist()) != sorted(clicks[:, 1].tolist()):
            return None  # official: skipped unless every object is both matched and clicked
        unified = out.unified().masks[q_idx[torch.argsort(g_idx)]]  # (I, S), ordered by object
        click = out.clicks().masks[clicks[torch.argsort(clicks[:, 1]), 0]]  # (I, S), same order
        top_val, top_obj = click.max(0)
        k = int(self.cfg.kd_ratio * top_val.shape[0])
        if k < 1:
            return None
        val, sp = top_val.topk(k)
        student = unified[top_obj[sp], sp].sigmoid().float()
        return F.binary_cross_entropy(student, val.sigmoid().detach().float())

    def _text_pairs(self, out: DecoderOutput, sc: _Scene):
        """(click rows, text rows) pairing each sentence with the click on its object."""
        first = {}
        for k, g in sc.clicks.tolist():
            first.setdefault(g, k)
        pairs = [(first[g], t) for t, g in sc.texts.tolist() if g in first]
        if not pairs:
            return None
        idx = torch.tensor(pairs, dtype=torch.long, device=out.final.masks.device)
        return idx[:, 0], idx[:, 1]

    def _contrastive(self, out: DecoderOutput, sc: _Scene):
        pairs = self._text_pairs(out, sc)
        if pairs is None:
            return None
        clicks, texts = out.clicks(), out.texts()
        refer = F.normalize(clicks.embeddings[pairs[0]].float(), dim=-1)
        key = F.normalize(texts.embeddings[pairs[1]].float(), dim=-1)
        scale = torch.log(out.contrastive_scale.float())  # the model's raw learnable parameter
        sim = refer @ key.t()
        labels = torch.arange(len(sim), device=sim.device)
        con = 0.5 * (F.cross_entropy(scale * sim, labels) + F.cross_entropy(scale * sim.t(), labels))
        off = ~torch.eye(len(sim), dtype=torch.bool, device=sim.device)
        rank = ((sim - sim.diagonal()[None, :]).clamp_min(0) * off).sum()  # max(0, s_ij - s_jj), i != j
        # the official cls_preds have the 18 thing columns + no-object: drop the stuff columns the
        # official instance head pins at STUFF_LOGIT, so the sigmoid BCE averages over the same columns
        student = texts.class_logits[pairs[1]].float()
        teacher = clicks.class_logits[pairs[0]].detach().float()
        live = ~((student <= STUFF_LOGIT) & (teacher <= STUFF_LOGIT)).all(0)
        dist = F.binary_cross_entropy(student[:, live].sigmoid(), teacher[:, live].sigmoid())
        return con, rank, dist

    def _semantic(self, out: DecoderOutput, sc: _Scene) -> torch.Tensor | None:
        logits = _semantic_logits(out)
        if logits is None or out.num_unified == 0:
            return None
        logits = logits[: out.num_unified].float()
        c = len(out.vocabulary)
        if logits.shape[1] == c + 1:
            logits = logits[:, :-1]  # the official drops the "unlabelled" column (ignore_index >= 0)
        target = sc.tg.sp_semantic[out.query_superpoints.clamp_min(0)]
        target = torch.where((target < 0) | (target >= logits.shape[1]), -100, target)
        if bool((target == -100).all()):
            return None
        return F.cross_entropy(logits, target, ignore_index=-100)

    # ---------------------------------------------------------------- call
    def __call__(self, outputs: list[DecoderOutput], samples: list[SceneSample]) -> tuple[torch.Tensor, dict]:
        c = self.cfg
        if len(outputs) != len(samples) or not outputs:
            raise ValueError(f"got {len(outputs)} outputs for {len(samples)} scenes")
        scenes = [_Scene(o, s, c.mask_rule) for o, s in zip(outputs, samples)]
        n_layers = len(outputs[0].layers)
        stages = list(range(n_layers)) if c.aux else [n_layers - 1]
        total = outputs[0].final.masks.new_zeros(())
        logs: dict[str, torch.Tensor] = {}

        def add(name: str, weight: float, value: torch.Tensor | None) -> None:
            nonlocal total
            if value is None or weight <= 0:
                return
            total = total + weight * value
            logs[name] = logs.get(name, 0.0) + value.detach().float()

        unified_weights = {"cls": c.class_weight, "bce": c.bce_weight, "dice": c.dice_weight,
                           "pseudo_bce": c.pseudo_bce_weight, "pseudo_dice": c.pseudo_dice_weight,
                           "iou": c.score_weight}
        final_matches = None
        for st in stages:
            final = st == n_layers - 1
            tag = "" if final else "aux_"
            if c.use_unified and all(o.num_unified for o in outputs):
                terms, matches = self._unified_stage(outputs, scenes, st, final)
                final_matches = matches if final else final_matches
                for k, v in terms.items():
                    add(f"{tag}unified_{k}", unified_weights[k], v)
            for kind, use, cls_w in (("click", c.use_clicks, c.class_weight),
                                     ("text", c.use_texts, c.class_weight if c.text_class_loss else 0.0)):
                terms = self._prompt_stage(outputs, scenes, st, final, kind) if use else None
                for k, v in (terms or {}).items():
                    w = {"cls": cls_w, "bce": c.bce_weight, "dice": c.dice_weight}[k]
                    add(f"{tag}{kind}_{k}", c.prompt_weight * w, v)
        sem, kd, con = [], [], []
        for b, (out, sc) in enumerate(zip(outputs, scenes)):
            sem.append(self._semantic(out, sc))
            if final_matches is not None and out.num_clicks:
                kd.append(self._distill_unified(out, sc, final_matches[b]))
            if out.num_clicks and out.num_texts:
                con.append(self._contrastive(out, sc))

        def mean(values):
            values = [v for v in values if v is not None]
            return torch.stack(values).mean() if values else None

        con = [x for x in con if x is not None]
        add("semantic", c.semantic_weight, mean(sem))
        add("kd_unified", c.kd_unified_weight, mean(kd))
        add("contrastive", c.contrastive_weight, mean([x[0] for x in con]))
        add("ranking", c.ranking_weight, mean([x[1] for x in con]))
        add("kd_referring", c.kd_referring_weight, mean([x[2] for x in con]))
        logs["loss"] = total.detach().float()
        values = torch.stack([torch.as_tensor(v, device=total.device).float() for v in logs.values()])
        return total, dict(zip(logs, values.tolist()))
