"""Defines the ``torchvision::nms``/``qnms`` op schemas before torchvision is imported.

Why it exists: the SGLang tier installs torchvision 0.28.0 from the index next to the CPU
build of torch 2.13.0; that wheel is a CUDA build whose import fails on CPU torch
(``operator torchvision::nms does not exist``, raised while it registers fake kernels for
ops its own C++ library would have defined). SGLang imports torchvision for its multimodal
processors; the text path never calls these ops. This module runs at interpreter start (it is
on the SGLang server's ``PYTHONPATH``) and registers only the two schemas, with no kernels, on
the first ``import torchvision``; torch itself is not imported until then. Test
infrastructure only (see ``q3agent.testing.sglang_server``).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_libraries: list[Any] = []  # torch.library.Library objects must stay alive


def define_torchvision_schemas() -> None:
    """Register the schemas (once) in a ``torchvision`` fragment library."""
    if _libraries:
        return
    import torch

    library = torch.library.Library("torchvision", "FRAGMENT")  # type: ignore[no-untyped-call]
    for schema in _SCHEMAS.values():
        with contextlib.suppress(RuntimeError):  # already defined (a CPU torchvision build)
            library.define(schema)  # type: ignore[no-untyped-call]
    _libraries.append(library)


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Defines the schemas when ``torchvision`` is first imported, then steps aside."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            define_torchvision_schemas()
        return None


sys.meta_path.insert(0, _BeforeTorchvision())
