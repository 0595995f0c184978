"""Backbones: torchvision-named ResNets (:mod:`moco.encoders.resnet`), timm ViTs
(:mod:`moco.encoders.vit`, when timm is installed), and the :class:`~moco.encoders.base.Encoder`
protocol they share. Import from the modules: this face loads nothing, so the method
core can use the protocol without loading torchvision."""
