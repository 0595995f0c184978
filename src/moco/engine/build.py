"""The method a config names, around the backbone it names (one place for the wiring).

The method itself comes from :mod:`moco.core.registry`; this module only builds the
backbone and its head from the config, then hands both to the method's
``from_options``.
"""

from __future__ import annotations

from moco.config.schema import Config
from moco.core.method import ContrastiveMethod
from moco.core.registry import method_class
from moco.encoders.resnet import ResNet, build_resnet
from moco.encoders.vit import ViTEncoder, build_vit
from moco.layers.heads import build_head, build_mlp


def method_of(cfg: Config) -> type[ContrastiveMethod]:
    return method_class(cfg.model.method.value)


def build_model(
    cfg: Config, in_chans: int, bn_splits: int | None = None, num_images: int = 1
) -> ContrastiveMethod:
    """The method of ``cfg.model.method`` around a ResNet or ViT of ``cfg.model``.

    ``bn_splits`` overrides the BN groups per process (``model.bn_splits / world_size``
    when training); methods that run both views in one call get twice as many
    (:mod:`moco.core.method`). ``num_images`` sizes the memory bank (one entry per
    training image); evaluation, which only needs ``encoder_q``, can leave it at 1.

    A ViT (``vit_*`` archs, timm) is built for ``augment.size`` images (other sizes
    still run: its position embedding is resampled); it has LayerNorm only, so the BN
    groups act on the methods' BN heads alone.
    """
    m = cfg.model
    method = method_of(cfg)
    splits = m.bn_splits if bn_splits is None else bn_splits
    if method.views_in_one_call(m):
        splits *= 2
    net: ResNet | ViTEncoder
    if m.arch.is_vit:
        net = build_vit(
            m.arch.value,
            in_chans,
            cfg.augment.size,
            m.patch_size,
            num_classes=m.dim,
            freeze_patch_embed=m.freeze_patch_embed,
            sincos_pos_embed=m.sincos_pos_embed,
        )
    else:
        net = build_resnet(m.arch.value, m.dim, m.cifar_stem, in_chans, m.width, splits)
    hidden = m.hidden_dim or net.feature_dim
    if method.head == "bn_mlp":
        # MoCo v3's projector (Sec. 4, official ``_build_mlp``): 2 layers for a ResNet,
        # 3 for a ViT, BN after each, the last without affine
        layers = 3 if isinstance(net, ViTEncoder) else 2
        net.fc = build_mlp(net.feature_dim, hidden, m.dim, layers, last_bn=True, bn_splits=splits)
    else:  # v1 linear or v2 MLP (model.mlp)
        net.fc = build_head(net.feature_dim, m.dim, m.mlp, hidden)
    return method.from_options(net, m, num_images, splits)
