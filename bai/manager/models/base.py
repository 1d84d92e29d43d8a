"""The shared metadata and the column types every table uses.

All tables live in :data:`metadata`, whose naming convention gives every
constraint and index a deterministic name, so alembic migrations can address
them on both SQLite and PostgreSQL.

The column types make one schema portable across both databases:

* :data:`JSONType` / :data:`NullableJSONType`: ``JSON`` on SQLite, ``JSONB`` on
  PostgreSQL; the nullable flavour stores Python ``None`` as SQL ``NULL``.
* :class:`ResourceSlotType`: a :class:`~bai.common.slots.ResourceSlot` stored
  as its exact JSON form (decimal strings), read back as a ResourceSlot.
* :class:`UTCDateTime`: timezone-aware datetimes; writes are converted to UTC
  and reads are always aware UTC datetimes, even on SQLite, which keeps no
  zone.
* :func:`enum_type`: a ``StrEnum`` stored as its value in a ``VARCHAR`` with
  a ``CHECK`` constraint (no native PostgreSQL enum, so adding a member never
  needs an ``ALTER TYPE``); reads return enum members.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot

__all__ = [
    "ENUM_LENGTH",
    "NAMING_CONVENTION",
    "JSONType",
    "NullableJSONType",
    "ResourceSlotType",
    "UTCDateTime",
    "enum_type",
    "metadata",
    "new_uuid",
    "utcnow",
]

NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Every table of the manager.
metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

#: Width of every enum column: room for new members without a migration.
ENUM_LENGTH: Final = 32

#: JSON documents (JSONB on PostgreSQL).  ``None`` is stored as JSON ``null``.
JSONType: Final[TypeEngine[Any]] = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
#: JSON documents (JSONB on PostgreSQL) where ``None`` means SQL ``NULL``.
NullableJSONType: Final[TypeEngine[Any]] = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the default of every timestamp)."""
    return datetime.now(UTC)


def new_uuid() -> uuid.UUID:
    """A fresh random UUID (the default of every UUID primary key)."""
    return uuid.uuid4()


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always an aware UTC ``datetime`` in Python.

    Naive datetimes are rejected on write, because guessing their zone is how
    timestamps silently shift by hours.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise InvalidValue("a timestamp must be a timezone-aware datetime", value=value)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # SQLite keeps no zone; everything written through this type was UTC.
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class ResourceSlotType(TypeDecorator[ResourceSlot]):
    """A :class:`ResourceSlot` column, stored as ``{slot: "decimal string"}``.

    Writes accept a ResourceSlot or a mapping in its JSON form (decimal
    strings or ints); reads return a ResourceSlot equal to what was written.
    ``None`` is SQL ``NULL``.
    """

    impl = sa.JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB(none_as_null=True))
        return dialect.type_descriptor(sa.JSON(none_as_null=True))

    def process_bind_param(self, value: object, dialect: Dialect) -> dict[str, str] | None:
        if value is None:
            return None
        if isinstance(value, ResourceSlot):
            return value.to_json()
        if isinstance(value, Mapping):
            return ResourceSlot.from_json(value).to_json()
        raise InvalidValue("resource slots must be a ResourceSlot or a mapping", value=value)

    def process_result_value(self, value: Any, dialect: Dialect) -> ResourceSlot | None:
        if value is None:
            return None
        return ResourceSlot.from_json(value)


def _enum_values(enum_class: type[enum.Enum]) -> list[str]:
    return [str(member.value) for member in enum_class]


def enum_type(enum_class: type[enum.StrEnum], name: str) -> sa.Enum:
    """A portable column type for *enum_class*: its values in a checked ``VARCHAR``.

    *name* names the ``CHECK`` constraint (``ck_<table>_<name>``).
    """
    return sa.Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=ENUM_LENGTH,
        values_callable=_enum_values,
        validate_strings=True,
    )
