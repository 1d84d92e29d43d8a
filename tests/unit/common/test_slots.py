"""Unit tests of BinarySize and ResourceSlot, run against both op kernels."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from types import ModuleType

import pytest

from bai.common import _slots_py, slots
from bai.common.errors import InvalidValue
from bai.common.slots import (
    DEFAULT_SLOT_TYPES,
    BinarySize,
    DefaultForUnspecified,
    ResourceSlot,
    SizeParseError,
    SlotArithmeticError,
    SlotParseError,
)
from bai.common.types import SlotTypes

try:
    from bai.common import _slots as _slots_cython
except ImportError:
    _slots_cython = None

BACKENDS = [
    pytest.param(_slots_py, id="python"),
    pytest.param(
        _slots_cython,
        id="cython",
        marks=pytest.mark.skipif(_slots_cython is None, reason="extension not built"),
    ),
]

INF = math.inf
GiB = 1024**3


@pytest.fixture(params=BACKENDS)
def ops(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """Run the test with ResourceSlot's hot operations served by one kernel module."""
    module: ModuleType = request.param
    monkeypatch.setattr(slots, "_ops", module)
    yield module


def rs(**values: int | str) -> ResourceSlot:
    """Build a ResourceSlot from keyword amounts; ``cuda_device`` means ``cuda.device``."""
    return ResourceSlot.parse(
        {key.replace("_", "."): value for key, value in values.items()}, allow_infinity=True
    )


# --- BinarySize --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10G", 10 * GiB),
        ("512m", 512 * 1024**2),
        ("1.5G", 3 * GiB // 2),
        ("4g", 4 * GiB),
        ("1.5 GiB", 3 * GiB // 2),
        ("1024", 1024),
        ("10 KiB", 10 * 1024),
        ("2T", 2 * 1024**4),
        ("1p", 1024**5),
        ("1e", 1024**6),
        ("1EiB", 1024**6),
        ("1z", 1024**7),
        ("1y", 1024**8),
        ("7b", 7),
        ("7 B", 7),
        ("  3 mb ", 3 * 1024**2),
        ("0.5k", 512),
        ("1.0", 1),
        ("0", 0),
        ("007k", 7 * 1024),
        (4096, 4096),
        (0, 0),
    ],
)
def test_binary_size_parses_binary_units(text: str | int, expected: int) -> None:
    size = BinarySize.parse(text)
    assert size == expected
    assert type(size) is BinarySize


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("-0", "cannot be negative"),
        ("-1k", "cannot be negative"),
        (-1, "cannot be negative"),
        ("+5", "not a byte size"),
        ("1e999", "not a byte size"),
        ("1e3", "not a byte size"),
        ("NaN", "not a byte size"),
        ("inf", "not a byte size"),
        ("", "not a byte size"),
        ("   ", "not a byte size"),
        ("1iB", "not a byte size"),
        ("1 KB extra", "not a byte size"),
        ("1,5G", "not a byte size"),
        ("١٢", "not a byte size"),
        ("1.5", "whole number of bytes"),
        ("0.3k", "whole number of bytes"),
        (1.5, "string or an integer"),
        (True, "string or an integer"),
        (None, "string or an integer"),
        (b"1k", "string or an integer"),
    ],
)
def test_binary_size_rejects_bad_input_naming_it(value: object, problem: str) -> None:
    with pytest.raises(SizeParseError) as caught:
        BinarySize.parse(value)
    assert problem in str(caught.value)
    assert repr(value) in str(caught.value)
    assert isinstance(caught.value, InvalidValue)


def test_binary_size_rejects_a_huge_string_early_with_a_short_message() -> None:
    with pytest.raises(SizeParseError, match="at most 64 characters") as caught:
        BinarySize.parse("9" * 10_000_000)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (1025, "1025 B"),
        (3 * GiB // 2, "1.5 GiB"),
        (GiB + 1024**2, "1025 MiB"),
        (1024**3 * 1.25, "1.25 GiB"),
        (1024 * 1.125, "1.125 KiB"),
        (1024**6, "1 EiB"),
        (1024**9, "1024 YiB"),
    ],
)
def test_binary_size_prints_the_largest_exact_unit(size: float, text: str) -> None:
    value = BinarySize(int(size))
    assert value.format() == text
    assert str(value) == text
    assert f"{value}" == text
    assert BinarySize.parse(text) == value


