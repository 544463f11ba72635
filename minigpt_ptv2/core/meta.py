"""Building a model for its shapes alone: on the meta device, where tensors have a shape and no memory.

    with shapes_only():
        model = build(preset("bert-base"))       # 110M parameters counted, nothing allocated

`torch.device("meta")` alone does that too, but a module that initialises with normal_
(nn.Embedding) then runs torch's reference implementation of normal_, which imports torch's
compiler: about a second and a half, once per process, to fill a tensor that holds no numbers.
`shapes_only` skips normal_ on meta tensors and is otherwise `torch.device("meta")`.
"""
from __future__ import annotations

import contextlib

import torch


class _SkipNormalInit(torch.overrides.TorchFunctionMode):
    """Return normal_'s tensor untouched when it is a meta tensor: there is nothing to fill. A tensor
    made on a real device inside the block (device="cpu") is filled as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.nn.init.normal_, torch.Tensor.normal_):
            tensor = args[0] if args else kwargs["tensor"]
            if tensor.is_meta:
                return tensor
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def shapes_only():
    """torch.device("meta") without the seconds normal_ costs there (see the module's docstring)."""
    with torch.device("meta"), _SkipNormalInit():
        yield
