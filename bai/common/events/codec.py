"""The wire codec of events: an exact MessagePack round trip.

:func:`encode_event` turns any event of
:data:`~bai.common.events.types.EVENT_TYPES` into bytes that
:func:`decode_event` turns back into an equal event.  Decoding anything
malformed or of an unknown name raises :class:`InvalidEvent`; unknown fields
are ignored, so newer producers may add fields.
"""

from __future__ import annotations

from typing import Union

import msgspec

from bai.common.errors import InvalidValue
from bai.common.events.types import EVENT_TYPES, Event

__all__ = ["InvalidEvent", "decode_event", "encode_event"]


class InvalidEvent(InvalidValue):
    """Bytes that are not a well-formed event of a known name."""


class _NameOnly(msgspec.Struct):
    name: str


_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Event] = msgspec.msgpack.Decoder(
    Union[EVENT_TYPES]  # noqa: UP007  (a Union built from the registry tuple)
)
_name_decoder = msgspec.msgpack.Decoder(_NameOnly)
_EVENT_NAMES = frozenset(event_type.name for event_type in EVENT_TYPES)


def encode_event(event: Event) -> bytes:
    """Serialize *event* to MessagePack bytes that :func:`decode_event` turns back into it.

    Raises :class:`InvalidEvent` if the event holds something MessagePack cannot
    carry (for example an arbitrary object inside ``agent_info``).
    """
    try:
        return _encoder.encode(event)
    except (msgspec.EncodeError, TypeError, OverflowError) as exc:
        raise InvalidEvent(f"{event.name} event cannot be encoded: {exc}", value=event) from None


def decode_event(data: bytes | bytearray | memoryview) -> Event:
    """Parse bytes made by :func:`encode_event` back into the event.

    Unknown fields are ignored (so newer producers may add fields), but a
    missing name, an unknown name, a missing or mistyped field, or bytes that
    are not MessagePack raise :class:`InvalidEvent` naming the problem.
    """
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _explain_invalid(data, exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"event is not valid MessagePack: {exc}", value=bytes(data)) from None
    except TypeError:
        raise InvalidEvent("event payload must be bytes", value=data) from None


def _explain_invalid(
    data: bytes | bytearray | memoryview, exc: msgspec.ValidationError
) -> InvalidEvent:
    try:
        name = _name_decoder.decode(data).name
    except msgspec.DecodeError:
        return InvalidEvent(
            f"event must be a map with a string 'name': {exc}", value=bytes(data), field="name"
        )
    if name not in _EVENT_NAMES:
        return InvalidEvent("unknown event name", value=name, field="name")
    return InvalidEvent(f"malformed event: {exc}", value=bytes(data), field=name)
