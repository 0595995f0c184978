"""Settings that depend on the data set's size are fitted to it, unless the user set them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from moco.config.schema import load_config
from moco.data.interface import open_data
from moco.engine.plan import fit_to_data
from moco.errors import ConfigError


@dataclass
class Sized:
    """The two numbers fit_to_data reads of a PretrainData."""

    num_pretrain: int
    train_class_counts: list[int] = field(default_factory=list)


def test_a_small_folder_gets_settings_that_can_work_and_says_why():
    cfg, notes = fit_to_data(load_config("default"), Sized(54, [18, 18, 18]))
    assert cfg.optim.batch_size == 8  # a power of two, at least 4 steps an epoch
    assert cfg.model.bn_splits == 1  # 8 images: one group of 8
    assert cfg.model.queue_size == 8  # a quarter of 54 is 13: at most that, at least the batch
    assert cfg.eval.knn_k == 9  # below the 18 images of the smallest class
    assert notes == [
        "optim.batch_size 64 -> 8 (at least 4 steps an epoch)",
        "model.bn_splits 8 -> 1 (groups of at least 8 images)",
        "model.queue_size 1024 -> 8 (well below the 54 training images)",
        "eval.knn_k 200 -> 9 (below the 18 images of the smallest class)",
    ]


def test_four_hundred_images_keep_the_batch_and_fit_the_queue_and_k():
    cfg, notes = fit_to_data(load_config("default"), Sized(360, [90] * 4))
    assert (cfg.optim.batch_size, cfg.model.bn_splits) == (64, 8)
    assert (cfg.model.queue_size, cfg.eval.knn_k) == (64, 45)
    assert len(notes) == 2


def test_what_the_user_wrote_is_kept_and_what_cannot_run_is_refused():
    cfg = load_config("default", ["optim.batch_size=32", "model.queue_size=2048"])
    fitted, notes = fit_to_data(cfg, Sized(54, [18, 18, 18]))
    assert (fitted.optim.batch_size, fitted.model.queue_size) == (32, 2048)
    assert not any(n.startswith(("optim.batch_size", "model.queue_size")) for n in notes)
    assert cfg.model.bn_splits == 8  # the input is not changed in place
    with pytest.raises(ConfigError, match="eval.knn_k=500 is larger than the kNN memory, the 54"):
        fit_to_data(load_config("default", ["eval.knn_k=500"]), Sized(54, [18, 18, 18]))


def test_the_default_preset_on_its_own_data_is_left_as_it_is():
    data = open_data("bundled", 0.1, 0, 28, stream=False)
    cfg = load_config("default")
    fitted, notes = fit_to_data(cfg, data)
    assert notes == [] and fitted == cfg
