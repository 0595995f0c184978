"""Split BN: BatchNorm that normalises G contiguous groups of the batch apart.

The building block of shuffling BN on one device (MoCo Sec. 3.3; the key-batch shuffle
itself is :mod:`moco.core.shuffle_bn`). A split-BN layer keeps BatchNorm's parameter and
buffer names and shapes, so state dicts load into plain torchvision / timm models. The
encoders use it without knowing the method; the methods' heads use the 1-d variant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def split_batch_norm(
    bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, g: int, interleaved: bool
) -> torch.Tensor:
    """Training-mode BN of ``x`` (n, C, ...) with G groups normalised apart: the G
    contiguous chunks of ``x``, or, when ``interleaved``, the rows i with i % G == j
    (group j), which is what the chunks become after :func:`interleave`."""
    n, c = x.shape[0], x.shape[1]
    rest = x.shape[2:]
    _check_divisible(n, g)
    if bn.momentum is None:
        raise ValueError(f"{type(bn).__name__} needs a float momentum")
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    # (n, C, ...) -> (n/G, G*C, ...): each group's channels become separate channels of
    # one BN call, so one kernel normalises all groups. Interleaved rows make this a
    # view (row i*G + j is sample i of group j); contiguous chunks need a transposed copy.
    if interleaved:
        xs = x.reshape(n // g, g * c, *rest)
    else:
        xs = x.reshape(g, n // g, c, *rest).transpose(0, 1).reshape(n // g, g * c, *rest)
    # per-channel tensors tiled G times (an expanded view made contiguous: fewer ops
    # than ``repeat``); batch_norm updates the tiled running stats of each group, and
    # the layer keeps their mean over the groups
    mean = _tile(bn.running_mean, g)
    var = _tile(bn.running_var, g)
    out = F.batch_norm(
        xs, mean, var, _tile(bn.weight, g), _tile(bn.bias, g), True, bn.momentum, bn.eps
    )
    if bn.running_mean is not None and bn.running_var is not None:
        assert mean is not None and var is not None
        with torch.no_grad():
            torch.mean(mean.view(g, c), dim=0, out=bn.running_mean)
            torch.mean(var.view(g, c), dim=0, out=bn.running_var)
    if interleaved:
        return out.reshape(n, c, *rest)
    return out.reshape(n // g, g, c, *rest).transpose(0, 1).reshape(n, c, *rest)


def _tile(t: torch.Tensor | None, g: int) -> torch.Tensor | None:
    return None if t is None else t.expand(g, -1).reshape(-1)


def _check_divisible(n: int, g: int) -> None:
    if n % g != 0:
        raise ValueError(f"batch of {n} is not divisible into {g} BN groups (bn_splits)")


def interleave(x: torch.Tensor, g: int) -> torch.Tensor:
    """Rows of G contiguous chunks reordered so that row i*G + j is row i of chunk j."""
    n = x.shape[0]
    _check_divisible(n, g)
    return x.reshape(g, n // g, *x.shape[1:]).transpose(0, 1).reshape(x.shape)


def deinterleave(y: torch.Tensor, g: int) -> torch.Tensor:
    """The inverse of :func:`interleave`: chunk j is rows j, j + G, j + 2G, ..."""
    n = y.shape[0]
    return y.reshape(n // g, g, *y.shape[1:]).transpose(0, 1).reshape(y.shape)


class GroupedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BN layer that, in training with ``num_splits`` G > 1, normalises G contiguous
    chunks of the batch apart (:func:`split_batch_norm`); plain BN otherwise."""

    def __init__(self, num_features: int, num_splits: int = 1, **kwargs: object) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = num_splits
        # True once :func:`interleave_groups` reorders the batch of a module around this
        # layer: the groups are then strided rows, normalised through a view
        self.interleaved = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        self._check_input_dim(x)  # BatchNorm1d: (N, C) or (N, C, L); 2d: (N, C, H, W)
        return split_batch_norm(self, x, self.num_splits, self.interleaved)

    def extra_repr(self) -> str:
        strided = ", interleaved" if self.interleaved else ""
        return f"{super().extra_repr()}, num_splits={self.num_splits}{strided}"


