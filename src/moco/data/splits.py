"""The in-memory data type, :class:`ImageSplits`, and how a held-out split is drawn.

A leaf of ``moco.data`` (it imports only :mod:`moco.errors`): the readers
(:mod:`~moco.data.cifar`, :mod:`~moco.data.stl10`, :mod:`~moco.data.folder`, and the IDX
reading of :mod:`~moco.data.sources`) build ``ImageSplits`` with the held-out rules here,
the streamed listing (:mod:`~moco.data.file_splits`) holds out files with the same rules,
and the dispatcher (:mod:`~moco.data.sources`) imports the readers, which never import it.
The few-label subsets of the supervised protocols (:func:`label_subset`) are drawn here
too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from moco.errors import ConfigError, DataSourceError

BUNDLED = "bundled"
KINDS = (
    "idx",
    "cifar10",
    "cifar100",
    "stl10",
    "folder",
    "images",
    "filelist",
)  # the KIND of a "KIND:PATH" source
FILE_KINDS = ("folder", "images", "filelist")  # the kinds read from image files
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass
class ImageSplits:
    name: str
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor  # uint8 (M, C, H, W), held out from pre-training
    test_labels: torch.Tensor  # int64 (M,)
    held_out: str  # how the held-out split was made: "test split" or "10% of train, seed 0"
    classes: tuple[str, ...] | None = None  # class names by label, where the source has them
    # uint8 (U, C, H, W) images without labels (STL-10's 100k): pre-training only, never
    # in the kNN memory or the linear probe, which use the labelled train split
    unlabelled_images: torch.Tensor | None = None

    def __post_init__(self) -> None:
        u = self.unlabelled_images
        if u is not None and (u.dtype != torch.uint8 or u.shape[1:] != self.train_images.shape[1:]):
            raise DataSourceError(
                f"{self.name}: unlabelled images {u.dtype} {tuple(u.shape)} do not match the "
                f"training images {self.train_images.dtype} {tuple(self.train_images.shape)}"
            )

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    @property
    def num_classes(self) -> int:
        return int(self.train_labels.max().item()) + 1

    @property
    def num_pretrain_images(self) -> int:
        """``len(pretrain_images)``, without building it."""
        u = self.unlabelled_images
        return len(self.train_images) + (0 if u is None else len(u))

    @property
    def pretrain_images(self) -> torch.Tensor:
        """uint8 (N + U, C, H, W): what pre-training sees, the training images followed by
        the unlabelled ones. A new tensor (a copy) when there are unlabelled images, so
        take it once; without them, ``train_images`` itself."""
        u = self.unlabelled_images
        return self.train_images if u is None else torch.cat([self.train_images, u])

    @property
    def pretrain_labels(self) -> torch.Tensor:
        """int64 (N + U,), aligned with ``pretrain_images``: ``train_labels`` then -1 for
        every unlabelled image (pre-training never reads them; -1 can never pass for a
        class)."""
        u = self.unlabelled_images
        if u is None:
            return self.train_labels
        return torch.cat([self.train_labels, self.train_labels.new_full((len(u),), -1)])

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images in [0, 1], for normalisation."""
        x = self.train_images.float().div(255.0)
        return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())


# ----------------------------------------------------------------------------- holding out


def hold_out(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(kept, held-out) indices of a source without a held-out split, and how they were
    drawn: stratified when every image is labelled, else random; seeded. The description
    names the classes of one image, which stay in training whole (:func:`stratified_split`)."""
    if bool((labels >= 0).all()):
        keep, held = stratified_split(labels, fraction, seed)
        how = f"{fraction:.0%} of train, stratified, seed {seed}"
        return keep, held, how + _kept_whole_note(labels)
    keep, held = random_split(len(labels), fraction, seed)
    return keep, held, f"{fraction:.0%} of the images, random, seed {seed}"


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held) with ``fraction`` of every class held out, drawn with ``seed``.

    Every class of two images or more holds out ``round(fraction * n)`` of its n images,
    at least one, and keeps at least one for training. A class of one image cannot do
    both; it stays in training whole (a class missing from training could never be
    predicted, by kNN or a probe, while a class missing from the held-out split only
    has no test images): :func:`hold_out` says so in its description. When every class
    has one image nothing can be held out, and that is refused.
    """
    if not 0.0 < fraction < 1.0:
        raise DataSourceError(f"holdout fraction must be in (0, 1), got {fraction}")
    if len(labels) == 0:
        raise DataSourceError("no images to hold any out from")
    g = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_held = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    held_all = torch.cat(held)
    if len(held_all) == 0:
        classes = len(keep)
        raise DataSourceError(
            f"every class has 1 image ({classes} class{'es' if classes != 1 else ''}, "
            f"{len(labels)} images): holding out {fraction:.0%} of a class would leave none "
            "of it for training, so nothing can be held out; add images, or give the "
            "source its own held-out split"
        )
    return torch.sort(torch.cat(keep)).values, torch.sort(held_all).values


def single_image_classes(labels: torch.Tensor) -> list[int]:
    """The labels (>= 0) that only one image has: :func:`stratified_split` keeps them in
    training and holds none of them out."""
    counts = torch.bincount(labels[labels >= 0])
    return torch.nonzero(counts == 1).flatten().tolist()


def _kept_whole_note(labels: torch.Tensor) -> str:
    """``"; class 3 has 1 image: ..."`` for :func:`hold_out`'s description, or ``""``."""
    single = single_image_classes(labels)
    if not single:
        return ""
    more = f" and {len(single) - 8} more" if len(single) > 8 else ""
    shown = ", ".join(map(str, single[:8])) + more
    which = f"class {shown} has" if len(single) == 1 else f"classes {shown} have"
    return f"; {which} 1 image: kept in training, none held out"


def random_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held) with a seeded random ``fraction`` of ``range(n)`` held out."""
    if not 0.0 < fraction < 1.0:
        raise DataSourceError(f"holdout fraction must be in (0, 1), got {fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_held = min(n - 1, max(1, round(fraction * n)))
    return torch.sort(perm[n_held:]).values, torch.sort(perm[:n_held]).values


# ----------------------------------------------------------------------- few labels


def check_label_fraction(fraction: object) -> float:
    """``fraction`` as a float in (0, 1], or a :class:`ConfigError` naming ``label_fraction``."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ConfigError(f"label_fraction must be a number in (0, 1], got {fraction!r}")
    value = float(fraction)
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise ConfigError(f"label_fraction must be a number in (0, 1], got {fraction}")
    return value


def label_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Positions (sorted) of a stratified, seeded ``fraction`` of ``labels``: the labelled
    images of the semi-supervised protocol (SimCLR / MoCo: 1 % and 10 % of the labels).

    Every class of n images keeps ``floor(fraction * n + 0.5)`` of them (rounded half up),
    at least one, so no class goes unseen. Each class's images are shuffled once with
    ``seed`` and the first ones kept, so the subsets of one seed are nested: the 1 %
    subset lies inside the 10 % one. ``fraction`` 1 returns every position, in order.
    """
    fraction = check_label_fraction(fraction)
    if fraction == 1.0:
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels).tolist():  # sorted: the draw does not depend on order
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        chosen.append(idx[: max(1, math.floor(fraction * len(idx) + 0.5))])
    if not chosen:
        return torch.zeros(0, dtype=torch.long)
    return torch.sort(torch.cat(chosen)).values