def test_binary_size_is_an_int_with_a_readable_repr() -> None:
    size = BinarySize.parse("1k")
    assert repr(size) == "BinarySize(1024)"
    assert size + 1 == 1025
    assert json.dumps({"size": size}) == '{"size": 1024}'
    with pytest.raises(SizeParseError):
        BinarySize(-5)


# --- ResourceSlot.parse -------------------------------------------------------------------------


def test_parse_reads_counts_and_byte_sizes() -> None:
    slot = ResourceSlot.parse(
        {"cpu": "2", "mem": "4g", "cuda.shares": 0.5, "cuda.device": Decimal("1"), "cuda.mem": 1024}
    )
    assert dict(slot) == {
        "cpu": Decimal(2),
        "mem": Decimal(4 * GiB),
        "cuda.shares": Decimal("0.5"),
        "cuda.device": Decimal(1),
        "cuda.mem": Decimal(1024),
    }
    assert list(slot) == ["cpu", "mem", "cuda.shares", "cuda.device", "cuda.mem"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.5", "0.5"),
        (".5", "0.5"),
        ("2.", "2"),
        (" 3 ", "3"),
        ("1.2345", "1.234"),
        ("1.9999", "1.999"),
        ("0.0005", "0"),
        (0.1, "0.1"),
        (3, "3"),
        (Decimal("2.50"), "2.5"),
        (Decimal("1E-999999999"), "0"),
        (2**64, str(2**64)),
    ],
)
def test_parse_truncates_counts_to_thousandths(value: object, expected: str) -> None:
    assert ResourceSlot.parse({"cpu": value})["cpu"] == Decimal(expected)
    assert ResourceSlot.parse({"cpu": value}).to_json() == {"cpu": expected}


def test_parse_uses_the_given_slot_types() -> None:
    known = {"cpu": SlotTypes.COUNT, "mem": SlotTypes.BYTES, "mock.mig-10g": SlotTypes.UNIQUE}
    slot = ResourceSlot.parse({"mock.mig-10g": "2", "mem": "1m"}, known)
    assert slot.to_json() == {"mock.mig-10g": "2", "mem": str(1024**2)}
    with pytest.raises(SlotParseError, match=r"mock.mig-10g: a unique amount must be a whole"):
        ResourceSlot.parse({"mock.mig-10g": "0.5"}, known)
    with pytest.raises(SlotParseError, match=r"known slots: cpu, mem, mock.mig-10g"):
        ResourceSlot.parse({"cuda.device": 1}, known)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"cpu": "x" * 10_000_000}, "cpu: an amount is at most 64 characters"),
        ({"mem": "1" * 10_000_000}, "mem: an amount is at most 64 characters"),
        ({"cpu": "-0"}, "cpu: an amount cannot be negative"),
        ({"cpu": "-1"}, "cpu: an amount cannot be negative"),
        ({"cpu": -1}, "cpu: an amount cannot be negative"),
        ({"cpu": Decimal("-0")}, "cpu: an amount cannot be negative"),
        ({"cpu": -0.0}, "cpu: an amount cannot be negative"),
        ({"mem": "-0"}, "mem: an amount cannot be negative"),
        ({"mem": "-1g"}, "mem: an amount cannot be negative"),
        ({"cpu": "1e999"}, "cpu: not a plain decimal number"),
        ({"cpu": "1e3"}, "cpu: not a plain decimal number"),
        ({"cpu": Decimal("1e999")}, "cpu: an amount is at most"),
        ({"cpu": 1e300}, "cpu: an amount is at most"),
        ({"cpu": 2**64 + 1}, "cpu: an amount is at most"),
        ({"mem": "1e999"}, "mem: not a byte size"),
        ({"cpu": "NaN"}, "cpu: not a plain decimal number"),
        ({"cpu": math.nan}, "cpu: an amount must be a number"),
        ({"cpu": Decimal("NaN")}, "cpu: an amount must be a number"),
        ({"cpu": Decimal("sNaN")}, "cpu: an amount must be a number"),
        ({"cpu": "inf"}, "cpu: infinity is not allowed here"),
        ({"mem": "Infinity"}, "mem: infinity is not allowed here"),
        ({"cpu": math.inf}, "cpu: infinity is not allowed here"),
        ({"mem": "1.5"}, "mem: a byte size must be a whole number of bytes"),
        ({"mem": Decimal("1.5")}, "mem: a bytes amount must be a whole number"),
        ({"mem": 1.0}, "mem: a byte amount must be an integer or a string"),
        ({"mem": "lots"}, "mem: not a byte size"),
        ({"gpu": 1}, "unknown resource slot (known slots: cpu, cuda.device, cuda.mem"),
        ({1: 1}, "unknown resource slot"),
        ({"x" * 10_000_000: 1}, "unknown resource slot"),
        ({"cpu": None}, "cpu: an amount must be a number or a string"),
        ({"cpu": True}, "cpu: an amount must be a number or a string"),
        ({"cpu": {"value": 1}}, "cpu: an amount must be a number or a string"),
        ({"cpu": [1]}, "cpu: an amount must be a number or a string"),
        ({"cpu": b"1"}, "cpu: an amount must be a number or a string"),
        ([("cpu", 1)], "resource slots must be a JSON object"),
        ("cpu=1", "resource slots must be a JSON object"),
        (None, "resource slots must be a JSON object"),
    ],
)
def test_parse_rejects_bad_input_naming_slot_and_value(values: object, problem: str) -> None:
    with pytest.raises(SlotParseError) as caught:
        ResourceSlot.parse(values)
    message = str(caught.value)
    assert problem in message
    assert "(got " in message
    # Hostile input is echoed shortened, never whole.
    assert len(message) < 400
    assert isinstance(caught.value, InvalidValue)


