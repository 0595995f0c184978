"""Run health: what the loop measures every ``run.log_every`` steps, and the detectors
that say once, with evidence, when a run is not learning (docs/run-health.md).

Measuring (:func:`measure_step`) happens on a logged step only, after the optimiser step
and before the method's ``after_step`` (so a queue is as the loss saw it); it returns
0-d tensors on the device, read back with the loop's own host sync at log time. Nothing
here changes a weight, a buffer or a random stream: a run with ``run.diagnostics=false``
trains the same weights to the bit.

The detectors (:class:`Detectors`) read the logged values, keep what they need in the
loop state's ``history`` (saved in the checkpoint, so a resumed run does not warn
twice), and return :class:`HealthWarning` s for the loop to print and log. Their thresholds
are the constants below, set from measured runs on the bundled data (the table in
docs/run-health.md).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from moco.core import diagnostics as dg
from moco.core.method import ContrastiveMethod, StepOutput

# --- thresholds (docs/run-health.md, "Detectors": the measured runs behind each) -------
NO_LEARNING_RATIO = 0.98  # epoch-mean loss / chance at or above this ...
NO_LEARNING_EPOCHS = 2  # ... at the end of an epoch >= this: no learning
BN_CHEAT_ACC = 0.20  # epoch pretext top-1 at or above this ...
BN_CHEAT_KNN_GAIN = 0.05  # ... while kNN top-1 gained less than this over random init
COLLAPSE_RANK_RATIO = 0.06  # effective rank / min(N, C) below this ...
COLLAPSE_STD_RATIO = 0.10  # ... or dimension std x sqrt(C) below this (after epoch 1)
DIVERGE_GRAD_FACTOR = 8.0  # grad norm above this x the median of the run's so far ...
DIVERGE_LOSS_RATIO = 1.5  # ... or the step's loss above this x chance
DIVERGE_MIN_RECORDS = 5  # logged steps before the grad-norm rule may fire
QUEUE_DATA_FRACTION = 0.5  # a queue holding more than this fraction of the data set


@dataclass(frozen=True)
class HealthWarning:
    detector: str  # no_learning, bn_cheating, collapse, divergence, queue_vs_data
    message: str  # what was seen
    evidence: dict[str, float]  # the measured values and the thresholds they crossed
    advice: str  # what to try


@torch.no_grad()
def measure_step(
    model: ContrastiveMethod, out: StepOutput, trainable: Sequence[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The step's health quantities as 0-d tensors on the device (no host sync), and
    the queries themselves as ``_q`` (their effective rank needs an SVD, which on a GPU
    waits for the device: :func:`read` computes it on the host after the loop's sync).

    Logits are cosine similarities (the loss's logits times tau), so they read the same
    at any temperature; q and its positives are this process's rows."""
    q = out.q.detach().float()
    pos = (out.k[: len(q)] if out.pos is None else out.pos).float()
    sims = model.diagnostic_logits(out).float()
    c = q.shape[1]
    values = {f"logit_{k}": v for k, v in dg.logit_stats(sims).items()}
    values |= {
        "step_loss": out.loss.detach().float(),
        "top1": dg.pretext_topk(sims, 1),
        "top5": dg.pretext_topk(sims, 5),
        "alignment": dg.alignment(q, pos),
        "uniformity": dg.uniformity(q),
        "dim_std_ratio": dg.dimension_std(q) * math.sqrt(c),
        "grad_norm": dg.grad_norm(trainable).to(q.device),
        "_q": q,
    }
    if model.key_names:
        values["drift"] = dg.encoder_drift(getattr(model, model.key_names[0]), model.encoder_q)
    return values


def read(measured: dict[str, torch.Tensor]) -> dict[str, float]:
    """:func:`measure_step`'s tensors as numbers: one device-to-host copy of the scalars
    and of the queries, then the queries' effective rank on the host."""
    scalars = {k: v for k, v in measured.items() if k != "_q"}
    values = dict(zip(scalars, torch.stack(list(scalars.values())).cpu().tolist(), strict=True))
    if "_q" in measured:
        q = measured["_q"].cpu()
        rank = float(dg.effective_rank(q))
        values |= {"eff_rank": rank, "eff_rank_ratio": rank / min(q.shape)}
    return values


