"""Properties of ResourceSlot arithmetic, its JSON form and BinarySize."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from fractions import Fraction
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bai.common import _slots_py, slots
from bai.common.slots import (
    DEFAULT_SLOT_TYPES,
    BinarySize,
    ResourceSlot,
    SizeParseError,
    SlotArithmeticError,
)
from bai.common.types import SlotTypes

try:
    from bai.common import _slots as _slots_cython
except ImportError:
    _slots_cython = None

EXAMPLES = settings(max_examples=200, deadline=None)

KERNELS = [
    pytest.param(_slots_py, id="python"),
    pytest.param(
        _slots_cython,
        id="cython",
        marks=pytest.mark.skipif(_slots_cython is None, reason="extension not built"),
    ),
]


@contextmanager
def kernel(module: ModuleType) -> Iterator[None]:
    """Serve ResourceSlot's hot operations from *module* inside the block."""
    saved = slots._ops
    slots._ops = module
    try:
        yield
    finally:
        slots._ops = saved


NAMES = st.sampled_from(["cpu", "mem", "cuda.device", "cuda.shares", "cuda.mem", "mock.x"])
# Amounts in thousandths: small ones, ones around the kernels' 2**62 fast-path
# limit and the 64-bit edge, and huge ones only Python ints can hold.
FINITE_MILLI = st.one_of(
    st.integers(-5_000, 5_000),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**62 - 1, 2**62, -(2**62) + 1, -(2**62), 2**63, -(2**63), 2**64]),
)
ANY_MILLI = st.one_of(FINITE_MILLI, st.sampled_from([math.inf, -math.inf]))
NONNEG_MILLI = st.one_of(st.integers(0, 10**6), st.integers(0, 2**70), st.just(math.inf))


def _decimal(milli: int | float) -> Decimal:
    if isinstance(milli, float):
        return Decimal(milli)
    sign = 1 if milli < 0 else 0
    return Decimal((sign, tuple(int(d) for d in str(abs(milli))), -3))


def slot_of(values: st.SearchStrategy[int | float]) -> st.SearchStrategy[ResourceSlot]:
    return st.dictionaries(NAMES, values, max_size=6).map(
        lambda milli: ResourceSlot({key: _decimal(value) for key, value in milli.items()})
    )


FINITE = slot_of(FINITE_MILLI)
ANY = slot_of(ANY_MILLI)
NONNEG = slot_of(NONNEG_MILLI)
RAW = st.dictionaries(NAMES, ANY_MILLI, max_size=6)


@pytest.mark.parametrize("ops", KERNELS)
@EXAMPLES
@given(FINITE, FINITE)
def test_subtracting_what_was_added_gives_the_original(
    ops: ModuleType, a: ResourceSlot, b: ResourceSlot
) -> None:
    with kernel(ops):
        assert (a + b) - b == a
        assert (a - b) + b == a


@pytest.mark.parametrize("ops", KERNELS)
@EXAMPLES
@given(FINITE, NONNEG)
def test_adding_a_non_negative_slot_never_shrinks(
    ops: ModuleType, a: ResourceSlot, b: ResourceSlot
) -> None:
    with kernel(ops):
        assert a <= a + b
        assert a + b >= a


@pytest.mark.parametrize("ops", KERNELS)
@EXAMPLES
@given(FINITE, ANY)
def test_fits_in_means_nothing_left_is_negative(
    ops: ModuleType, request: ResourceSlot, cap: ResourceSlot
) -> None:
    with kernel(ops):
        left = cap - request
        assert request.fits_in(cap) == all(amount >= 0 for amount in left.values())
        assert request.fits_in(cap) == (request <= cap)


@pytest.mark.parametrize("ops", KERNELS)
@EXAMPLES
@given(ANY, ANY)
def test_equality_and_order_agree(ops: ModuleType, a: ResourceSlot, b: ResourceSlot) -> None:
    with kernel(ops):
        assert (a == b) == (a <= b and b <= a)
        assert (a < b) == (a <= b and a != b)
        assert (a > b) == (b < a)
        if a == b:
            assert hash(a) == hash(b)


@EXAMPLES
@given(ANY)
def test_json_round_trip_is_the_identity(slot: ResourceSlot) -> None:
    data = slot.to_json()
    again = ResourceSlot.from_json(json.loads(json.dumps(data)))
    assert again.to_json() == data
    assert list(again.items()) == list(slot.items())


@EXAMPLES
@given(FINITE, st.integers(-5, 5))
def test_integer_multiplication_is_repeated_addition(a: ResourceSlot, n: int) -> None:
    total = ResourceSlot()
    for _ in range(abs(n)):
        total = total + a
    assert a * n == (total if n >= 0 else ResourceSlot() - total)


KNOWN = {**DEFAULT_SLOT_TYPES, "mock.x": SlotTypes.COUNT}


@st.composite
def parsed_slots(draw: st.DrawFn) -> ResourceSlot:
    """Slots as parse() makes them: non-negative, byte slots in whole bytes."""
    milli = draw(st.dictionaries(NAMES, NONNEG_MILLI, max_size=6))
    for key, value in milli.items():
        if KNOWN[key] is SlotTypes.BYTES and isinstance(value, int):
            milli[key] = value - value % 1000
    return ResourceSlot({key: _decimal(value) for key, value in milli.items()})


@EXAMPLES
@given(parsed_slots())
def test_humanized_form_parses_back(slot: ResourceSlot) -> None:
    assert ResourceSlot.parse(slot.to_humanized(KNOWN), KNOWN, allow_infinity=True) == slot


def _outcome(op: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        result = op(*args)
    except SlotArithmeticError as exc:
        return ("error", str(exc))
    if isinstance(result, dict):
        return ("value", list(result.items()))
    return ("value", result)


@pytest.mark.skipif(_slots_cython is None, reason="extension not built")
@pytest.mark.parametrize("name", ["add", "subtract", "le", "eq"])
@EXAMPLES
@given(a=RAW, b=RAW)
def test_cython_and_python_kernels_agree(name: str, a: dict[str, Any], b: dict[str, Any]) -> None:
    before = (dict(a), dict(b))
    expected = _outcome(getattr(_slots_py, name), a, b)
    assert _outcome(getattr(_slots_cython, name), a, b) == expected
    assert (a, b) == before


@EXAMPLES
@given(st.integers(0, 2**90))
def test_binary_size_prints_what_it_parses(size: int) -> None:
    value = BinarySize(size)
    assert BinarySize.parse(str(value)) == value


@EXAMPLES
@given(
    st.integers(0, 10**6),
    st.integers(0, 999),
    st.sampled_from(["", "k", "M", "g", "T", "p", "E"]),
    st.sampled_from(["", "b", "iB", "B"]),
    st.sampled_from(["", " "]),
)
def test_binary_size_parses_fractions_exactly(
    whole: int, thousandths: int, prefix: str, suffix: str, space: str
) -> None:
    text = f"{whole}.{thousandths:03d}{space}{prefix}{suffix if prefix or suffix == 'b' else ''}"
    exact = Fraction(whole * 1000 + thousandths, 1000) * 1024 ** "_kmgtpe".index(
        prefix.lower() or "_"
    )
    if exact.denominator == 1:
        assert BinarySize.parse(text) == exact
    else:
        with pytest.raises(SizeParseError):
            BinarySize.parse(text)
