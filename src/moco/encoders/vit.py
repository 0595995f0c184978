"""Vision Transformers from timm (optional dependency), shaped like our ResNet.

MoCo v3 (Chen, Xie, He, ICCV 2021) trains ViTs (Sec. 4, 5); this wraps
``timm.create_model(name, num_classes=0, ...)`` so every method sees the ResNet's
interface: ``forward_features`` (N, feature_dim) pooled features (timm's pre-logits:
the class token after the final LayerNorm), ``fc`` the head a method replaces with its
projector, and ``forward = fc(forward_features)``.

Parameter names are timm's under ``backbone.``: stripping that prefix (and ``fc.*``)
gives a state dict that loads strictly into the same ``timm.create_model`` call.

Two MoCo v3 options (Sec. 4, "stability"; the official ``vits.py``):

- ``freeze_patch_embed``: the patch projection keeps its random initialisation
  (``requires_grad=False``; the official ``stop_grad_conv1``), which the paper finds
  removes the training instability ("dips") of large-batch ViT training.
- ``sincos_pos_embed``: a fixed 2-D sin-cos position embedding (the official
  ``build_2d_sincos_position_embedding``) instead of a learned one.

Not reproduced: the official code's own weight initialisation (xavier-uniform with Q,
K, V treated apart, class token std 1e-6); timm's default initialisation is used.

The ViT has LayerNorm only, so split BN / shuffling BN do not apply to it (they still
apply to a method's BN heads), and the ResNet options ``cifar_stem`` and ``width`` do not
exist here: small images use a small ``patch_size`` instead (e.g. 4 for 32 px).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["VIT_ARCHS", "ViTEncoder", "build_vit", "sincos_pos_embed_2d"]

# our arch names -> timm's (patch 16 at 224 px; ``patch_size`` and ``img_size`` override)
VIT_ARCHS: dict[str, str] = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}


def _timm() -> Any:
    try:
        import timm
    except ImportError as err:
        raise ImportError("ViT backbones need timm: pip install timm") from err
    return timm


def sincos_pos_embed_2d(
    grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0
) -> torch.Tensor:
    """MoCo v3's fixed 2-D sin-cos embedding (1, 1 + grid_h * grid_w, dim), with a zero
    entry for the class token first; row-major over the patch grid, as timm's tokens.

    A quarter of the channels each: sin(w w_k), cos(w w_k), sin(h w_k), cos(h w_k) with
    w_k = temperature ** (-k / (dim / 4)) (the official ``vits.py``).
    """
    if dim % 4 != 0:
        raise ValueError(f"2-D sin-cos position embedding needs dim divisible by 4, got {dim}")
    gh, gw = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float32),
        torch.arange(grid_w, dtype=torch.float32),
        indexing="ij",
    )
    pos_dim = dim // 4
    omega = 1.0 / temperature ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim)
    out_w = gw.flatten()[:, None] * omega[None]
    out_h = gh.flatten()[:, None] * omega[None]
    emb = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), emb])[None]


class ViTEncoder(nn.Module):
    """A timm ViT (``backbone``, no classifier) with a separate head ``fc``.

    Args:
        name: a timm model name (``VIT_ARCHS`` values, or any timm ViT with a class token).
        num_classes: output width of the initial linear ``fc`` (methods replace it).
        in_chans: input channels (1 for greyscale data).
        img_size: the training image side; the position embedding is built for it.
            Other sizes work too (timm's ``dynamic_img_size``: the embedding is
            resampled per call; at ``img_size`` it is used as is).
        patch_size: patch side; ``None`` keeps the timm model's (16).
        freeze_patch_embed: fixed random patch projection (MoCo v3 Sec. 4).
        sincos_pos_embed: fixed 2-D sin-cos position embedding (MoCo v3 official code).
    """

    def __init__(
        self,
        name: str,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        patch_size: int | None = None,
        freeze_patch_embed: bool = False,
        sincos_pos_embed: bool = False,
    ) -> None:
        super().__init__()
        timm = _timm()
        kwargs: dict[str, Any] = {}
        if patch_size is not None:
            kwargs["patch_size"] = patch_size
        self.backbone = timm.create_model(
            name,
            pretrained=False,
            num_classes=0,
            in_chans=in_chans,
            img_size=img_size,
            dynamic_img_size=True,
            **kwargs,
        )
        if getattr(self.backbone, "cls_token", None) is None:
            raise ValueError(f"timm model {name!r} has no class token; MoCo v3 pools it")
        self.feature_dim: int = self.backbone.num_features
        if sincos_pos_embed:
            gh, gw = self.backbone.patch_embed.grid_size
            pe = self.backbone.pos_embed
            emb = sincos_pos_embed_2d(gh, gw, self.feature_dim)
            if pe is None or pe.shape != emb.shape:
                raise ValueError(f"timm model {name!r}: no class-token position embedding")
            with torch.no_grad():
                pe.copy_(emb)
            pe.requires_grad_(False)
        if freeze_patch_embed:
            for p in self.backbone.patch_embed.parameters():
                p.requires_grad_(False)
        self.fc: nn.Module = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, feature_dim): the class token after the last norm (timm's
        pre-logits with ``num_classes=0``), what linear probes and kNN use."""
        out: torch.Tensor = self.backbone(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def build_vit(
    name: str,
    in_chans: int,
    img_size: int,
    patch_size: int | None = None,
    num_classes: int = 1000,
    freeze_patch_embed: bool = False,
    sincos_pos_embed: bool = False,
) -> ViTEncoder:
    """A :class:`ViTEncoder`; ``name`` is ours (``vit_small``) or a timm model name."""
    return ViTEncoder(
        VIT_ARCHS.get(name, name),
        num_classes,
        in_chans,
        img_size,
        patch_size,
        freeze_patch_embed,
        sincos_pos_embed,
    )
