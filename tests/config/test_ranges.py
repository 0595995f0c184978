"""Range checks at load_config: a bad value fails there, naming the key and the range,
instead of deep in torch (or not at all: SGD takes momentum 1.5 and diverges)."""

import pytest

from moco.config import load_config
from moco.errors import ConfigError


@pytest.mark.parametrize("value", ["1.0", "1.5", "-0.1"])
def test_optim_momentum_must_be_in_zero_one(value):
    with pytest.raises(ConfigError, match=r"optim.momentum must be in \[0, 1\).*got"):
        load_config("default", [f"optim.momentum={value}"])


@pytest.mark.parametrize("value", ["0.0", "0.9", "0.99"])
def test_optim_momentum_in_range_loads(value):
    assert load_config("default", [f"optim.momentum={value}"]).optim.momentum == float(value)


@pytest.mark.parametrize("value", ["0", "-0.07", "inf", "nan"])
def test_temperature_must_be_finite_and_positive(value):
    with pytest.raises(ConfigError, match=r"model.temperature must be a finite number > 0"):
        load_config("default", [f"model.temperature={value}"])


def test_a_tiny_temperature_is_allowed():
    # legal, if unwise: its pretext accuracy is honest (strict ties, core/losses.py)
    assert load_config("default", ["model.temperature=1e-9"]).model.temperature == 1e-9


@pytest.mark.parametrize(
    ("override", "key"),
    [("optim.lr=inf", "optim.lr"), ("optim.lr=nan", "optim.lr"), ("eval.knn_t=inf", "eval.knn_t")],
)
def test_other_positive_floats_must_be_finite(override, key):
    with pytest.raises(ConfigError, match=f"{key} must be a finite number > 0"):
        load_config("default", [override])


def test_every_preset_passes_the_range_checks():
    from moco.config import list_presets

    for preset in list_presets():
        cfg = load_config(preset)
        assert 0.0 <= cfg.optim.momentum < 1.0 and cfg.model.temperature > 0