def test_parse_accepts_infinity_only_when_allowed() -> None:
    slot = ResourceSlot.parse(
        {"cpu": "inf", "mem": " Infinity ", "cuda.device": math.inf}, allow_infinity=True
    )
    assert all(value == Decimal("Infinity") for value in slot.values())
    with pytest.raises(SlotParseError, match="negative"):
        ResourceSlot.parse({"cpu": "-inf"}, allow_infinity=True)


# --- arithmetic and comparisons (both kernels) ---------------------------------------------------


def test_add_and_subtract_are_slot_by_slot_with_missing_as_zero(ops: ModuleType) -> None:
    a = rs(cpu="4", mem="8g", cuda_shares="1.5")
    b = rs(cpu="1.25", cuda_device=2)
    assert (a + b).to_json() == {
        "cpu": "5.25",
        "mem": str(8 * GiB),
        "cuda.shares": "1.5",
        "cuda.device": "2",
    }
    # Subtraction may go negative; fits_in is what says whether there is room.
    assert (a - b).to_json() == {
        "cpu": "2.75",
        "mem": str(8 * GiB),
        "cuda.shares": "1.5",
        "cuda.device": "-2",
    }
    assert not b.fits_in(a)


def test_operands_are_never_mutated(ops: ModuleType) -> None:
    a = rs(cpu=4, mem="1g")
    b = rs(cpu=1, cuda_device=1)
    before = (a.to_json(), b.to_json())
    results = [a + b, a - b, b - a, a * 3, a * Decimal("0.5"), a + a]
    assert (a.to_json(), b.to_json()) == before
    assert all(result is not a and result is not b for result in results)


def test_amounts_beyond_64_bits_stay_exact(ops: ModuleType) -> None:
    big = ResourceSlot({"mem": 2**80, "cpu": 2**61})
    small = ResourceSlot({"mem": 1, "cpu": 2**61})
    assert (big + small).to_json() == {"mem": str(2**80 + 1), "cpu": str(2**62)}
    assert (big - small - small)["mem"] == Decimal(2**80 - 2)
    assert small.fits_in(big)
    assert not big.fits_in(small)
    assert big == ResourceSlot({"cpu": 2**61, "mem": 2**80})


def test_infinity_absorbs_finite_amounts(ops: ModuleType) -> None:
    unlimited = rs(cpu="inf", mem="16g")
    used = rs(cpu=100, mem="4g")
    left = unlimited - used
    assert left.to_json() == {"cpu": "Infinity", "mem": str(12 * GiB)}
    assert (used - unlimited)["cpu"] == Decimal("-Infinity")
    assert rs(cpu=10**6).fits_in(unlimited)
    assert rs(cpu="inf").fits_in(unlimited)


def test_infinity_minus_infinity_raises(ops: ModuleType) -> None:
    unlimited = rs(cpu="inf", mem="1g")
    with pytest.raises(SlotArithmeticError, match="cpu: subtraction would compute inf - inf"):
        unlimited - unlimited
    minus_unlimited = ResourceSlot() - unlimited
    with pytest.raises(SlotArithmeticError, match="cpu: addition would compute inf - inf"):
        unlimited + minus_unlimited


