"""The method a config names, built from the core modules (one place for the wiring)."""

from __future__ import annotations

from torch import nn

from moco.config.schema import Config, Method
from moco.core.end_to_end import EndToEnd
from moco.core.memory_bank import MemoryBank
from moco.core.method import ContrastiveMethod
from moco.core.moco import MoCo
from moco.core.moco_v3 import MoCoV3
from moco.core.simclr import SimCLR
from moco.encoders.resnet import ResNet, build_resnet
from moco.encoders.vit import ViTEncoder, build_vit
from moco.layers.heads import build_head, build_mlp

# The online network of these runs both views in one call (DDP allows one call per
# step), so its BN gets twice the groups: each view is normalised in its own groups,
# exactly as two calls would normalise it.
_TWO_VIEWS_IN_ONE_CALL = (Method.end_to_end, Method.simclr, Method.moco_v3)


def two_views_in_one_call(cfg: Config) -> bool:
    return cfg.model.method in _TWO_VIEWS_IN_ONE_CALL or (
        cfg.model.method == Method.moco and cfg.model.symmetric
    )


def build_model(
    cfg: Config, in_chans: int, bn_splits: int | None = None, num_images: int = 1
) -> ContrastiveMethod:
    """The method of ``cfg.model.method`` around a ResNet or ViT of ``cfg.model``.

    ``bn_splits`` overrides the BN groups per process (``model.bn_splits / world_size``
    when training); methods that run both views in one call get twice as many.
    ``num_images`` sizes the memory bank (one entry per training image); evaluation,
    which only needs ``encoder_q``, can leave it at 1.

    A ViT (``vit_*`` archs, timm) is built for ``augment.size`` images (other sizes
    still run: its position embedding is resampled); it has LayerNorm only, so the BN
    groups act on the methods' BN heads alone.
    """
    m = cfg.model
    splits = m.bn_splits if bn_splits is None else bn_splits
    if two_views_in_one_call(cfg):
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
    if m.method == Method.moco_v3:
        # MoCo v3's official heads (Sec. 4, ``_build_mlp``): projector of 2 layers for a
        # ResNet, 3 for a ViT (BN after each, the last without affine); predictor of 2
        # layers whose last has no BN
        layers = 3 if isinstance(net, ViTEncoder) else 2
        net.fc = build_mlp(net.feature_dim, hidden, m.dim, layers, last_bn=True, bn_splits=splits)
        predictor = build_mlp(m.dim, hidden, m.dim, 2, last_bn=False, bn_splits=splits)
        return MoCoV3(net, predictor, m.momentum, m.temperature)
    net.fc = build_head(net.feature_dim, m.dim, m.mlp, hidden)
    if m.method == Method.moco:
        return MoCo(
            net, m.dim, m.queue_size, m.momentum, m.temperature, m.shuffle_keys, m.symmetric
        )
    if m.method == Method.end_to_end:
        return EndToEnd(net, m.temperature, m.shuffle_keys)
    if m.method == Method.memory_bank:
        return MemoryBank(net, m.dim, num_images, m.queue_size, m.temperature, m.bank_momentum)
    if m.method == Method.simclr:
        return SimCLR(net, m.temperature)
    raise AssertionError(f"unhandled model.method {m.method}")


def backbone(model: nn.Module) -> ResNet | ViTEncoder:
    """The trained backbone (with its head as ``fc``) of any method: ``encoder_q``."""
    encoder = model.encoder_q
    assert isinstance(encoder, ResNet | ViTEncoder)
    return encoder
