"""Resource slots (``cpu``, ``mem``, ``cuda.device``, ...) and byte sizes.

:class:`ResourceSlot` is an immutable mapping of slot names to ``Decimal``
amounts with exact slot-by-slot arithmetic, the partial order schedulers use
(:meth:`ResourceSlot.fits_in`), parsing of user input against the known slot
types, and a JSON form whose round trip is the identity.  :class:`BinarySize`
is an ``int`` that parses and prints human sizes such as ``"1.5 GiB"``.

Guarantees:

* Amounts are exact.  Internally every amount is an ``int`` of thousandths of a
  unit (``inf``/``-inf`` for unlimited), so counts keep three decimals and are
  truncated toward zero beyond that (the spec lets plugins truncate
  fractions); byte amounts are whole numbers.
* A slot missing from a ResourceSlot counts as zero everywhere: in arithmetic,
  in comparisons, in ``==`` and in ``hash``.
* No operation mutates an operand; every result is a new ResourceSlot.
* The hot operations (``+``, ``-``, comparisons, :meth:`~ResourceSlot.fits_in`)
  run in the Cython extension ``bai.common._slots`` when it is built, else in
  ``bai.common._slots_py``; both give identical results.  :data:`IMPLEMENTATION`
  says which one is in use (``BAI_NO_EXTENSIONS=1`` at import forces Python).
* Every parser raises a subclass of :class:`~bai.common.errors.InvalidValue`
  naming the offending value and the slot.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Final, Literal, Protocol

from bai.common import _slots_py
from bai.common._slots_py import Milli, SlotArithmeticError
from bai.common.errors import InvalidValue
from bai.common.types import SlotTypes

__all__ = [
    "DEFAULT_SLOT_TYPES",
    "IMPLEMENTATION",
    "INTRINSIC_SLOT_TYPES",
    "MAX_SLOT_VALUE",
    "BinarySize",
    "DefaultForUnspecified",
    "ResourceSlot",
    "SizeParseError",
    "SlotArithmeticError",
    "SlotParseError",
]


class SizeParseError(InvalidValue):
    """A byte size could not be parsed; the message names the offending value."""


class SlotParseError(InvalidValue):
    """A resource slot mapping or one of its amounts was rejected."""


class DefaultForUnspecified(enum.StrEnum):
    """What a keypair resource policy allows for slots it does not name."""

    LIMITED = "LIMITED"
    UNLIMITED = "UNLIMITED"


class _Ops(Protocol):
    def add(self, a: dict[str, Milli], b: dict[str, Milli], /) -> dict[str, Milli]: ...
    def subtract(self, a: dict[str, Milli], b: dict[str, Milli], /) -> dict[str, Milli]: ...
    def le(self, a: dict[str, Milli], b: dict[str, Milli], /) -> bool: ...
    def eq(self, a: dict[str, Milli], b: dict[str, Milli], /) -> bool: ...


def _load_ops() -> tuple[_Ops, Literal["cython", "python"]]:
    if os.environ.get("BAI_NO_EXTENSIONS", "").strip() not in ("", "0"):
        return _slots_py, "python"
    try:
        import bai.common._slots as _slots
    except ImportError:
        return _slots_py, "python"
    return _slots, "cython"


_ops, _implementation = _load_ops()
#: Which twin runs the hot operations: ``"cython"`` or ``"python"``.
IMPLEMENTATION: Final = _implementation

#: The slots every agent has without any compute plugin.
INTRINSIC_SLOT_TYPES: Final[Mapping[str, SlotTypes]] = MappingProxyType(
    {"cpu": SlotTypes.COUNT, "mem": SlotTypes.BYTES}
)
#: The intrinsic slots plus those of the well-known compute plugins; agents
#: with other plugins pass their own table to the parsers.
DEFAULT_SLOT_TYPES: Final[Mapping[str, SlotTypes]] = MappingProxyType(
    {
        **INTRINSIC_SLOT_TYPES,
        "cuda.device": SlotTypes.COUNT,
        "cuda.shares": SlotTypes.COUNT,
        "cuda.mem": SlotTypes.BYTES,
        "tpu.device": SlotTypes.COUNT,
    }
)

#: The largest finite amount user input may ask for (16 EiB as bytes).
MAX_SLOT_VALUE: Final = 2**64
#: Longer amount strings from users are rejected before they are looked at.
MAX_AMOUNT_TEXT: Final = 64
#: Longer amount strings in the JSON form are rejected; every amount below
#: 10**100 fits, which arithmetic on real slots never leaves.
MAX_JSON_AMOUNT_TEXT: Final = 128
#: Longer slot names are rejected.
MAX_SLOT_NAME: Final = 64

_MILLI: Final = 1000
_INFINITY_WORDS: Final = frozenset({"inf", "infinity"})
_COUNT_RE: Final = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+", re.ASCII)
_JSON_AMOUNT_RE: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?", re.ASCII)

#: Longer size strings are rejected before any regex or arithmetic touches them.
MAX_SIZE_TEXT: Final = 64
_UNITS: Final = ("", "k", "m", "g", "t", "p", "e", "z", "y")
_MULTIPLIER: Final = {prefix: 1024**power for power, prefix in enumerate(_UNITS)}
_UNIT_NAMES: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
#: Printed sizes use at most this many decimals; finer values fall back to a smaller unit.
_MAX_DECIMALS: Final = 3
# A sign is never accepted (so "-0" is rejected like every other signed value),
# nor scientific notation: "1e3" would collide with the exa suffix "e".
_SIZE_RE: Final = re.compile(
    r"(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]+))?[ ]*(?:(?P<prefix>[kmgtpezy])(?:i?b)?|b)?",
    re.IGNORECASE | re.ASCII,
)


class BinarySize(int):
    """A non-negative number of bytes that prints with a binary unit.

    Arithmetic on a ``BinarySize`` returns a plain ``int``; wrap the result
    again when a size is wanted.
    """

    __slots__ = ()

    def __new__(cls, value: int = 0) -> BinarySize:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SizeParseError("a byte size must be an integer", value=value)
        if value < 0:
            raise SizeParseError("a byte size cannot be negative", value=value)
        return super().__new__(cls, value)

    @classmethod
    def parse(cls, value: object) -> BinarySize:
        """Parse ``"10G"``, ``"512m"``, ``"1.5 GiB"``, ``"2T"``, ``"1024"`` or an int.

        Units are binary (``k`` = 1024, then ``m g t p e z y``) and
        case-insensitive; a trailing ``b`` or ``iB`` is accepted.  A fraction
        is accepted only when it yields a whole number of bytes (``"1.5k"`` is
        1536, ``"0.3k"`` is rejected).
        Signs, exponents, ``inf`` and ``nan`` are rejected, ``"-0"`` included.
        Raises :class:`SizeParseError` naming the value.
        """
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        if not isinstance(value, str):
            raise SizeParseError("a byte size must be a string or an integer", value=value)
        if len(value) > MAX_SIZE_TEXT:
            raise SizeParseError(
                f"a byte size is at most {MAX_SIZE_TEXT} characters long", value=value
            )
        text = value.strip()
        if text.startswith("-"):
            raise SizeParseError("a byte size cannot be negative", value=value)
        match = _SIZE_RE.fullmatch(text)
        if match is None:
            raise SizeParseError(
                "not a byte size (expected e.g. '512m', '1.5G', '10 GiB', '1024')", value=value
            )
        multiplier = _MULTIPLIER[(match["prefix"] or "").lower()]
        frac = match["frac"] or ""
        scaled = int(match["int"] + frac) * multiplier
        divisor = 10 ** len(frac)
        if scaled % divisor:
            raise SizeParseError("a byte size must be a whole number of bytes", value=value)
        return cls(scaled // divisor)

    def format(self) -> str:
        """Return the size with the largest binary unit that prints it exactly.

        At most three decimals are used; when no unit gives an exact short
        form the size is printed in bytes (``"1025 B"``), so the output always
        parses back to the same value.
        """
        size = int(self)
        for power in range(len(_UNITS) - 1, 0, -1):
            unit = 1024**power
            if size < unit:
                continue
            text = _exact_decimal(Fraction(size, unit))
            if text is not None:
                return f"{text} {_UNIT_NAMES[power]}"
        return f"{size} B"

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return f"BinarySize({int(self)})"


def _exact_decimal(value: Fraction) -> str | None:
    """Return *value* with at most ``_MAX_DECIMALS`` decimals, or None if that would round."""
    scaled = value * 10**_MAX_DECIMALS
    if scaled.denominator != 1:
        return None
    whole, frac = divmod(scaled.numerator, 10**_MAX_DECIMALS)
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac:0{_MAX_DECIMALS}d}".rstrip("0")


def _milli_text(milli: Milli) -> str:
    """Return the shortest exact decimal string of an amount in thousandths."""
    if isinstance(milli, float):
        return "Infinity" if milli > 0 else "-Infinity"
    whole, frac = divmod(abs(milli), _MILLI)
    sign = "-" if milli < 0 else ""
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:03d}".rstrip("0")


def _decimal_to_milli(amount: Decimal) -> Milli:
    """Return a non-NaN *amount* in thousandths, truncated toward zero."""
    if amount.is_infinite():
        return math.inf if amount > 0 else -math.inf
    # Below a thousandth truncates to zero; checking first keeps a tiny exponent
    # such as 1E-999999999 from expanding into a huge integer ratio.
    if amount.adjusted() < -3:
        return 0
    numerator, denominator = amount.as_integer_ratio()
    scaled = abs(numerator) * _MILLI // denominator
    return -scaled if numerator < 0 else scaled


def _check_name(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise SlotParseError("a slot name must be a non-empty string", value=key)
    if len(key) > MAX_SLOT_NAME:
        raise SlotParseError(f"a slot name is at most {MAX_SLOT_NAME} characters", value=key)
    return key


def _slot_type(key: object, known_slots: Mapping[str, SlotTypes]) -> SlotTypes:
    if isinstance(key, str) and key in known_slots:
        return known_slots[key]
    known = ", ".join(sorted(known_slots)) or "none"
    raise SlotParseError(f"unknown resource slot (known slots: {known})", value=key)


def _parse_amount(key: str, value: object, slot_type: SlotTypes, *, allow_infinity: bool) -> Milli:
    """Parse one user-supplied amount of slot *key* into thousandths."""
    if isinstance(value, str):
        amount = _parse_amount_text(key, value, slot_type)
    elif isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise SlotParseError("an amount must be a number or a string", value=value, field=key)
    elif isinstance(value, int):
        if value > MAX_SLOT_VALUE:
            raise SlotParseError(f"an amount is at most {MAX_SLOT_VALUE}", value=value, field=key)
        amount = Decimal(value)
    elif isinstance(value, float):
        if slot_type is SlotTypes.BYTES:
            raise SlotParseError(
                "a byte amount must be an integer or a string such as '4g'", value=value, field=key
            )
        # repr() is the shortest decimal that round-trips, so 0.1 means Decimal("0.1").
        amount = Decimal(repr(value)) if math.isfinite(value) else Decimal(value)
    else:
        amount = value
    if amount.is_nan():
        raise SlotParseError("an amount must be a number", value=value, field=key)
    if amount.is_signed():
        raise SlotParseError("an amount cannot be negative", value=value, field=key)
    if amount.is_infinite():
        if not allow_infinity:
            raise SlotParseError("infinity is not allowed here", value=value, field=key)
        return math.inf
    if amount > MAX_SLOT_VALUE:
        raise SlotParseError(f"an amount is at most {MAX_SLOT_VALUE}", value=value, field=key)
    if slot_type is not SlotTypes.COUNT and amount != amount.to_integral_value():
        raise SlotParseError(f"a {slot_type} amount must be a whole number", value=value, field=key)
    return _decimal_to_milli(amount)


def _parse_amount_text(key: str, value: str, slot_type: SlotTypes) -> Decimal:
    if len(value) > MAX_AMOUNT_TEXT:
        raise SlotParseError(
            f"an amount is at most {MAX_AMOUNT_TEXT} characters long", value=value, field=key
        )
    text = value.strip()
    if text.lower() in _INFINITY_WORDS:
        return Decimal("Infinity")
    if text.startswith("-"):
        raise SlotParseError("an amount cannot be negative", value=value, field=key)
    if slot_type is SlotTypes.BYTES:
        try:
            return Decimal(BinarySize.parse(text))
        except SizeParseError as exc:
            raise SlotParseError(exc.problem, value=value, field=key) from exc
    if _COUNT_RE.fullmatch(text) is None:
        raise SlotParseError(
            "not a plain decimal number such as '2' or '0.5'", value=value, field=key
        )
    return Decimal(text)


def _json_amount(key: str, value: object) -> Milli:
    """Parse one amount of the JSON form (see :meth:`ResourceSlot.to_json`)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SlotParseError("a JSON amount must be a decimal string", value=value, field=key)
    text = str(value)
    if len(text) > MAX_JSON_AMOUNT_TEXT:
        raise SlotParseError(
            f"a JSON amount is at most {MAX_JSON_AMOUNT_TEXT} characters long",
            value=value,
            field=key,
        )
    if text == "Infinity":
        return math.inf
    if text == "-Infinity":
        return -math.inf
    if _JSON_AMOUNT_RE.fullmatch(text) is None:
        raise SlotParseError("a JSON amount must be a decimal string", value=value, field=key)
    return _decimal_to_milli(Decimal(text))


