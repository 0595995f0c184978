import pytest
import torch

from moco.errors import ExportError
from moco.export.keys import check_keys

EXPECTED = {"a.weight": torch.Size([4, 3]), "a.bias": (4,), "b": ()}


def _got(**changes):
    got = {"a.weight": torch.zeros(4, 3), "a.bias": torch.zeros(4), "b": torch.tensor(1)}
    got.update(changes)
    return {k: v for k, v in got.items() if v is not None}


def test_the_same_keys_and_shapes_pass():
    check_keys(_got(), EXPECTED, "target")  # raises nothing
    check_keys({}, {}, "empty")


def test_missing_and_unexpected_keys_are_named():
    with pytest.raises(ExportError) as err:
        check_keys(_got(**{"a.bias": None, "c": torch.zeros(1)}), EXPECTED, "the target")
    assert str(err.value) == "key sets differ from the target: missing ['a.bias'], unexpected ['c']"


def test_a_wrong_shape_is_named_with_both_shapes_and_the_hint():
    with pytest.raises(ExportError) as err:
        check_keys(_got(**{"a.weight": torch.zeros(3, 4)}), EXPECTED, "T", "width?")
    assert str(err.value) == "shapes differ from T (width?): a.weight: (3, 4) vs (4, 3)"
    with pytest.raises(ExportError, match=r"^shapes differ from T: b: \(1,\) vs \(\)$"):
        check_keys(_got(b=torch.zeros(1)), EXPECTED, "T")


def test_at_most_five_keys_or_three_shapes_are_listed():
    expected = {f"k{i}": (1,) for i in range(9)}
    with pytest.raises(ExportError) as err:
        check_keys({}, expected, "T")
    assert str(err.value).count("'k") == 5
    with pytest.raises(ExportError) as err:
        check_keys({k: torch.zeros(2) for k in expected}, expected, "T")
    assert str(err.value).count(": (2,) vs (1,)") == 3
