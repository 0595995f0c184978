"""Any torchvision or timm classification model as an encoder: ``model.arch=LIBRARY:NAME``.

:class:`LibraryEncoder` holds the library's own model as ``backbone`` with its classifier
taken off, so ``forward_features`` gives the model's pooled pre-logits features, and puts
the method's head ``fc`` on top (the :class:`~moco.encoders.base.Encoder` protocol):

- torchvision (``torchvision:NAME``, any name of
  ``torchvision.models.list_models(module=torchvision.models)``): the model's last
  ``nn.Linear`` producing the class logits (and a dropout right before it) becomes
  ``nn.Identity``; the features are what that layer read (``fc`` of a ResNet,
  ``classifier.3`` of MobileNetV3, ...).
- timm (``timm:NAME``, any name of ``timm.list_models()``): ``timm.create_model(NAME,
  num_classes=0)``, timm's own feature extractor.

The feature width is read from the model by a forward pass of one image at build time,
which also turns "this model cannot take 32 px images" into a :class:`ConfigError` that
names the model and size instead of a shape error in the first training step.

Input channels: timm adapts its stem itself (``in_chans=``); for torchvision the first
convolution reading 3 channels is replaced by one of the same configuration reading
``in_chans``, its weight the library's random initialisation cycled over the new
channels (no pretrained weights are used anywhere, so nothing needs summing). Image size:
timm models that have an ``img_size`` option (ViTs, Swin, ...) are built for the run's
size, and so are torchvision's ViTs (``image_size``); convolutional networks pool
globally and take any size their strides allow.

Parameter names are the library's under ``backbone.``: without that prefix and without
``fc.*``, the state dict loads strictly into ``torchvision.models.get_model(NAME)`` (its
classifier aside) or ``timm.create_model(NAME, num_classes=0)``. Split BN is applied by
the model builder (``engine/build.py``), in place, which keeps these names.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import torch
from torch import nn

from moco.errors import ConfigError
from moco.layers import split_bn

__all__ = [
    "LIBRARIES",
    "LibraryEncoder",
    "build_library_model",
    "classifier_name",
    "library_names",
    "split_norm_act",
]

LIBRARIES = ("torchvision", "timm")
HOW_TO_LIST = {
    "torchvision": "python -c 'import torchvision; "
    "print(torchvision.models.list_models(module=torchvision.models))'",
    "timm": "python -c 'import timm; print(timm.list_models())' (or timm.list_models('*vit*'))",
}


def parse_arch(arch: str) -> tuple[str, str]:
    """``"timm:convnext_atto"`` -> ``("timm", "convnext_atto")``; ConfigError otherwise."""
    lib, sep, name = arch.partition(":")
    if not sep or lib not in LIBRARIES or not name:
        raise ConfigError(
            f"model.arch={arch!r}: expected torchvision:NAME or timm:NAME "
            f"(names: {HOW_TO_LIST['torchvision']}; {HOW_TO_LIST['timm']})"
        )
    return lib, name


def library_names(lib: str) -> list[str]:
    """The classification model names ``lib`` offers (imports the library)."""
    if lib == "torchvision":
        import torchvision

        return list(torchvision.models.list_models(module=torchvision.models))
    return list(_timm().list_models())


def _timm() -> Any:
    try:
        import timm
    except ImportError as err:
        raise ConfigError("timm: archs need timm: pip install 'moco[timm]' (or timm)") from err
    return timm


def _unknown(lib: str, name: str) -> ConfigError:
    close = difflib.get_close_matches(name, library_names(lib), n=5, cutoff=0.6)
    hint = f" Close names: {', '.join(close)}." if close else ""
    return ConfigError(
        f"model.arch={lib}:{name}: {lib} has no classification model {name!r}.{hint} "
        f"List them with {HOW_TO_LIST[lib]}"
    )


def classifier_name(model: nn.Module) -> str:
    """The module path of a torchvision model's classifier: its last ``nn.Linear``
    (``fc``, ``classifier.3``, ``heads.head``, ...). ConfigError when it has none."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Linear classifier to take its pre-logits "
            "features from (e.g. SqueezeNet's is a convolution); choose another model"
        )
    return names[-1]


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _adapt_stem(model: nn.Module, in_chans: int, arch: str) -> None:
    """Replace the first conv reading 3 channels by one reading ``in_chans``."""
    for path, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.in_channels == 3 and conv.groups == 1:
            new = nn.Conv2d(
                in_chans,
                conv.out_channels,
                conv.kernel_size,  # type: ignore[arg-type]
                conv.stride,  # type: ignore[arg-type]
                conv.padding,  # type: ignore[arg-type]
                conv.dilation,  # type: ignore[arg-type]
                conv.groups,
                conv.bias is not None,
                conv.padding_mode,
            )
            with torch.no_grad():  # the library's own random init, cycled over the channels
                reps = math.ceil(in_chans / 3)
                new.weight.copy_(conv.weight.repeat(1, reps, 1, 1)[:, :in_chans])
                if conv.bias is not None and new.bias is not None:
                    new.bias.copy_(conv.bias)
            _set_module(model, path, new)
            return
    raise ConfigError(f"model.arch={arch}: no 3-channel stem convolution to adapt to {in_chans}")


