"""Shape tracing for learners: the rows the capture points record, spelled in the notation's letters.

    with ShapeTrace.for_model(model, B=16, N=128) as tr:
        model(ids)
    print(tr.table())
"""
from ..core.capture import capturing, record
from .letters import dims_for, fmt, layer_of, spell
from .shape_trace import ShapeTrace, side_by_side

__all__ = ["ShapeTrace", "side_by_side", "dims_for", "spell", "fmt", "layer_of", "record", "capturing"]
