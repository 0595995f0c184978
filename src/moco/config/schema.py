"""The configuration: typed dataclasses, YAML presets, strict ``key=value`` overrides.

OmegaConf checks every key and value against the dataclasses: an unknown key or a
value of the wrong type or outside an enum fails with a :class:`ConfigError` naming
the key and what it accepts. Values derived from the config (scaled lr, steps) are
computed by the engine and saved apart from what the user wrote.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from moco.errors import ConfigError


class Arch(str, enum.Enum):
    resnet18 = "resnet18"
    resnet34 = "resnet34"
    resnet50 = "resnet50"
    resnet101 = "resnet101"
    resnet152 = "resnet152"
    # Vision Transformers from timm (needs timm installed), patch 16 unless
    # model.patch_size says otherwise: timm's vit_{tiny,small,base}_patch16_224 (MoCo v3)
    vit_tiny = "vit_tiny"
    vit_small = "vit_small"
    vit_base = "vit_base"

    @property
    def is_vit(self) -> bool:
        return self.value.startswith("vit_")


LIBRARIES = ("torchvision", "timm")  # model.arch=LIBRARY:NAME builds that library's model
ARCH_HELP = (
    "one of " + ", ".join(a.value for a in Arch) + ", or torchvision:NAME / timm:NAME for "
    "any classification model of those libraries (list the names with python -c "
    "'import torchvision; print(torchvision.models.list_models(module=torchvision.models))' "
    "or python -c 'import timm; print(timm.list_models())')"
)


class ArchName(str):
    """The value of ``model.arch``: a built-in name (:class:`Arch`) or ``LIBRARY:NAME``.

    A ``str`` (so the config stays plain YAML) with the enum's ``value`` and ``is_vit``;
    ``library`` is ``"torchvision"`` / ``"timm"`` for prefixed names, else None, and
    ``model_name`` the name without the prefix. :func:`validate` checks the syntax; that
    the library has the model is checked when it is built (the library is imported then).
    """

    @property
    def value(self) -> str:
        return str(self)

    @property
    def library(self) -> str | None:
        lib, sep, _ = self.partition(":")
        return lib if sep else None

    @property
    def model_name(self) -> str:
        return self.partition(":")[2] if self.library else str(self)

    @property
    def is_vit(self) -> bool:
        return self.library is None and self.startswith("vit_")

    @property
    def is_builtin(self) -> bool:
        return self.library is None and self in {a.value for a in Arch}


class Method(str, enum.Enum):
    """The contrastive mechanism (MoCo Fig. 2) or relative; one module each in core/."""

    moco = "moco"  # (c) a momentum key encoder and a queue of K past keys
    end_to_end = "end_to_end"  # (a) keys from the query encoder, with gradient; K = batch
    memory_bank = "memory_bank"  # (b) Wu et al. 2018: K negatives sampled from a bank
    simclr = "simclr"  # NT-Xent over 2N views, in-batch negatives (SimCLR)
    moco_v3 = "moco_v3"  # symmetric, predictor, in-batch keys from a momentum encoder


class Optimizer(str, enum.Enum):
    sgd = "sgd"
    lars = "lars"  # SimCLR / MoCo v3 (ResNet): layer-wise trust ratio, no wd on bias / BN
    adamw = "adamw"  # MoCo v3 (ViT): AdamW, no wd on biases / norms


class MomentumSchedule(str, enum.Enum):
    constant = "constant"  # m throughout (MoCo v1/v2)
    cosine = "cosine"  # m -> 1 with a half-cosine over training (MoCo v3, BYOL)


class Schedule(str, enum.Enum):
    step = "step"
    cosine = "cosine"


class Amp(str, enum.Enum):
    none = "none"
    auto = "auto"  # bf16 where the device computes it natively (measured ~2x), else none
    bf16 = "bf16"
    fp16 = "fp16"


class ViewPreset(str, enum.Enum):
    v1 = "v1"  # MoCo v1
    v2 = "v2"  # MoCo v2
    demo = "demo"  # official CIFAR demo: v2's jitter and grayscale, no blur
    simclr = "simclr"  # SimCLR: crop scale 0.08-1, colour strength 1.0, blur


class Features(str, enum.Enum):
    backbone = "backbone"  # pooled features before the head (what linear probes use)
    head = "head"  # the normalised embedding after the head (the official CIFAR demo)


@dataclass
class ModelConfig:
    method: Method = Method.moco
    # resnet18..152, vit_tiny/small/base, or torchvision:NAME / timm:NAME (any
    # classification model of the library: its pooled pre-logits features, our head on
    # top, every BatchNorm split for shuffling BN, its stem adapted to the input channels)
    if TYPE_CHECKING:  # an ArchName in code; OmegaConf and the YAML see a str
        arch: ArchName = ArchName(Arch.resnet50.value)
    else:
        arch: str = Arch.resnet50.value
    # ResNet only (a ViT ignores cifar_stem and needs width=1; it has LayerNorm, so
    # bn_splits / shuffle_keys / sync_bn act on BN heads only)
    cifar_stem: bool = False  # 3x3/1 conv1, no max-pool (official CIFAR demo)
    width: float = 1.0  # multiplies all ResNet stage widths
    # ViT only: patch side (16 at 224 px; e.g. 4 for 28-32 px images), MoCo v3's fixed
    # random patch projection (Sec. 4) and fixed 2-D sin-cos position embedding
    patch_size: int = 16
    freeze_patch_embed: bool = False
    sincos_pos_embed: bool = False
    dim: int = 128  # embedding width C
    mlp: bool = False  # v2 2-layer MLP head
    # hidden width of the MLP heads; 0: the backbone's feature width (MoCo v2, SimCLR).
    # MoCo v3's projector and predictor use 4096.
    hidden_dim: int = 0
    # K: the queue (moco), or the negatives sampled per step (memory_bank); end_to_end,
    # simclr and moco_v3 take their negatives from the batch and ignore it
    queue_size: int = 65536
    momentum: float = 0.999  # m (moco, moco_v3: the key encoder's momentum)
    momentum_schedule: MomentumSchedule = MomentumSchedule.constant
    bank_momentum: float = 0.5  # memory_bank: entry <- normalise(b m + (1 - b) q) (Wu et al.)
    symmetric: bool = False  # moco: ctr(q1, k2) + ctr(q2, k1) (official CIFAR demo option)
    temperature: float = 0.07  # tau
    # BN groups G of the global batch (shuffling BN, Sec. 3.3). One process normalises G
    # groups apart (split BN); W processes normalise G / W each, so G must be a multiple
    # of W. The paper's 8 GPUs x 32 images is G = 8; the run is the same for any W | G.
    bn_splits: int = 1
    shuffle_keys: bool = True  # shuffle the key batch before the key encoder
    sync_bn: bool = False  # global BN across processes (SyncBatchNorm, CUDA); needs bn_splits=1

    def __post_init__(self) -> None:  # model.arch read as an ArchName (YAML keeps a str)
        self.arch = ArchName(self.arch.value if isinstance(self.arch, Arch) else self.arch)


@dataclass
class AugmentConfig:
    preset: ViewPreset = ViewPreset.v1
    size: int = 224  # output side of the random-resized crop
    crop_min_scale: float = 0.2  # lower bound of the crop area fraction (paper: 0.2)


@dataclass
class DataConfig:
    # "bundled", an IDX directory, cifar10:/cifar100:/stl10:PATH, folder:/images:PATH,
    # filelist:FILE
    source: str = "bundled"
    holdout_fraction: float = 0.1  # held out for evaluation when a source has no test split
    load_size: int = 0  # side images from files are stored at in memory; 0 = augment.size
    # folder:/images:/filelist: sources: decode and crop each image per step in DataLoader
    # workers (two-stage views, data/stream.py) instead of holding every image in memory
    stream: bool = False
    workers: int = 4  # DataLoader worker processes of the streaming path


@dataclass
class OptimConfig:
    epochs: int = 200
    batch_size: int = 256  # global: W processes take batch_size / W images each
    lr: float = 0.03  # base lr for a batch of 256; the run uses lr * batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: Optimizer = Optimizer.sgd
    schedule: Schedule = Schedule.step
    milestones: list[int] = field(default_factory=lambda: [120, 160])  # epochs, lr x 0.1
    warmup_epochs: float = 0.0  # linear warm-up from 0
    amp: Amp = Amp.none


@dataclass
class EvalConfig:
    knn_every: int = 10  # epochs between kNN monitors (also at epoch 0 and at the end); 0: off
    knn_k: int = 200
    knn_t: float = 0.1
    knn_features: Features = Features.backbone


@dataclass
class RunConfig:
    out_dir: str = "runs"  # a new sub-directory per run is made here
    name: str = ""  # run directory name; empty: <preset>-<timestamp>
    seed: int = 0
    # a new run whose encoders start from this checkpoint (ours or an official
    # main_moco.py one; same arch, head and channels), to continue pre-training on other
    # images; the optimiser, schedule and step start afresh. "": random initialisation
    init: str = ""
    init_queue: bool = False  # with run.init: take its queue too (same dim and queue_size)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    log_every: int = 10  # steps between logged metrics (and the only host syncs)
    # run-health diagnostics every log_every steps and the detectors' warnings
    # (docs/run-health.md); they change no weight: off only to save their ~1 % of the time
    diagnostics: bool = True
    progress: bool = True  # tqdm progress bar
    # seconds a collective waits for another process (torchrun) before the run stops
    dist_timeout: float = 600.0
    # speed options (docs/performance.md): torch.compile of both encoders, NHWC layout
    compile: bool = False
    channels_last: bool = False
    # CPU: keep freed memory in the process instead of page-faulting it back every step
    keep_freed_memory: bool = True


@dataclass
class Config:
    preset: str = MISSING  # name of the preset this config started from
    # the keys the user set (overrides): settings derived from the data set's size
    # (engine/plan.py::fit_to_data) never change these
    set_by_user: list[str] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


_PRESETS = resources.files("moco.config") / "presets"


def list_presets() -> dict[str, str]:
    """Preset name -> its one-line description (the YAML file's first comment line)."""
    out = {}
    for f in sorted(_PRESETS.iterdir(), key=lambda p: p.name):
        if f.name.endswith(".yaml"):
            first = f.read_text().splitlines()[0]
            out[f.name[:-5]] = first.lstrip("# ").strip()
    return out


def load_config(preset: str = "default", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The preset's values over the defaults, then ``key=value`` overrides, all checked."""
    presets = list_presets()
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; available: {', '.join(presets)}")
    try:
        cfg = OmegaConf.merge(
            OmegaConf.structured(Config),
            OmegaConf.create((_PRESETS / f"{preset}.yaml").read_text()),
        )
        cfg.preset = preset
    except OmegaConfBaseException as err:
        raise ConfigError(_explain(err)) from None
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Any, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """``key=value`` overrides (OmegaConf dotlist syntax) over a Config, checked."""
    try:
        node = OmegaConf.structured(cfg)
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value")
            node = OmegaConf.merge(node, OmegaConf.from_dotlist([item]))
    except OmegaConfBaseException as err:
        raise ConfigError(_explain(err)) from None
    obj = OmegaConf.to_object(node)
    assert isinstance(obj, Config)
    keys = [item.split("=", 1)[0].strip() for item in overrides]
    obj.set_by_user = sorted({*obj.set_by_user, *keys})
    validate(obj)
    return obj


def _explain(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    msg = str(err).splitlines()[0]
    if key and type(err).__name__ == "ConfigKeyError":
        parent = str(key).rsplit(".", 1)[0] if "." in str(key) else ""
        node: Any = OmegaConf.structured(Config)
        for part in parent.split(".") if parent else []:
            node = node[part]
        allowed = ", ".join(k for k in node.keys() if k != "preset" or not parent)
        return f"unknown config key {key!r}; keys allowed here: {allowed}"
    if key:
        return f"bad value for config key {key!r}: {msg}"
    return msg


def validate(cfg: Config) -> None:
    """Range checks the types cannot express; each names the key and the allowed range."""
    arch = ArchName(cfg.model.arch)
    checks: list[tuple[bool, str]] = [
        (
            arch.is_builtin or (arch.library in LIBRARIES and bool(arch.model_name.strip())),
            f"model.arch={cfg.model.arch!r} is not a known arch; model.arch is {ARCH_HELP}",
        ),
        (cfg.model.width > 0, "model.width must be > 0"),
        (cfg.model.dim > 0, "model.dim must be > 0"),
        (
            cfg.model.method != Method.moco
            or cfg.model.queue_size >= cfg.optim.batch_size * (2 if cfg.model.symmetric else 1),
            "model.queue_size must be >= optim.batch_size (x2 with model.symmetric=true: "
            "both views' keys are enqueued)",
        ),
        (cfg.model.queue_size >= 1, "model.queue_size must be >= 1"),
        (cfg.model.hidden_dim >= 0, "model.hidden_dim must be >= 0 (0: the feature width)"),
        (0.0 <= cfg.model.momentum <= 1.0, "model.momentum must be in [0, 1]"),
        (0.0 <= cfg.model.bank_momentum < 1.0, "model.bank_momentum must be in [0, 1)"),
        (
            not (cfg.model.symmetric and cfg.model.method != Method.moco),
            "model.symmetric=true applies to model.method=moco only (moco_v3 is always symmetric)",
        ),
        (
            _positive(cfg.model.temperature),
            f"model.temperature must be a finite number > 0 (tau), got {cfg.model.temperature}",
        ),
        (cfg.model.bn_splits >= 1, "model.bn_splits must be >= 1"),
        (
            cfg.optim.batch_size % cfg.model.bn_splits == 0,
            "optim.batch_size must be divisible by model.bn_splits",
        ),
        (
            not (cfg.model.sync_bn and cfg.model.bn_splits > 1),
            "model.sync_bn=true needs model.bn_splits=1 (global BN has no groups)",
        ),
        (cfg.augment.size > 0, "augment.size must be > 0"),
        (cfg.model.patch_size >= 1, "model.patch_size must be >= 1"),
        (
            not arch.is_vit or cfg.augment.size % cfg.model.patch_size == 0,
            "augment.size must be divisible by model.patch_size for ViT archs",
        ),
        (
            arch.library is None or cfg.model.width == 1.0 or "model.width" not in cfg.set_by_user,
            "model.width scales our ResNets only; drop it for torchvision:/timm: archs "
            "(a preset's width and cifar_stem are ignored by them)",
        ),
        (
            not arch.is_vit or cfg.model.width == 1.0,
            "model.width must be 1 for ViT archs (it scales ResNet stages only)",
        ),
        (0.0 < cfg.augment.crop_min_scale <= 1.0, "augment.crop_min_scale must be in (0, 1]"),
        (0.0 < cfg.data.holdout_fraction < 1.0, "data.holdout_fraction must be in (0, 1)"),
        (cfg.data.load_size >= 0, "data.load_size must be >= 0 (0: augment.size)"),
        (cfg.data.workers >= 0, "data.workers must be >= 0 (0: decode in the main process)"),
        (cfg.optim.epochs >= 1, "optim.epochs must be >= 1"),
        (cfg.optim.batch_size >= 1, "optim.batch_size must be >= 1"),
        (_positive(cfg.optim.lr), f"optim.lr must be a finite number > 0, got {cfg.optim.lr}"),
        (
            0.0 <= cfg.optim.momentum < 1.0,
            f"optim.momentum must be in [0, 1) (SGD / LARS momentum), got {cfg.optim.momentum}",
        ),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay must be >= 0"),
        (cfg.optim.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0"),
        (cfg.eval.knn_every >= 0, "eval.knn_every must be >= 0"),
        (cfg.eval.knn_k >= 1, "eval.knn_k must be >= 1"),
        (
            _positive(cfg.eval.knn_t),
            f"eval.knn_t must be a finite number > 0, got {cfg.eval.knn_t}",
        ),
        (cfg.run.log_every >= 1, "run.log_every must be >= 1"),
        (cfg.run.dist_timeout > 0, "run.dist_timeout must be > 0 (seconds)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _positive(x: float) -> bool:
    """``x > 0`` and finite: ``inf`` and ``nan`` pass no range check (nan compares False,
    inf would reach torch as a division by infinity)."""
    return math.isfinite(x) and x > 0


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_yaml(text: str) -> Config:
    """Read back a config saved with :func:`to_yaml` (e.g. from a checkpoint), checked."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(text))
    except OmegaConfBaseException as err:
        raise ConfigError(_explain(err)) from None
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, Config)
    return obj
