"""Every prompt method by name, and a parameter-count report for any config.

    make_method("prefix", config, P=20)  ->  KVPrefix(config, 20)
"""
from __future__ import annotations

import importlib
import inspect


from .. import catalog
from ..core.meta import shapes_only
from ..errors import InputError


def _resolve(where: str):
    module, cls = where.split(":")
    return getattr(importlib.import_module(f".{module}", __package__), cls)


# name -> (class, its constructor defaults, description), from the torch-free catalog
METHODS = {name: (_resolve(m.where), m.defaults, m.about) for name, m in catalog.METHODS.items()}


def check_options(name: str, kw: dict, source: str = "make_method") -> None:
    """Refuse a keyword the method's constructor does not take, naming it and the ones it takes
    (`source`: where they came from, e.g. a checkpoint.json's method_kwargs)."""
    if name not in METHODS:
        raise InputError(f"unknown prompt method {name!r}; choose one of {sorted(METHODS)}")
    cls, defaults, _ = METHODS[name]
    takes = [n for n in list(inspect.signature(cls.__init__).parameters)[3:] if n not in defaults]  # after self, config, P
    for k in kw:
        if k not in takes:
            raise InputError(f"{source}: prompt method {name!r} takes no option {k!r}; its options are {takes}")


def make_method(name: str, config, P: int, **kw):
    """Build a prompt method by name (see METHODS); extra keywords go to its constructor."""
    check_options(name, kw)
    cls, defaults, _ = METHODS[name]
    return cls(config, P, **{**defaults, **kw})


def backbone_parameters(config) -> int:
    """Parameters of the plain backbone for `config`, counted without allocating memory."""
    from ..models import build
    with shapes_only():
        model = build(config)
    return sum(p.numel() for p in model.parameters())


def parameter_report(config, P: int, methods=None) -> list[dict]:
    """Trainable parameters of each method and their share of the backbone, for any config."""
    total = backbone_parameters(config)
    rows = []
    for name in methods or METHODS:
        with shapes_only():
            n = make_method(name, config, P).num_trainable()
        rows.append({"method": name, "trainable": n, "percent": 100.0 * n / total, "backbone": total})
    return rows


def format_report(rows: list[dict]) -> str:
    lines = [f"{'method':<14}{'trainable':>12}{'% of backbone':>15}"]
    lines += [f"{r['method']:<14}{r['trainable']:>12,}{r['percent']:>14.3f}%" for r in rows]
    return "\n".join(lines)