def state_values(
    model: ContrastiveMethod, steps: int, per_step: int, steps_per_epoch: int, images: int
) -> dict[str, float]:
    """The method's stored state, from the step count alone: a queue's oldest key (age in
    steps) and fill; a memory bank's expected entry age and fill under the epoch sampler
    (each image once an epoch). ``per_step``: keys enqueued (or images seen) per step,
    over all processes. Empty for methods without stored negatives."""
    k = int(getattr(model, "queue_size", 0))
    if model.negatives == "queue":
        return {
            "queue_age": float(dg.queue_age(steps, k, per_step)),
            "queue_fill": dg.queue_fill(steps, k, per_step),
            "queue_of_data": k / images,
        }
    if model.negatives == "bank":
        fill = min(1.0, steps * per_step / images)
        age = fill * min(steps, steps_per_epoch) / 2 + (1 - fill) * steps
        return {"bank_age": age, "bank_fill": fill}
    return {}


class Detectors:
    """The five detectors; each fires at most once per run (``history["warned"]``)."""

    def __init__(self, history: dict[str, Any]) -> None:
        self.h = history
        self.h.setdefault("warned", [])
        self.h.setdefault("grad_norms", [])

    def _fire(self, w: HealthWarning) -> list[HealthWarning]:
        if w.detector in self.h["warned"]:
            return []
        self.h["warned"].append(w.detector)
        return [w]

    def at_start(self, queue_size: int | None, images: int) -> list[HealthWarning]:
        """queue_vs_data: the queue holds a large fraction of the data set, so a query's
        own image's earlier key is often among its negatives."""
        if queue_size is None or queue_size / images <= QUEUE_DATA_FRACTION:
            return []
        frac = queue_size / images
        return self._fire(HealthWarning(
            "queue_vs_data",
            f"the queue holds K={queue_size} keys for {images} training images "
            f"({frac:.0%} of the data set): a query's own image is often among its negatives",
            {"queue_of_data": frac, "threshold": QUEUE_DATA_FRACTION},
            f"lower model.queue_size to at most {int(QUEUE_DATA_FRACTION * images)} "
            "(the default recipe keeps it near 20 % of the data)",
        ))  # fmt: skip

    def at_log(self, values: dict[str, float], epoch_float: float) -> list[HealthWarning]:
        """divergence and collapse, from one logged step's values."""
        out: list[HealthWarning] = []
        gn = values.get("grad_norm", math.nan)
        past = self.h["grad_norms"]
        ratio = values.get("step_loss", math.nan) / values.get("loss_chance", math.nan)
        if len(past) >= DIVERGE_MIN_RECORDS and gn > DIVERGE_GRAD_FACTOR * statistics.median(past):
            out += self._fire(self._diverging(values, gn, statistics.median(past)))
        elif ratio > DIVERGE_LOSS_RATIO or not math.isfinite(gn):
            out += self._fire(self._diverging(values, gn, statistics.median(past or [gn])))
        if math.isfinite(gn):
            past.append(gn)
            del past[:-50]  # the recent past only
        rank, std = values.get("eff_rank_ratio", 1.0), values.get("dim_std_ratio", 1.0)
        if epoch_float >= 1 and (rank < COLLAPSE_RANK_RATIO or std < COLLAPSE_STD_RATIO):
            out += self._fire(HealthWarning(
                "collapse",
                f"the embeddings collapsed: effective rank {values['eff_rank']:.1f} "
                f"({rank:.3f} of the most a batch can have), dimension std x sqrt(C) {std:.3f}",
                {"eff_rank_ratio": rank, "rank_threshold": COLLAPSE_RANK_RATIO,
                 "dim_std_ratio": std, "std_threshold": COLLAPSE_STD_RATIO},
                "raise model.temperature, lower optim.lr, check that the key encoder's "
                "momentum (model.momentum) is not 1 and that negatives are used",
            ))  # fmt: skip
        return out

    def _diverging(self, values: dict[str, float], gn: float, median: float) -> HealthWarning:
        return HealthWarning(
            "divergence",
            f"the run is diverging: gradient norm {gn:.3g} (median so far {median:.3g}), "
            f"step loss {values.get('step_loss', math.nan):.4g} against chance "
            f"{values.get('loss_chance', math.nan):.4g}",
            {"grad_norm": gn, "grad_norm_median": median,
             "grad_factor_threshold": DIVERGE_GRAD_FACTOR,
             "loss_ratio": values.get("step_loss", math.nan) / values.get("loss_chance", 1.0),
             "loss_ratio_threshold": DIVERGE_LOSS_RATIO},
            "lower optim.lr (or lengthen optim.warmup_epochs); with fp16 AMP try bf16 or FP32",
        )  # fmt: skip

    def at_epoch_end(self, epoch: int, loss: float, chance: float) -> list[HealthWarning]:
        """no_learning: the epoch-mean loss is still at its chance value."""
        ratio = loss / chance
        if epoch < NO_LEARNING_EPOCHS or not ratio >= NO_LEARNING_RATIO:
            return []
        return self._fire(HealthWarning(
            "no_learning",
            f"the loss {loss:.4f} is still at its chance value {chance:.4f} (every logit equal) "
            f"(ratio {ratio:.4f}) after {epoch} epochs: the run is not learning",
            {"loss_ratio": ratio, "threshold": NO_LEARNING_RATIO, "epoch": float(epoch)},
            "check model.momentum (0 makes the keys follow the queries step by step), "
            "model.temperature (too small saturates the softmax) and optim.lr",
        ))  # fmt: skip

    def at_knn(
        self, epoch: int, knn: float, knn_init: float | None, acc: float
    ) -> list[HealthWarning]:
        """bn_cheating: the pretext task is nearly solved while the kNN monitor stalls."""
        if epoch < 1 or knn_init is None or math.isnan(acc):
            return []
        gain = knn - knn_init
        if not (acc >= BN_CHEAT_ACC and gain < BN_CHEAT_KNN_GAIN):
            return []
        return self._fire(HealthWarning(
            "bn_cheating",
            f"pretext top-1 is {acc:.3f} while kNN top-1 gained only {gain:+.3f} over random "
            f"init ({knn_init:.3f} -> {knn:.3f}): the pretext task is solved by a shortcut, "
            "typically BN statistics leaking between a query and its key",
            {"pretext_acc": acc, "acc_threshold": BN_CHEAT_ACC, "knn_gain": gain,
             "gain_threshold": BN_CHEAT_KNN_GAIN},
            "turn model.shuffle_keys on and keep model.bn_splits > 1 on one device (or one "
            "BN group per process), or use model.sync_bn",
        ))  # fmt: skip