def test_multiplication_truncates_to_thousandths() -> None:
    a = rs(cpu="1.5", mem="1g", cuda_shares="0.333")
    assert (a * 3).to_json() == {"cpu": "4.5", "mem": str(3 * GiB), "cuda.shares": "0.999"}
    assert (2 * a) == a + a
    assert (a * Decimal("0.5")).to_json() == {
        "cpu": "0.75",
        "mem": str(GiB // 2),
        "cuda.shares": "0.166",
    }
    assert (a * -1).to_json() == {"cpu": "-1.5", "mem": str(-GiB), "cuda.shares": "-0.333"}
    assert (rs(cuda_shares="0.001") * Decimal("-0.5")).to_json() == {"cuda.shares": "0"}
    assert (rs(cpu="inf") * -2).to_json() == {"cpu": "-Infinity"}
    with pytest.raises(SlotArithmeticError, match="cpu: infinity times zero"):
        rs(cpu="inf") * 0
    with pytest.raises(SlotArithmeticError):
        a * Decimal("NaN")
    with pytest.raises(TypeError):
        a * True
    with pytest.raises(TypeError):
        a * 1.5  # type: ignore[operator]


def test_order_is_the_product_order(ops: ModuleType) -> None:
    small = rs(cpu=1, mem="1g")
    large = rs(cpu=2, mem="2g", cuda_device=1)
    sideways = rs(cpu=4, mem="512m")
    assert small <= large and small < large and large >= small and large > small
    assert not (large <= small)
    assert not (small <= sideways) and not (sideways <= small)
    assert not (small < sideways) and not (small > sideways)
    assert small <= small and small >= small
    assert not (small < small) and not (small > small)


def test_a_zero_slot_equals_a_missing_one(ops: ModuleType) -> None:
    a = rs(cpu=1)
    b = rs(cpu=1, cuda_device=0)
    assert a == b and b == a
    assert hash(a) == hash(b)
    assert not (a < b) and not (b < a)
    assert len({a, b}) == 1
    assert a != rs(cpu=1, cuda_device=1)
    assert ResourceSlot() == rs(cpu=0, mem=0)


def test_fits_in_counts_every_slot_of_the_capacity(ops: ModuleType) -> None:
    capacity = rs(cpu=4, mem="8g", cuda_device=1)
    assert rs(cpu=4, mem="8g").fits_in(capacity)
    assert not rs(cpu="4.001").fits_in(capacity)
    assert not rs(cuda_shares="0.1").fits_in(capacity)
    overdrawn = capacity - rs(cuda_device=2)
    # The request does not name cuda.device, yet the capacity is short of it.
    assert not rs(cpu=1).fits_in(overdrawn)
    assert not rs(cpu=1).fits_in(capacity - rs(cuda_shares="0.001"))
    assert ResourceSlot().fits_in(capacity)


def test_comparing_with_other_types(ops: ModuleType) -> None:
    a = rs(cpu=1)
    assert a != {"cpu": Decimal(1)}
    with pytest.raises(TypeError):
        assert a <= {"cpu": 1}  # type: ignore[operator]
    with pytest.raises(TypeError):
        assert a + {"cpu": 1}  # type: ignore[operator]


@pytest.mark.skipif(_slots_cython is None, reason="extension not built")
def test_kernels_raise_the_same_error_for_the_same_input() -> None:
    cases = [
        ("subtract", {"x": INF}, {"x": INF}),
        ("subtract", {"y": -INF}, {"x": 5, "y": -INF}),
        ("add", {"y": 1, "x": -INF}, {"x": INF}),
    ]
    for name, a, b in cases:
        messages = []
        for module in (_slots_py, _slots_cython):
            with pytest.raises(SlotArithmeticError) as caught:
                getattr(module, name)(a, b)
            messages.append(str(caught.value))
        assert messages[0] == messages[1]


# --- policies, JSON, humanized ------------------------------------------------------------


def test_from_policy_fills_unspecified_slots() -> None:
    known = {"cpu": SlotTypes.COUNT, "mem": SlotTypes.BYTES, "cuda.device": SlotTypes.COUNT}
    limited = ResourceSlot.from_policy({"mem": "16g", "cpu": "8"}, "LIMITED", known)
    assert limited.to_json() == {"cpu": "8", "mem": str(16 * GiB), "cuda.device": "0"}
    unlimited = ResourceSlot.from_policy(
        {"cpu": "Infinity"}, DefaultForUnspecified.UNLIMITED, known
    )
    assert unlimited.to_json() == {"cpu": "Infinity", "mem": "Infinity", "cuda.device": "Infinity"}
    assert rs(cpu=1000, mem="1t").fits_in(unlimited)
    assert not rs(cuda_device=1).fits_in(limited)


@pytest.mark.parametrize("default", ["limited", "", None, {"a": 1}])
def test_from_policy_rejects_an_unknown_default(default: object) -> None:
    with pytest.raises(SlotParseError, match="default_for_unspecified: must be LIMITED or UNL"):
        ResourceSlot.from_policy({}, default)  # type: ignore[arg-type]


def test_json_form_uses_decimal_strings_and_round_trips() -> None:
    slot = rs(cpu="2.5", mem="4g", cuda_device="inf") - rs(cuda_shares="0.25")
    data = slot.to_json()
    assert data == {
        "cpu": "2.5",
        "mem": "4294967296",
        "cuda.device": "Infinity",
        "cuda.shares": "-0.25",
    }
    again = ResourceSlot.from_json(json.loads(json.dumps(data)))
    assert again == slot
    assert again.to_json() == data
    assert repr(slot) == f"ResourceSlot({data!r})"


def test_from_json_accepts_ints_and_truncates_extra_decimals() -> None:
    slot = ResourceSlot.from_json({"cpu": 2, "mem": "1024", "cuda.shares": "0.12345", "x": "-0"})
    assert slot.to_json() == {"cpu": "2", "mem": "1024", "cuda.shares": "0.123", "x": "0"}


@pytest.mark.parametrize(
    "data",
    [
        {"cpu": True},
        {"cpu": None},
        {"cpu": 1.5},
        {"cpu": {"n": 1}},
        {"cpu": "1e3"},
        {"cpu": "NaN"},
        {"cpu": "inf"},
        {"cpu": "+1"},
        {"cpu": " 1"},
        {"cpu": "1" * 129},
        {"": "1"},
        {"x" * 65: "1"},
        {3: "1"},
        ["cpu"],
    ],
)
def test_from_json_rejects_anything_to_json_cannot_produce(data: object) -> None:
    with pytest.raises(SlotParseError):
        ResourceSlot.from_json(data)


def test_from_json_checks_names_when_told_the_known_slots() -> None:
    assert ResourceSlot.from_json({"cpu": "1"}, DEFAULT_SLOT_TYPES) == rs(cpu=1)
    with pytest.raises(SlotParseError, match="unknown resource slot"):
        ResourceSlot.from_json({"gpu": "1"}, DEFAULT_SLOT_TYPES)


def test_to_humanized_prints_bytes_with_units() -> None:
    slot = rs(cpu="1.5", mem="1.5g", cuda_mem=1025, cuda_device="inf")
    text = slot.to_humanized()
    assert text == {
        "cpu": "1.5",
        "mem": "1.5 GiB",
        "cuda.mem": "1025 B",
        "cuda.device": "Infinity",
    }
    assert ResourceSlot.parse(text, allow_infinity=True) == slot


# --- construction, mapping behaviour, implementation switch ------------------------------


def test_constructor_takes_ints_and_decimals_from_code() -> None:
    slot = ResourceSlot({"cpu": Decimal("0.0019"), "mem": 5, "x": Decimal("-Infinity")})
    assert slot.to_json() == {"cpu": "0.001", "mem": "5", "x": "-Infinity"}
    for bad in ({"cpu": 1.5}, {"cpu": True}, {"cpu": Decimal("NaN")}, {"": 1}, {"cpu": 10**100}):
        with pytest.raises(SlotParseError):
            ResourceSlot(bad)  # type: ignore[arg-type]


def test_resource_slot_is_a_read_only_mapping() -> None:
    slot = rs(cpu=2, mem="1k")
    assert len(slot) == 2
    assert "cpu" in slot and "cuda.device" not in slot
    assert slot.get("cuda.device") is None
    assert slot["mem"] == Decimal(1024)
    with pytest.raises(KeyError):
        slot["cuda.device"]
    with pytest.raises(TypeError):
        slot["cpu"] = Decimal(3)  # type: ignore[index]


def test_implementation_is_cython_when_built_and_python_when_forced() -> None:
    code = "from bai.common import slots; print(slots.IMPLEMENTATION)"
    forced = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "BAI_NO_EXTENSIONS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert forced.stdout.strip() == "python"
    if os.environ.get("BAI_NO_EXTENSIONS", "").strip() in ("", "0"):
        built = "python" if _slots_cython is None else "cython"
        assert built == slots.IMPLEMENTATION