class SplitBatchNorm2d(GroupedBatchNorm, nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises G contiguous chunks of the batch apart.

    Group g is samples ``[g * N/G, (g+1) * N/G)``, which is what process g of G would
    see after a cross-process shuffle, so one process with G groups reproduces G
    processes with one group each. Buffers, parameters and ``state_dict`` are exactly
    BatchNorm2d's (running stats of shape (C,)), so weights load strictly into a
    torchvision ResNet. In eval mode, and for G = 1, it is plain BatchNorm2d.
    Running stats become the mean over groups of the per-group updates.
    """


class SplitBatchNorm1d(GroupedBatchNorm, nn.BatchNorm1d):
    """BatchNorm1d with ``SplitBatchNorm2d``'s groups, for the BN of MLP heads (MoCo v3's
    projector and predictor): with two views in one call and 2 groups, each view is
    normalised on its own, as in two calls."""


def convert_to_split_bn(module: nn.Module, num_splits: int) -> int:
    """Replace every BatchNorm1d / BatchNorm2d inside ``module`` by its split twin with
    ``num_splits`` groups, in place, keeping parameters, buffers and names (so the
    state dict is unchanged). Returns how many layers were replaced; 0 means the
    network has no BatchNorm (LayerNorm / GroupNorm only) and needs no shuffling BN.
    Layers that are already split get ``num_splits``; other norms are left alone."""
    if num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, GroupedBatchNorm):
            child.num_splits = num_splits
            replaced += 1
            continue
        twin: type[GroupedBatchNorm] | None = None
        if type(child) is nn.BatchNorm2d:
            twin = SplitBatchNorm2d
        elif type(child) is nn.BatchNorm1d:
            twin = SplitBatchNorm1d
        if twin is None:
            replaced += convert_to_split_bn(child, num_splits)
            continue
        assert isinstance(child, nn.modules.batchnorm._BatchNorm)
        new = twin(
            child.num_features,
            num_splits=num_splits,
            eps=child.eps,
            momentum=child.momentum,
            affine=child.affine,
            track_running_stats=child.track_running_stats,
        )
        like = next(iter(child.state_dict().values()), None)  # keep device and dtype
        if like is not None:
            new.to(device=like.device, dtype=like.dtype if like.is_floating_point() else None)
        new.load_state_dict(child.state_dict())
        new.train(child.training)
        setattr(module, name, new)
        replaced += 1
    return replaced


class _Interleaver:
    """The forward hooks of :func:`interleave_groups`: reorder the batch into strided
    groups before the module and back after it. G is read from the layers at each call
    (evaluation code sets ``num_splits = 1``); a deep copy of the module copies this
    object with its layer list pointing at the copy's layers."""

    def __init__(self, layers: list[GroupedBatchNorm]) -> None:
        self.layers = layers
        self.active = 1
        self.enabled = True  # False after stop_interleaving

    def groups(self) -> int:
        if not self.enabled:
            return 1
        splits = {m.num_splits for m in self.layers if m.training and m.num_splits > 1}
        if len(splits) > 1:
            raise ValueError(f"split BN layers of one module disagree on num_splits: {splits}")
        return splits.pop() if splits else 1

    # eager under torch.compile (a reorder is cheap; the compiled forward stays whole)
    @torch.compiler.disable
    def before(self, module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...] | None:
        self.active = self.groups()
        x = args[0]
        if self.active == 1 or not isinstance(x, torch.Tensor):
            return None
        return (interleave(x, self.active), *args[1:])

    @torch.compiler.disable
    def after(self, module: nn.Module, args: object, out: object) -> object:
        if self.active == 1 or not isinstance(out, torch.Tensor):
            return None
        return deinterleave(out, self.active)


def interleave_groups(module: nn.Module) -> int:
    """Make the split-BN layers inside ``module`` normalise their groups through a view.

    A split-BN layer on its own normalises the G contiguous chunks of its input, which
    costs a transposed copy of the activations in and out of every layer. After this
    call, ``module`` reorders its input batch once (row i*G + j = row i of chunk j) and
    restores the order of its output, and its split-BN layers read the groups as strided
    rows, a view: the same chunks are normalised together, as one ``batch_norm`` call
    over a view each. Its output equals the unhooked module's; parameters, buffers and
    the state dict are unchanged. Returns the number of split-BN layers affected (0:
    nothing installed). Calling ``forward_features`` or a sub-module directly in
    training mode bypasses the reordering: the groups are then strided rows.
    """
    layers = [m for m in module.modules() if isinstance(m, GroupedBatchNorm)]
    if not layers:
        return 0
    if any(m.interleaved for m in layers):
        raise ValueError("interleave_groups was already applied inside this module")
    for m in layers:
        m.interleaved = True
    hooks = _Interleaver(layers)
    module.register_forward_pre_hook(hooks.before)
    module.register_forward_hook(hooks.after)
    module._split_bn_interleaver = hooks  # type: ignore[assignment]  # for stop_interleaving
    return len(layers)


def stop_interleaving(module: nn.Module) -> int:
    """Undo :func:`interleave_groups` everywhere inside ``module``: the hooks stop
    reordering and the split-BN layers read contiguous chunks again (a transposed copy
    in and out). For ``torch.compile``, which compiles the view path far more slowly and
    runs it no faster: the default preset's encoder took 208 s to its first compiled
    step against 41 s, then 0.10 s a step against 0.09 s. Returns how many were undone."""
    undone = 0
    for m in module.modules():
        hooks = getattr(m, "_split_bn_interleaver", None)
        if isinstance(hooks, _Interleaver) and hooks.enabled:
            hooks.enabled = False
            for layer in hooks.layers:
                layer.interleaved = False
            undone += 1
    return undone