def replay(records: list[dict[str, Any]]) -> list[tuple[int, HealthWarning]]:
    """The detectors run again over a run's ``metrics.jsonl`` records (its ``health``,
    ``train`` and ``knn`` records, in the loop's order): the (step, warning) pairs the
    current thresholds give. How docs/run-health.md's table was made from measured
    runs; also to re-check an old run."""
    d = Detectors({})
    out: list[tuple[int, HealthWarning]] = []
    health = [r for r in records if r["kind"] == "health"]
    if not health:
        return out
    first = health[0]
    if "queue_of_data" in first:
        images = 1_000_000
        k = round(first["queue_of_data"] * images)
        out += [(0, w) for w in d.at_start(k, images)]
    chance = first["loss_chance"]
    knn_init = next((r["top1"] for r in records if r["kind"] == "knn" and r["epoch"] == 0), None)
    ends = {r["epoch"]: r["step"] for r in records if r["kind"] == "data"}  # finished
    epoch_end = {
        r["epoch"]: r for r in records if r["kind"] == "train" and ends.get(r["epoch"]) == r["step"]
    }
    spe = next((step / e for e, step in ends.items() if e > 0), health[0]["step"])
    knn = [r for r in records if r["kind"] == "knn" and r["epoch"] > 0]
    by_step = sorted(
        [(r["step"], 0, r) for r in health]
        + [(r["step"], 1, r) for r in epoch_end.values()]
        + [(r["step"], 2, r) for r in knn],
        key=lambda t: (t[0], t[1]),
    )
    for step, kind, r in by_step:
        if kind == 0:
            out += [(step, w) for w in d.at_log(r, step / spe)]
        elif kind == 1:
            out += [(step, w) for w in d.at_epoch_end(r["epoch"], r["loss"], chance)]
        elif kind == 2:
            acc = epoch_end.get(r["epoch"], {}).get("pretext_acc", math.nan)
            out += [(step, w) for w in d.at_knn(r["epoch"], r["top1"], knn_init, acc)]
    return out
