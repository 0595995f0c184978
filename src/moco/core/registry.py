"""The methods by name: what ``model.method`` selects.

An explicit table rather than registration by decorator: the list of methods is in one
place a reader can see, and importing this module is all it takes to fill it. Adding a
method: a module in ``core/`` whose class sets the :class:`~moco.core.method.ContrastiveMethod`
class attributes and ``from_options``, one line here, and its name in
``moco.config.schema.Method`` (the config has no torch, so it cannot read this table;
a test keeps the two equal).
"""

from __future__ import annotations

from moco.core.end_to_end import EndToEnd
from moco.core.memory_bank import MemoryBank
from moco.core.method import ContrastiveMethod
from moco.core.moco import MoCo
from moco.core.moco_v3 import MoCoV3
from moco.core.simclr import SimCLR

METHODS: dict[str, type[ContrastiveMethod]] = {
    cls.name: cls for cls in (MoCo, EndToEnd, MemoryBank, SimCLR, MoCoV3)
}


def method_class(name: str) -> type[ContrastiveMethod]:
    """The method called ``name``, or a ValueError listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None