def build_library_model(
    lib: str,
    name: str,
    in_chans: int = 3,
    img_size: int = 224,
    classifier: bool = False,
    num_classes: int = 1000,
) -> nn.Module:
    """The library's model as its own constructor builds it (random weights), for
    ``in_chans`` channels and ``img_size`` images where the model has such options.

    ``classifier=False`` (what the encoder uses): timm with ``num_classes=0``, torchvision
    with its classifier replaced by ``nn.Identity``. ``classifier=True``: the model with
    a classifier of ``num_classes`` (timm: 0 is none), the target an export is checked
    against.
    """
    arch = f"{lib}:{name}"
    if lib == "timm":
        timm = _timm()
        if not timm.is_model(name):
            raise _unknown(lib, name)
        kwargs: dict[str, Any] = {"pretrained": False, "in_chans": in_chans}
        kwargs["num_classes"] = num_classes if classifier else 0
        try:
            try:
                return timm.create_model(name, img_size=img_size, **kwargs)
            except TypeError as err:  # a model without an img_size option
                if "img_size" not in str(err):
                    raise
                return timm.create_model(name, **kwargs)
        except (RuntimeError, ValueError, AssertionError, TypeError) as err:
            raise _cannot(arch, in_chans, img_size, err) from err
    import torchvision

    if name not in library_names(lib):
        raise _unknown(lib, name)
    tv_kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if name.startswith("vit_"):
        tv_kwargs["image_size"] = img_size
    if name in ("googlenet", "inception_v3"):
        tv_kwargs["aux_logits"] = False
    try:
        model: nn.Module = torchvision.models.get_model(name, **tv_kwargs)
    except (RuntimeError, ValueError, AssertionError, TypeError) as err:
        raise _cannot(arch, in_chans, img_size, err) from err
    if in_chans != 3:
        _adapt_stem(model, in_chans, arch)
    if not classifier:
        _remove_classifier(model)
    return model


def _remove_classifier(model: nn.Module) -> None:
    """The classifier, and the dropout right before it (timm's pre-logits stop before
    that dropout too), become ``nn.Identity`` (no parameters: the names do not change)."""
    head = classifier_name(model)
    _set_module(model, head, nn.Identity())
    parent_path, _, leaf = head.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if isinstance(parent, nn.Sequential) and leaf.isdigit():
        i = int(leaf) - 1
        while i >= 0 and isinstance(parent[i], nn.Dropout):
            parent[i] = nn.Identity()
            i -= 1


def _cannot(arch: str, in_chans: int, size: int, err: BaseException) -> ConfigError:
    why = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return ConfigError(
        f"model.arch={arch} cannot take {in_chans}-channel {size}x{size} images "
        f"(augment.size={size}): {why}. Use a larger augment.size or another model"
    )


class LibraryEncoder(nn.Module):
    """A torchvision / timm model (``backbone``, no classifier) with our head ``fc``.

    Args:
        arch: ``torchvision:NAME`` or ``timm:NAME``.
        num_classes: output width of the initial linear ``fc`` (methods replace it).
        in_chans: input channels (1 for greyscale data).
        img_size: the training image side (checked with one forward pass).
    """

    def __init__(
        self, arch: str, num_classes: int = 1000, in_chans: int = 3, img_size: int = 224
    ) -> None:
        super().__init__()
        self.library, self.model_name = parse_arch(arch)
        self.backbone = build_library_model(self.library, self.model_name, in_chans, img_size)
        self.feature_dim: int = self._probe(arch, in_chans, img_size)
        self.fc: nn.Module = nn.Linear(self.feature_dim, num_classes)

    def _probe(self, arch: str, in_chans: int, size: int) -> int:
        """One eval-mode forward of a blank image: the feature width, or a ConfigError
        naming model and size. Draws nothing from the random generator."""
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                out = self.backbone(torch.zeros(1, in_chans, size, size))
        except (RuntimeError, ValueError, AssertionError, IndexError) as err:
            raise _cannot(arch, in_chans, size, err) from err
        finally:
            self.backbone.train(was_training)
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(f"model.arch={arch} gives {shape} features, not pooled (N, C)")
        return int(out.shape[1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, feature_dim): the model's pooled pre-logits features."""
        out: torch.Tensor = self.backbone(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def count_batch_norm(module: nn.Module) -> int:
    """BatchNorm layers (any ``_BatchNorm``, split or not) inside ``module``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def split_norm_act(module: nn.Module, num_splits: int) -> int:
    """timm's fused BN + activation layers (``BatchNormAct2d``, in EfficientNets,
    MobileNetV3s, RegNets...) made split-BN layers in place (same names, parameters and
    buffers), which :func:`moco.layers.split_bn.convert_to_split_bn` leaves alone as it
    converts the plain BatchNorm classes only. Returns how many were converted."""
    try:
        from timm.layers import BatchNormAct2d
    except ImportError:
        return 0
    done = 0
    for m in module.modules():
        if isinstance(m, BatchNormAct2d):
            layer: Any = m
            if not isinstance(m, split_bn.GroupedBatchNorm):
                layer.__class__ = _split_twin(type(m))
                layer.interleaved = False
            layer.num_splits = num_splits
            done += 1
    return done


_TWINS: dict[type[nn.Module], type[nn.Module]] = {}


class _SplitNormAct(split_bn.GroupedBatchNorm):
    """Split BN for a timm BN + act layer (mixed in by :func:`_split_twin`): BN of the
    groups as the split-BN layers do it, then the layer's own dropout and activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)  # the timm layer's own forward
        self._check_input_dim(x)
        out = split_bn.split_batch_norm(self, x, self.num_splits, self.interleaved)
        layer: Any = self
        return layer.act(layer.drop(out))  # type: ignore[no-any-return]


def _split_twin(cls: type[nn.Module]) -> type[nn.Module]:
    if cls not in _TWINS:
        _TWINS[cls] = type(f"Split{cls.__name__}", (_SplitNormAct, cls), {})
    return _TWINS[cls]
