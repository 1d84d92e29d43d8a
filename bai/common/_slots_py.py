"""Pure-Python kernels of ResourceSlot's hot operations.

These functions work on ResourceSlot's internal form: a ``dict`` mapping slot
names to amounts in thousandths of a unit (an exact ``int``), with ``inf`` and
``-inf`` (the only ``float`` values allowed) standing for unlimited amounts.
A slot missing from a dict counts as zero.  ``bai/common/_slots.pyx`` is the
Cython twin of this module; both give identical results, key order included,
and raise the same :class:`SlotArithmeticError` for the same inputs.  Inputs
are never mutated.
"""

from __future__ import annotations

from bai.common.errors import BaiError

#: An amount in thousandths of a unit, or ``±inf``.
Milli = int | float


class SlotArithmeticError(BaiError, ArithmeticError):
    """Arithmetic on slots had no defined result (e.g. infinity minus infinity)."""


def undefined(key: str, operation: str) -> SlotArithmeticError:
    """Return the error for an *operation* on infinities of slot *key* that has no result."""
    return SlotArithmeticError(f"{key}: {operation} would compute inf - inf, which has no value")


def add(a: dict[str, Milli], b: dict[str, Milli]) -> dict[str, Milli]:
    """Return ``a + b`` slot by slot: the keys of ``a`` in order, then those only in ``b``."""
    out = a.copy()
    for key, value in b.items():
        if key in out:
            total = out[key] + value
            # inf + -inf is the only way to get NaN from these values.
            if total != total:
                raise undefined(key, "addition")
            out[key] = total
        else:
            out[key] = value
    return out


def subtract(a: dict[str, Milli], b: dict[str, Milli]) -> dict[str, Milli]:
    """Return ``a - b`` slot by slot (may be negative); key order as :func:`add`."""
    out = a.copy()
    for key, value in b.items():
        diff = out.get(key, 0) - value
        if diff != diff:
            raise undefined(key, "subtraction")
        out[key] = diff
    return out


def le(a: dict[str, Milli], b: dict[str, Milli]) -> bool:
    """Return whether ``a[k] <= b[k]`` for every slot ``k`` of either dict."""
    for key, value in a.items():
        if value > b.get(key, 0):
            return False
    # Plain loops: all() over a generator is measurably slower on this hot path.
    for key, value in b.items():  # noqa: SIM110
        if value < 0 and key not in a:
            return False
    return True


def eq(a: dict[str, Milli], b: dict[str, Milli]) -> bool:
    """Return whether ``a[k] == b[k]`` for every slot ``k`` of either dict."""
    for key, value in a.items():
        if value != b.get(key, 0):
            return False
    for key, value in b.items():  # noqa: SIM110
        if value != 0 and key not in a:
            return False
    return True
