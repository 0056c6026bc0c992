"""Strict JSON for files other programs read (provenance, reports): never ``NaN``/``Infinity`` tokens.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which are not JSON: most other readers (browsers,
``jq``, many COCO tools) refuse the whole file. :func:`json_safe` replaces non-finite floats by ``null``.
"""
from __future__ import annotations

import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with NaN/±inf floats replaced by None (strict JSON), tuples as lists, numpy/torch scalars and
    arrays as Python numbers/lists, dict keys as strings; anything else unchanged."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy / torch arrays and scalars
        return json_safe(value.tolist())
    if hasattr(value, "item") and callable(value.item):
        return json_safe(value.item())
    return value


def dumps(value: Any, **kwargs) -> str:
    """``json.dumps`` of :func:`json_safe` (``value``) with ``allow_nan=False``: always valid JSON."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
