import pytest

from moco.config import ConfigError, list_presets, load_config
from moco.config.schema import from_yaml, to_yaml


def test_presets_listed_with_descriptions():
    presets = list_presets()
    assert {"default", "moco_v1_imagenet", "moco_v2_imagenet", "moco_cifar_demo"} <= set(presets)
    assert all(len(about) > 20 for about in presets.values())


def test_paper_recipes():
    v1 = load_config("moco_v1_imagenet")
    assert (v1.model.queue_size, v1.model.momentum, v1.model.temperature) == (65536, 0.999, 0.07)
    assert v1.optim.lr == 0.03 and v1.optim.milestones == [120, 160] and not v1.model.mlp
    v2 = load_config("moco_v2_imagenet")
    assert v2.model.mlp and v2.model.temperature == 0.2 and v2.optim.schedule.value == "cosine"
    demo = load_config("moco_cifar_demo")
    assert demo.model.cifar_stem and demo.model.bn_splits == 8 and demo.optim.batch_size == 512
    assert demo.optim.lr * demo.optim.batch_size / 256 == pytest.approx(0.06)


def test_overrides_are_typed():
    cfg = load_config("default", ["optim.epochs=3", "model.queue_size=1024", "model.arch=resnet34"])
    assert cfg.optim.epochs == 3 and cfg.model.queue_size == 1024
    assert cfg.model.arch.value == "resnet34"


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; available: .*default"):
        load_config("nope")


def test_unknown_key_names_it_and_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.qeue_size'.*queue_size"):
        load_config("default", ["model.qeue_size=10"])


def test_bad_values_name_the_key_and_what_is_allowed():
    with pytest.raises(ConfigError, match=r"model.arch.*resnet18"):
        load_config("default", ["model.arch=resnet9"])
    with pytest.raises(ConfigError, match="optim.epochs"):
        load_config("default", ["optim.epochs=many"])
    with pytest.raises(ConfigError, match="model.momentum must be in"):
        load_config("default", ["model.momentum=1.5"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config("default", ["optim.epochs"])
    with pytest.raises(ConfigError, match="sync_bn=true needs model.bn_splits=1"):
        load_config("default", ["model.sync_bn=true"])  # the default has 8 groups
    with pytest.raises(ConfigError, match="run.dist_timeout"):
        load_config("default", ["run.dist_timeout=0"])
    assert load_config("default", ["model.sync_bn=true", "model.bn_splits=1"]).model.sync_bn


def test_yaml_round_trip():
    cfg = load_config("moco_cifar_demo", ["optim.epochs=7"])
    assert from_yaml(to_yaml(cfg)) == cfg


@pytest.mark.parametrize("preset", sorted(list_presets()))
def test_every_preset_builds_and_takes_a_step(preset):
    import torch

    from moco.engine.build import build_model
    from moco.engine.optim import build_optimizer
    from moco.engine.step import train_step

    cfg = load_config(preset)
    model = build_model(cfg, in_chans=3, num_images=64)
    if cfg.model.method.value == "moco":
        assert model.queue.shape == (cfg.model.dim, cfg.model.queue_size)
    opt = build_optimizer(
        model.named_parameters(), cfg.optim.optimizer.value, cfg.optim.lr, 0.9, 1e-4
    )
    n = 2 * cfg.model.bn_splits
    x = torch.randn(n, 3, 32, 32)
    out = train_step(model, opt, x, x.flip(3), index=torch.arange(n))
    assert torch.isfinite(out.loss)
    if cfg.model.method.value == "moco":
        assert model.queue_ptr.item() == n * (2 if cfg.model.symmetric else 1)
