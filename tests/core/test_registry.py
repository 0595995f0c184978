"""The method registry: every config method name builds its class, and the classes
describe themselves consistently with what they do."""

from __future__ import annotations

import pytest

from moco.config.schema import Method, load_config
from moco.core.registry import METHODS, method_class
from moco.engine.build import build_model


def test_the_registry_and_the_config_name_the_same_methods():
    assert set(METHODS) == {m.value for m in Method}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_builds_from_the_config_and_describes_itself(name):
    cfg = load_config("default", [f"model.method={name}", "model.queue_size=64"])
    model = build_model(cfg, in_chans=1, num_images=128)
    cls = method_class(name)
    assert type(model) is cls and cls.name == name
    # key_names are exactly the momentum copies: present, without gradient
    for key in cls.key_names:
        assert all(not p.requires_grad for p in getattr(model, key).parameters())
    assert hasattr(model, "encoder_k") == ("encoder_k" in cls.key_names)
    # the negatives a method claims match its state: a queue / a bank buffer, or none
    assert hasattr(model, "queue") == (cls.negatives == "queue")
    assert hasattr(model, "bank") == (cls.negatives == "bank")


def test_an_unknown_method_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="known: moco"):
        method_class("byol")