def _exact_amount(key: str, value: object) -> Milli:
    """Convert one amount given by code (an int or a non-NaN Decimal) into thousandths."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise SlotParseError("an amount must be an int or a Decimal", value=value, field=key)
    if isinstance(value, int):
        if abs(value) >= _MAX_EXACT:
            raise SlotParseError("an amount must be below 10**100", value=value, field=key)
        return value * _MILLI
    if value.is_nan():
        raise SlotParseError("an amount must be a number", value=value, field=key)
    if value.is_finite() and abs(value) >= _MAX_EXACT:
        raise SlotParseError("an amount must be below 10**100", value=value, field=key)
    return _decimal_to_milli(value)


_new_object: Final = object.__new__
#: Amounts given by code stay below this, as JSON amounts do.
_MAX_EXACT: Final = 10**100


class ResourceSlot(Mapping[str, Decimal]):
    """An immutable mapping of resource slot names to ``Decimal`` amounts.

    Build one from user input with :meth:`parse`, from a keypair resource
    policy with :meth:`from_policy`, from the wire or the database with
    :meth:`from_json`, or from code with ``ResourceSlot({"cpu": 2, ...})``
    (ints and Decimals, truncated toward zero to thousandths).

    Arithmetic is slot by slot over the union of both operands' slots, a
    missing slot counting as zero:

    * ``a + b`` and ``a - b``; subtraction may give negative amounts, so test
      room with :meth:`fits_in`, not by the sign of a difference.
    * ``a * n`` for an ``int`` or finite ``Decimal`` ``n``, each product
      truncated toward zero to thousandths (a fraction of a byte may remain).
    * Infinity absorbs finite amounts (``inf - x == inf``); ``inf - inf``,
      ``inf + -inf`` and ``inf * 0`` raise :class:`SlotArithmeticError`.

    Comparisons are the product order: ``a <= b`` when every slot of ``a`` is
    at most that of ``b``; ``a == b`` when every slot is equal (so a slot set to
    zero equals a missing one, and ``hash`` agrees); ``a < b`` means ``a <= b``
    and ``a != b``.  Two slots can be incomparable (neither ``<=`` holds).
    """

    __slots__ = ("_milli",)

    _milli: dict[str, Milli]

    def __init__(self, values: Mapping[str, int | Decimal] | None = None) -> None:
        milli: dict[str, Milli] = {}
        if values is not None:
            if not isinstance(values, Mapping):
                raise SlotParseError("resource slots must be a mapping", value=values)
            for key, value in values.items():
                milli[_check_name(key)] = _exact_amount(key, value)
        self._milli = milli

    @classmethod
    def parse(
        cls,
        values: object,
        known_slots: Mapping[str, SlotTypes] = DEFAULT_SLOT_TYPES,
        *,
        allow_infinity: bool = False,
    ) -> ResourceSlot:
        """Parse user input such as ``{"cpu": "2", "mem": "4g", "cuda.shares": 0.5}``.

        *known_slots* maps every slot the cluster knows to its type (agents'
        plugins declare them at run time).  Count slots take non-negative
        plain decimals (strings, ints, floats by their shortest repr, or
        Decimals), truncated toward zero to thousandths.  Byte slots take
        ints or sizes such as ``"512m"`` or ``"1.5G"`` (see
        :meth:`BinarySize.parse`) and must be whole bytes, as unique slots must
        be whole units.  ``"inf"``/``"Infinity"`` is accepted only with
        *allow_infinity*.  Negatives (``"-0"`` included), NaN, exponents,
        amounts above :data:`MAX_SLOT_VALUE`, unknown slots, ``None``, bools
        and nested objects raise :class:`SlotParseError`.
        """
        if not isinstance(values, Mapping):
            raise SlotParseError("resource slots must be a JSON object", value=values)
        milli: dict[str, Milli] = {}
        for key, value in values.items():
            slot_type = _slot_type(key, known_slots)
            milli[key] = _parse_amount(key, value, slot_type, allow_infinity=allow_infinity)
        return _wrap(milli)

    @classmethod
    def from_policy(
        cls,
        total_resource_slots: object,
        default_for_unspecified: DefaultForUnspecified | str = DefaultForUnspecified.LIMITED,
        known_slots: Mapping[str, SlotTypes] = DEFAULT_SLOT_TYPES,
    ) -> ResourceSlot:
        """Return the limits of a keypair resource policy for every known slot.

        *total_resource_slots* is parsed as by :meth:`parse` with infinity
        allowed; each known slot it does not name gets zero (``LIMITED``) or
        infinity (``UNLIMITED``).  The result has exactly the known slots, in
        *known_slots* order.
        """
        try:
            default = DefaultForUnspecified(default_for_unspecified)
        except ValueError:
            raise SlotParseError(
                "must be LIMITED or UNLIMITED",
                value=default_for_unspecified,
                field="default_for_unspecified",
            ) from None
        limits = cls.parse(total_resource_slots, known_slots, allow_infinity=True)._milli
        fill: Milli = 0 if default is DefaultForUnspecified.LIMITED else math.inf
        return _wrap({key: limits.get(key, fill) for key in known_slots})

    @classmethod
    def from_json(
        cls, data: object, known_slots: Mapping[str, SlotTypes] | None = None
    ) -> ResourceSlot:
        """Return the ResourceSlot whose :meth:`to_json` is *data*.

        Amounts are decimal strings (ints are accepted too), possibly negative,
        or ``"Infinity"``/``"-Infinity"``; decimals beyond thousandths are
        truncated toward zero.  With *known_slots*, unknown slot names are
        rejected.  ``from_json(s.to_json()) == s`` for every ResourceSlot, with
        the same keys in the same order.
        """
        if not isinstance(data, Mapping):
            raise SlotParseError("resource slots must be a JSON object", value=data)
        milli: dict[str, Milli] = {}
        for key, value in data.items():
            if known_slots is None:
                _check_name(key)
            else:
                _slot_type(key, known_slots)
            milli[key] = _json_amount(key, value)
        return _wrap(milli)

    def to_json(self) -> dict[str, str]:
        """Return ``{slot: amount}`` with amounts as exact decimal strings (the spec's
        ``decimal`` type): bytes unscaled (``"4294967296"``), counts with at most
        three decimals, infinity as ``"Infinity"``."""
        return {key: _milli_text(milli) for key, milli in self._milli.items()}

    def to_humanized(
        self, known_slots: Mapping[str, SlotTypes] = DEFAULT_SLOT_TYPES
    ) -> dict[str, str]:
        """Return ``{slot: amount}`` for people: whole non-negative byte amounts as
        :class:`BinarySize` strings (``"16 GiB"``), everything else as in
        :meth:`to_json`.  :meth:`parse` with infinity allowed reads the result
        back to an equal ResourceSlot whenever no amount is negative."""
        out: dict[str, str] = {}
        for key, milli in self._milli.items():
            if (
                known_slots.get(key) is SlotTypes.BYTES
                and isinstance(milli, int)
                and milli >= 0
                and milli % _MILLI == 0
            ):
                out[key] = BinarySize(milli // _MILLI).format()
            else:
                out[key] = _milli_text(milli)
        return out

    def fits_in(self, capacity: ResourceSlot) -> bool:
        """Return whether this request fits in *capacity*: ``self <= capacity``.

        Equivalently, ``capacity - self`` has no negative slot.
        """
        return _ops.le(self._milli, capacity._milli)

    def __getitem__(self, key: str) -> Decimal:
        return Decimal(_milli_text(self._milli[key]))

    def __contains__(self, key: object) -> bool:
        return key in self._milli

    def __iter__(self) -> Iterator[str]:
        return iter(self._milli)

    def __len__(self) -> int:
        return len(self._milli)

    def __add__(self, other: ResourceSlot) -> ResourceSlot:
        if not isinstance(other, ResourceSlot):
            return NotImplemented
        # _wrap() inlined: the call costs a fifth of the whole operation.
        result = _new_object(ResourceSlot)
        result._milli = _ops.add(self._milli, other._milli)
        return result

    def __sub__(self, other: ResourceSlot) -> ResourceSlot:
        if not isinstance(other, ResourceSlot):
            return NotImplemented
        # _wrap() inlined: the call costs a fifth of the whole operation.
        result = _new_object(ResourceSlot)
        result._milli = _ops.subtract(self._milli, other._milli)
        return result

    def __mul__(self, factor: int | Decimal) -> ResourceSlot:
        if isinstance(factor, bool) or not isinstance(factor, int | Decimal):
            return NotImplemented
        if isinstance(factor, Decimal):
            if not factor.is_finite():
                raise SlotArithmeticError(f"cannot multiply resource slots by {factor}")
            numerator, denominator = factor.as_integer_ratio()
        else:
            numerator, denominator = factor, 1
        out: dict[str, Milli] = {}
        for key, milli in self._milli.items():
            if isinstance(milli, float):
                if numerator == 0:
                    raise SlotArithmeticError(f"{key}: infinity times zero has no value")
                out[key] = milli if numerator > 0 else -milli
            else:
                product = milli * numerator
                scaled = abs(product) // denominator
                out[key] = -scaled if product < 0 else scaled
        return _wrap(out)

    __rmul__ = __mul__

    def __le__(self, other: ResourceSlot) -> bool:
        if not isinstance(other, ResourceSlot):
            return NotImplemented
        return _ops.le(self._milli, other._milli)

    def __ge__(self, other: ResourceSlot) -> bool:
        if not isinstance(other, ResourceSlot):
            return NotImplemented
        return _ops.le(other._milli, self._milli)

    def __lt__(self, other: ResourceSlot) -> bool:
        if not isinstance(other, ResourceSlot):
            return NotImplemented
        return _ops.le(self._milli, other._milli) and not _ops.eq(self._milli, other._milli)

    def __gt__(self, other: ResourceSlot) -> bool:
        if not isinstance(other, ResourceSlot):
            return NotImplemented
        return _ops.le(other._milli, self._milli) and not _ops.eq(self._milli, other._milli)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResourceSlot):
            return NotImplemented
        return _ops.eq(self._milli, other._milli)

    def __hash__(self) -> int:
        return hash(frozenset(item for item in self._milli.items() if item[1] != 0))

    def __repr__(self) -> str:
        return f"ResourceSlot({self.to_json()!r})"


def _wrap(milli: dict[str, Milli]) -> ResourceSlot:
    """Return a ResourceSlot owning *milli*, which nobody else may hold."""
    slot = _new_object(ResourceSlot)
    slot._milli = milli
    return slot
