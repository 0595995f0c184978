"""The method a config names, around the backbone it names (one place for the wiring).

The method itself comes from :mod:`moco.core.registry`; this module only builds the
backbone and its head from the config, then hands both to the method's
``from_options``.
"""

from __future__ import annotations

from tqdm import tqdm

from moco import dist
from moco.config.schema import Config
from moco.core.method import ContrastiveMethod
from moco.core.registry import method_class
from moco.encoders.library import LibraryEncoder, count_batch_norm, split_norm_act
from moco.encoders.resnet import ResNet, build_resnet
from moco.encoders.vit import ViTEncoder, build_vit
from moco.layers.heads import build_head, build_mlp
from moco.layers.split_bn import convert_to_split_bn, interleave_groups


def method_of(cfg: Config) -> type[ContrastiveMethod]:
    return method_class(cfg.model.method.value)


def build_backbone(
    cfg: Config, in_chans: int, splits: int = 1
) -> ResNet | ViTEncoder | LibraryEncoder:
    """The encoder ``cfg.model.arch`` names, its ``fc`` a linear layer to ``model.dim``,
    every BatchNorm a split-BN layer of ``splits`` groups (when ``splits`` > 1).

    ``resnet*``: our torchvision-named ResNet; ``vit_*``: a timm ViT
    (:mod:`moco.encoders.vit`); ``torchvision:NAME`` / ``timm:NAME``: that library's model
    (:mod:`moco.encoders.library`), built for ``augment.size`` images and ``in_chans``
    channels (a ConfigError naming the model when it cannot take them).
    """
    m = cfg.model
    if m.arch.is_vit:
        return build_vit(
            m.arch.value,
            in_chans,
            cfg.augment.size,
            m.patch_size,
            num_classes=m.dim,
            freeze_patch_embed=m.freeze_patch_embed,
            sincos_pos_embed=m.sincos_pos_embed,
        )
    if m.arch.library is None:
        return build_resnet(m.arch.value, m.dim, m.cifar_stem, in_chans, m.width, splits)
    net = LibraryEncoder(m.arch.value, m.dim, in_chans, cfg.augment.size)
    if splits > 1:  # shuffling BN for any network: every BN layer, in place, same names
        split_norm_act(net.backbone, splits)
        convert_to_split_bn(net.backbone, splits)
    return net


_NOTED: set[str] = set()  # notes printed by this process (one each)


def _note_no_batch_norm(cfg: Config, method: type[ContrastiveMethod]) -> None:
    """Say once that a BN-free backbone needs no shuffling BN (when the run asks for it)."""
    m = cfg.model
    if not (m.bn_splits > 1 or (method.reads_shuffle and m.shuffle_keys)):
        return
    note = (
        f"model.arch={m.arch.value} has no BatchNorm (LayerNorm / GroupNorm only): shuffling "
        "BN is not needed; model.bn_splits and model.shuffle_keys act on BN in the head only"
    )
    if note not in _NOTED and dist.is_main():
        _NOTED.add(note)
        tqdm.write(note)


def build_model(
    cfg: Config,
    in_chans: int,
    bn_splits: int | None = None,
    num_images: int = 1,
    *,
    quiet: bool = False,
) -> ContrastiveMethod:
    """The method of ``cfg.model.method`` around a ResNet or ViT of ``cfg.model``.

    ``bn_splits`` overrides the BN groups per process (``model.bn_splits / world_size``
    when training); methods that run both views in one call get twice as many
    (:mod:`moco.core.method`). ``num_images`` sizes the memory bank (one entry per
    training image); evaluation, which only needs ``encoder_q``, can leave it at 1.

    A ViT (``vit_*`` archs, timm) is built for ``augment.size`` images (other sizes
    still run: its position embedding is resampled); it has LayerNorm only, so the BN
    groups act on the methods' BN heads alone. So for any other BN-free backbone
    (``timm:convnext_*``, ...): the run says so in one line, unless ``quiet``.
    """
    m = cfg.model
    method = method_of(cfg)
    splits = m.bn_splits if bn_splits is None else bn_splits
    if method.views_in_one_call(m):
        splits *= 2
    net = build_backbone(cfg, in_chans, splits)
    backbone_bn = count_batch_norm(net)
    if backbone_bn == 0 and not quiet:
        _note_no_batch_norm(cfg, method)
    hidden = m.hidden_dim or net.feature_dim
    if method.head == "bn_mlp":
        # MoCo v3's projector (Sec. 4, official ``_build_mlp``): 2 layers for a ResNet,
        # 3 for a ViT, BN after each, the last without affine; any other backbone: 2
        # with BatchNorm (a convnet), 3 without (LayerNorm, as the ViT)
        layers = 2 if backbone_bn else 3
        net.fc = build_mlp(net.feature_dim, hidden, m.dim, layers, last_bn=True, bn_splits=splits)
    else:  # v1 linear or v2 MLP (model.mlp)
        net.fc = build_head(net.feature_dim, m.dim, m.mlp, hidden)
    # the BN groups (backbone and head) stay the contiguous chunks of the encoder's
    # input, each split-BN layer reading them through a view (one reorder per forward)
    interleave_groups(net)
    return method.from_options(net, m, num_images, splits)
