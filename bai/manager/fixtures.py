"""Seed the manager database from a JSON fixture, and the built-in default fixture.

A fixture is one JSON object; every key is optional and every list entry is
an object whose unknown fields are rejected::

    {
      "domains": [{"name": "default", "description": "...", "is_active": true,
                   "total_resource_slots": {"cpu": "64"}, "allowed_vfolder_hosts": [],
                   "allowed_docker_registries": [], "integration_id": null}],
      "keypair_resource_policies": [{"name": "default",
                   "default_for_unspecified": "UNLIMITED", "total_resource_slots": {},
                   "max_session_lifetime": 0, "max_concurrent_sessions": 30,
                   "max_pending_session_count": null, "max_pending_session_resource_slots": null,
                   "max_containers_per_session": 8, "idle_timeout": 0,
                   "allowed_vfolder_hosts": [], "max_vfolder_count": 0, "max_vfolder_size": 0}],
      "user_resource_policies":    [{"name": "default", "max_vfolder_count": 0,
                                     "max_quota_scope_size": 0}],
      "project_resource_policies": [{"name": "default", "max_vfolder_count": 0,
                                     "max_quota_scope_size": 0}],
      "groups": [{"name": "default", "domain_name": "default", "description": "...",
                  "is_active": true, "total_resource_slots": {}, "allowed_vfolder_hosts": [],
                  "integration_id": null, "resource_policy": "default", "id": "<uuid>"}],
      "users": [{"email": "user@lablup.com", "username": "user", "password": "plain text",
                 "need_password_change": false, "full_name": "", "description": "",
                 "status": "active", "domain_name": "default", "role": "user",
                 "resource_policy": "default", "groups": ["default"], "uuid": "<uuid>"}],
      "keypairs": [{"user": "user@lablup.com", "access_key": "AKIA...", "secret_key": "...",
                    "is_active": true, "is_admin": false, "resource_policy": "default",
                    "rate_limit": 30000}],
      "scaling_groups": [{"name": "default", "description": "", "is_active": true,
                          "is_public": true, "driver": "static", "driver_opts": {},
                          "scheduler": "fifo", "scheduler_opts": {}, "wsproxy_addr": null,
                          "use_host_network": false, "domains": ["default"],
                          "groups": [{"domain": "default", "name": "default"}],
                          "keypairs": ["AKIA..."]}],
      "resource_presets": [{"name": "cpu01-small",
                            "resource_slots": {"cpu": "1", "mem": "1g"},
                            "shared_memory": "64m"}],
      "images": [{"name": "cr.backend.ai/stable/python:3.11", "registry": "cr.backend.ai",
                  "image": "stable/python", "tag": "3.11", "architecture": "x86_64",
                  "digest": null, "size_bytes": 0, "labels": {}, "resources": {},
                  "accelerators": [], "aliases": ["python"]}],
      "config": {"some/key": <any JSON value>}
    }

Rules:

* Resource slots are parsed like user input (``"4g"`` for bytes); policy
  limits may be ``"Infinity"``.  A user's ``groups`` name groups of the
  user's domain.  A password is stored hashed; a user without one cannot
  log in with a password (keypairs still work).
* A keypair without ``access_key``/``secret_key`` gets random ones
  (``AKIA`` + 16 upper-case letters or digits; 40 letters or digits), which
  :func:`populate` reports.  ``is_admin`` defaults to whether the user is a
  superadmin or admin.
* Idempotent: an entry whose natural key already exists (a name, a user's
  email, a group's domain and name, an image's name and architecture, an
  access key, a config key) is left as it is, not updated.  A keypair entry
  without an access key counts as present when its user already has a
  keypair, so at most one such entry per user is allowed.
* Atomic: everything is checked and written in one transaction; the first
  problem raises :class:`FixtureError` naming the entry (``users[1]
  (email 'x@y')``) and the database is left as it was.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
import sqlalchemy as sa
import trio

from bai.common.errors import InvalidValue
from bai.common.slots import (
    DEFAULT_SLOT_TYPES,
    BinarySize,
    DefaultForUnspecified,
    ResourceSlot,
)
from bai.common.types import SlotTypes
from bai.common.validation import InvalidField, bracketed, invalid_value
from bai.manager.db import Connection, Database
from bai.manager.models.config import check_config_key, shared_config
from bai.manager.models.identity import (
    UserRole,
    UserStatus,
    association_groups_users,
    domains,
    generate_access_key,
    generate_secret_key,
    groups,
    hash_password,
    keypair_resource_policies,
    keypairs,
    project_resource_policies,
    user_resource_policies,
    users,
)
from bai.manager.models.image import image_aliases, images
from bai.manager.models.resource import (
    resource_presets,
    scaling_groups,
    sgroups_for_domains,
    sgroups_for_groups,
    sgroups_for_keypairs,
)

__all__ = [
    "DEFAULT_FIXTURE",
    "CreatedKeypair",
    "FixtureError",
    "PopulateReport",
    "default_fixture",
    "load_fixture",
    "populate",
]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
LongName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Email = Annotated[str, msgspec.Meta(pattern=r"^[^@\s]+@[^@\s]+$", max_length=64)]
Slots = dict[str, Any]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class FixtureError(InvalidField):
    """A fixture was malformed or did not fit the database; nothing was written.

    ``field`` names the entry (``users[1] (email 'x@y')``) or the JSON path.
    """

    def __init__(
        self, problem: str, *, value: Any = None, field: str | None = None, echo: bool = True
    ) -> None:
        super().__init__(problem, value=value, field=field)
        if not echo:
            # The problem already quotes the offending value.
            self.args = (f"{field}: {problem}" if field else problem,)


class _Entry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class _Domain(_Entry):
    name: Name
    description: str | None = None
    is_active: bool = True
    total_resource_slots: Slots = {}
    allowed_vfolder_hosts: Any = []
    allowed_docker_registries: list[str] = []
    integration_id: str | None = None


class _KeypairPolicy(_Entry):
    name: LongName
    default_for_unspecified: DefaultForUnspecified = DefaultForUnspecified.LIMITED
    total_resource_slots: Slots = {}
    max_session_lifetime: NonNegative = 0
    max_concurrent_sessions: NonNegative = 30
    max_pending_session_count: NonNegative | None = None
    max_pending_session_resource_slots: Slots | None = None
    max_containers_per_session: Annotated[int, msgspec.Meta(ge=1)] = 1
    idle_timeout: NonNegative = 0
    allowed_vfolder_hosts: Any = []
    max_vfolder_count: NonNegative = 0
    max_vfolder_size: NonNegative = 0


class _StoragePolicy(_Entry):
    name: LongName
    max_vfolder_count: NonNegative = 0
    max_quota_scope_size: NonNegative = 0


class _Group(_Entry):
    name: Name
    domain_name: Name
    description: str | None = None
    is_active: bool = True
    total_resource_slots: Slots = {}
    allowed_vfolder_hosts: Any = []
    integration_id: str | None = None
    resource_policy: LongName | None = None
    id: uuid.UUID | None = None


class _User(_Entry):
    email: Email
    domain_name: Name
    username: Name | None = None
    password: str | None = None
    need_password_change: bool = False
    full_name: str | None = None
    description: str | None = None
    status: UserStatus = UserStatus.ACTIVE
    role: UserRole = UserRole.USER
    resource_policy: LongName | None = None
    groups: list[Name] = []
    uuid: uuid.UUID | None = None


class _Keypair(_Entry):
    user: Email
    resource_policy: LongName
    access_key: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{4,20}$")] | None = None
    secret_key: Annotated[str, msgspec.Meta(min_length=8, max_length=40)] | None = None
    is_active: bool = True
    is_admin: bool | None = None
    rate_limit: NonNegative = 30000


class _GroupRef(_Entry):
    domain: Name
    name: Name


class _ScalingGroup(_Entry):
    name: Name
    description: str | None = None
    is_active: bool = True
    is_public: bool = True
    driver: Name = "static"
    driver_opts: dict[str, Any] = {}
    scheduler: Name = "fifo"
    scheduler_opts: dict[str, Any] = {}
    wsproxy_addr: str | None = None
    use_host_network: bool = False
    domains: list[Name] = []
    groups: list[_GroupRef] = []
    keypairs: list[str] = []


class _Preset(_Entry):
    name: LongName
    resource_slots: Slots
    shared_memory: int | str | None = None


class _Image(_Entry):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    registry: LongName
    image: LongName
    tag: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    architecture: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "x86_64"
    digest: str | None = None
    size_bytes: NonNegative = 0
    labels: dict[str, str] = {}
    resources: dict[str, Any] = {}
    accelerators: list[str] = []
    aliases: list[LongName] = []


class _Fixture(_Entry):
    domains: list[_Domain] = []
    keypair_resource_policies: list[_KeypairPolicy] = []
    user_resource_policies: list[_StoragePolicy] = []
    project_resource_policies: list[_StoragePolicy] = []
    groups: list[_Group] = []
    users: list[_User] = []
    keypairs: list[_Keypair] = []
    scaling_groups: list[_ScalingGroup] = []
    resource_presets: list[_Preset] = []
    images: list[_Image] = []
    config: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class CreatedKeypair:
    """A keypair that :func:`populate` inserted (with its secret, to show the operator once)."""

    user_email: str
    access_key: str
    secret_key: str
    is_admin: bool


@dataclass(slots=True)
class PopulateReport:
    """What :func:`populate` did: rows added and entries left alone, per table."""

    inserted: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    keypairs: list[CreatedKeypair] = field(default_factory=list)

    def _count(self, table: str, inserted: bool) -> None:
        counts = self.inserted if inserted else self.skipped
        counts[table] = counts.get(table, 0) + 1


#: The built-in fixture `bai up` starts from.  Keys are generated at populate time.
DEFAULT_FIXTURE: Final[Mapping[str, Any]] = {
    "domains": [{"name": "default", "description": "The default domain"}],
    "keypair_resource_policies": [
        {
            "name": "default",
            "default_for_unspecified": "UNLIMITED",
            "total_resource_slots": {},
            "max_concurrent_sessions": 30,
            "max_containers_per_session": 8,
            "idle_timeout": 0,
            "max_session_lifetime": 0,
        }
    ],
    "user_resource_policies": [{"name": "default"}],
    "project_resource_policies": [{"name": "default"}],
    "groups": [
        {
            "name": "default",
            "domain_name": "default",
            "description": "The default project",
            "resource_policy": "default",
        }
    ],
    "users": [
        {
            "email": "admin@lablup.com",
            "username": "admin",
            "full_name": "Administrator",
            "domain_name": "default",
            "role": "superadmin",
            "resource_policy": "default",
            "groups": ["default"],
        },
        {
            "email": "user@lablup.com",
            "username": "user",
            "full_name": "User",
            "domain_name": "default",
            "role": "user",
            "resource_policy": "default",
            "groups": ["default"],
        },
    ],
    "keypairs": [
        {"user": "admin@lablup.com", "resource_policy": "default", "is_admin": True},
        {"user": "user@lablup.com", "resource_policy": "default", "is_admin": False},
    ],
    "scaling_groups": [
        {
            "name": "default",
            "description": "The default resource group",
            "driver": "static",
            "scheduler": "fifo",
            "domains": ["default"],
        }
    ],
    "resource_presets": [
        {
            "name": "cpu01-small",
            "resource_slots": {"cpu": "1", "mem": "1g"},
            "shared_memory": "64m",
        },
        {
            "name": "cpu02-medium",
            "resource_slots": {"cpu": "2", "mem": "4g"},
            "shared_memory": "128m",
        },
        {
            "name": "cpu04-large",
            "resource_slots": {"cpu": "4", "mem": "8g"},
            "shared_memory": "256m",
        },
        {
            "name": "gpu01-small",
            "resource_slots": {"cpu": "2", "mem": "8g", "cuda.device": "1"},
            "shared_memory": "1g",
        },
    ],
}


def default_fixture() -> dict[str, Any]:
    """A fresh copy of :data:`DEFAULT_FIXTURE`, safe to modify."""
    return copy.deepcopy(dict(DEFAULT_FIXTURE))


def load_fixture(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a fixture file; :class:`FixtureError` names the file and what is wrong."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FixtureError(f"cannot read the fixture: {exc.strerror}", value=where) from None
    except UnicodeDecodeError:
        raise FixtureError("the fixture is not UTF-8 text", value=where) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FixtureError(
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", value=where
        ) from None
    if not isinstance(data, dict):
        raise FixtureError("a fixture must be a JSON object", value=where)
    return data


def _parse(data: object) -> _Fixture:
    if not isinstance(data, Mapping):
        raise FixtureError("a fixture must be a JSON object", value=data)
    try:
        return msgspec.convert(data, _Fixture, strict=True)
    except msgspec.ValidationError as exc:
        raise invalid_value(
            exc, data, where="the fixture", error=FixtureError, notation=bracketed
        ) from None


def _entry_name(section: str, index: int, label: str, value: str) -> str:
    return f"{section}[{index}] ({label} {value!r})"


class _Writer:
    """Writes one parsed fixture inside one transaction."""

    def __init__(
        self,
        conn: Connection,
        report: PopulateReport,
        known_slots: Mapping[str, SlotTypes],
        hashes: Mapping[str, str],
    ) -> None:
        self.conn = conn
        self.report = report
        self.known_slots = known_slots
        self.hashes = hashes

    def slots(self, where: str, field_name: str, value: Any, *, infinity: bool) -> ResourceSlot:
        try:
            return ResourceSlot.parse(value, self.known_slots, allow_infinity=infinity)
        except InvalidValue as exc:
            raise FixtureError(
                f"{field_name}: {exc}", value=value, field=where, echo=False
            ) from None

    async def exists(self, where_clause: sa.ColumnElement[bool], table: sa.Table) -> bool:
        row = (
            await self.conn.execute(sa.select(sa.literal(1)).select_from(table).where(where_clause))
        ).first()
        return row is not None

    async def insert(self, where: str, table: sa.Table, values: Mapping[str, Any]) -> None:
        try:
            await self.conn.execute(sa.insert(table).values(dict(values)))
        except sa.exc.IntegrityError as exc:
            raise FixtureError(
                f"conflicts with the database: {exc.orig}", field=where, echo=False
            ) from None
        self.report._count(table.name, True)

    async def require(
        self, where: str, what: str, table: sa.Table, clause: sa.ColumnElement[bool], name: str
    ) -> None:
        if not await self.exists(clause, table):
            raise FixtureError(f"unknown {what}", value=name, field=where)

    async def group_id(self, where: str, domain: str, name: str) -> uuid.UUID:
        group_id: uuid.UUID | None = await self.conn.scalar(
            sa.select(groups.c.id).where(groups.c.name == name, groups.c.domain_name == domain)
        )
        if group_id is None:
            raise FixtureError(f"unknown group in domain {domain!r}", value=name, field=where)
        return group_id

    async def add(
        self,
        where: str,
        table: sa.Table,
        key: sa.ColumnElement[bool],
        values: Mapping[str, Any],
    ) -> bool:
        if await self.exists(key, table):
            self.report._count(table.name, False)
            return False
        await self.insert(where, table, values)
        return True

    async def write(self, fixture: _Fixture) -> None:
        for i, d in enumerate(fixture.domains):
            where = _entry_name("domains", i, "name", d.name)
            await self.add(
                where,
                domains,
                domains.c.name == d.name,
                {
                    "name": d.name,
                    "description": d.description,
                    "is_active": d.is_active,
                    "total_resource_slots": self.slots(
                        where, "total_resource_slots", d.total_resource_slots, infinity=True
                    ),
                    "allowed_vfolder_hosts": d.allowed_vfolder_hosts,
                    "allowed_docker_registries": d.allowed_docker_registries,
                    "integration_id": d.integration_id,
                },
            )
        for i, p in enumerate(fixture.keypair_resource_policies):
            where = _entry_name("keypair_resource_policies", i, "name", p.name)
            pending = p.max_pending_session_resource_slots
            await self.add(
                where,
                keypair_resource_policies,
                keypair_resource_policies.c.name == p.name,
                {
                    "name": p.name,
                    "default_for_unspecified": p.default_for_unspecified,
                    "total_resource_slots": self.slots(
                        where, "total_resource_slots", p.total_resource_slots, infinity=True
                    ),
                    "max_session_lifetime": p.max_session_lifetime,
                    "max_concurrent_sessions": p.max_concurrent_sessions,
                    "max_pending_session_count": p.max_pending_session_count,
                    "max_pending_session_resource_slots": None
                    if pending is None
                    else self.slots(
                        where, "max_pending_session_resource_slots", pending, infinity=True
                    ),
                    "max_containers_per_session": p.max_containers_per_session,
                    "idle_timeout": p.idle_timeout,
                    "allowed_vfolder_hosts": p.allowed_vfolder_hosts,
                    "max_vfolder_count": p.max_vfolder_count,
                    "max_vfolder_size": p.max_vfolder_size,
                },
            )
        for section, table, entries in (
            ("user_resource_policies", user_resource_policies, fixture.user_resource_policies),
            (
                "project_resource_policies",
                project_resource_policies,
                fixture.project_resource_policies,
            ),
        ):
            for i, sp in enumerate(entries):
                await self.add(
                    _entry_name(section, i, "name", sp.name),
                    table,
                    table.c.name == sp.name,
                    {
                        "name": sp.name,
                        "max_vfolder_count": sp.max_vfolder_count,
                        "max_quota_scope_size": sp.max_quota_scope_size,
                    },
                )
        for i, g in enumerate(fixture.groups):
            await self.write_group(i, g)
        for i, u in enumerate(fixture.users):
            await self.write_user(i, u)
        await self.write_keypairs(fixture.keypairs)
        for i, sg in enumerate(fixture.scaling_groups):
            await self.write_scaling_group(i, sg)
        for i, preset in enumerate(fixture.resource_presets):
            where = _entry_name("resource_presets", i, "name", preset.name)
            shm: int | None = None
            if preset.shared_memory is not None:
                try:
                    shm = int(BinarySize.parse(preset.shared_memory))
                except InvalidValue as exc:
                    raise FixtureError(
                        f"shared_memory: {exc}", value=preset.shared_memory, field=where, echo=False
                    ) from None
            await self.add(
                where,
                resource_presets,
                resource_presets.c.name == preset.name,
                {
                    "name": preset.name,
                    "resource_slots": self.slots(
                        where, "resource_slots", preset.resource_slots, infinity=False
                    ),
                    "shared_memory": shm,
                },
            )
        for i, image in enumerate(fixture.images):
            await self.write_image(i, image)
        for key, value in fixture.config.items():
            where = f"config[{key!r}]"
            try:
                check_config_key(key)
            except InvalidValue as exc:
                raise FixtureError(str(exc), value=key, field=where, echo=False) from None
            await self.add(
                where, shared_config, shared_config.c.key == key, {"key": key, "value": value}
            )

    async def write_group(self, i: int, g: _Group) -> None:
        where = _entry_name("groups", i, "name", g.name)
        await self.require(where, "domain", domains, domains.c.name == g.domain_name, g.domain_name)
        if g.resource_policy is not None:
            await self.require(
                where,
                "project resource policy",
                project_resource_policies,
                project_resource_policies.c.name == g.resource_policy,
                g.resource_policy,
            )
        values: dict[str, Any] = {
            "name": g.name,
            "domain_name": g.domain_name,
            "description": g.description,
            "is_active": g.is_active,
            "total_resource_slots": self.slots(
                where, "total_resource_slots", g.total_resource_slots, infinity=True
            ),
            "allowed_vfolder_hosts": g.allowed_vfolder_hosts,
            "integration_id": g.integration_id,
            "resource_policy": g.resource_policy,
        }
        if g.id is not None:
            values["id"] = g.id
        await self.add(
            where,
            groups,
            sa.and_(groups.c.name == g.name, groups.c.domain_name == g.domain_name),
            values,
        )

    async def write_user(self, i: int, u: _User) -> None:
        where = _entry_name("users", i, "email", u.email)
        await self.require(where, "domain", domains, domains.c.name == u.domain_name, u.domain_name)
        if u.resource_policy is not None:
            await self.require(
                where,
                "user resource policy",
                user_resource_policies,
                user_resource_policies.c.name == u.resource_policy,
                u.resource_policy,
            )
        group_ids = [await self.group_id(where, u.domain_name, name) for name in u.groups]
        user_id = await self.conn.scalar(sa.select(users.c.uuid).where(users.c.email == u.email))
        if user_id is None:
            user_id = u.uuid or uuid.uuid4()
            await self.insert(
                where,
                users,
                {
                    "uuid": user_id,
                    "email": u.email,
                    "username": u.username or u.email,
                    "password": self.hashes.get(u.email),
                    "need_password_change": u.need_password_change,
                    "full_name": u.full_name,
                    "description": u.description,
                    "status": u.status,
                    "domain_name": u.domain_name,
                    "role": u.role,
                    "resource_policy": u.resource_policy,
                },
            )
        else:
            self.report._count(users.name, False)
        for group_id in group_ids:
            await self.add(
                where,
                association_groups_users,
                sa.and_(
                    association_groups_users.c.user_id == user_id,
                    association_groups_users.c.group_id == group_id,
                ),
                {"user_id": user_id, "group_id": group_id},
            )

    async def write_keypairs(self, entries: list[_Keypair]) -> None:
        keyless_users: set[str] = set()
        for i, k in enumerate(entries):
            where = _entry_name("keypairs", i, "user", k.user)
            if (k.access_key is None) != (k.secret_key is None):
                raise FixtureError(
                    "give both access_key and secret_key, or neither", value=k.user, field=where
                )
            if k.access_key is None:
                if k.user in keyless_users:
                    raise FixtureError(
                        "only one keypair without an access_key per user", value=k.user, field=where
                    )
                keyless_users.add(k.user)
            user = (
                await self.conn.execute(
                    sa.select(users.c.uuid, users.c.role).where(users.c.email == k.user)
                )
            ).first()
            if user is None:
                raise FixtureError("unknown user", value=k.user, field=where)
            await self.require(
                where,
                "keypair resource policy",
                keypair_resource_policies,
                keypair_resource_policies.c.name == k.resource_policy,
                k.resource_policy,
            )
            if k.access_key is None:
                present = keypairs.c.user == user.uuid
            else:
                present = keypairs.c.access_key == k.access_key
            if await self.exists(present, keypairs):
                self.report._count(keypairs.name, False)
                continue
            access_key = k.access_key or generate_access_key()
            secret_key = k.secret_key or generate_secret_key()
            is_admin = (
                k.is_admin
                if k.is_admin is not None
                else user.role in (UserRole.SUPERADMIN, UserRole.ADMIN)
            )
            await self.insert(
                where,
                keypairs,
                {
                    "access_key": access_key,
                    "secret_key": secret_key,
                    "user_id": k.user,
                    "user": user.uuid,
                    "is_active": k.is_active,
                    "is_admin": is_admin,
                    "resource_policy": k.resource_policy,
                    "rate_limit": k.rate_limit,
                },
            )
            self.report.keypairs.append(CreatedKeypair(k.user, access_key, secret_key, is_admin))

    async def write_scaling_group(self, i: int, sg: _ScalingGroup) -> None:
        where = _entry_name("scaling_groups", i, "name", sg.name)
        await self.add(
            where,
            scaling_groups,
            scaling_groups.c.name == sg.name,
            {
                "name": sg.name,
                "description": sg.description,
                "is_active": sg.is_active,
                "is_public": sg.is_public,
                "driver": sg.driver,
                "driver_opts": sg.driver_opts,
                "scheduler": sg.scheduler,
                "scheduler_opts": sg.scheduler_opts,
                "wsproxy_addr": sg.wsproxy_addr,
                "use_host_network": sg.use_host_network,
            },
        )
        for domain in sg.domains:
            await self.require(where, "domain", domains, domains.c.name == domain, domain)
            await self.add(
                where,
                sgroups_for_domains,
                sa.and_(
                    sgroups_for_domains.c.scaling_group == sg.name,
                    sgroups_for_domains.c.domain == domain,
                ),
                {"scaling_group": sg.name, "domain": domain},
            )
        for ref in sg.groups:
            group_id = await self.group_id(where, ref.domain, ref.name)
            await self.add(
                where,
                sgroups_for_groups,
                sa.and_(
                    sgroups_for_groups.c.scaling_group == sg.name,
                    sgroups_for_groups.c.group == group_id,
                ),
                {"scaling_group": sg.name, "group": group_id},
            )
        for access_key in sg.keypairs:
            await self.require(
                where, "access key", keypairs, keypairs.c.access_key == access_key, access_key
            )
            await self.add(
                where,
                sgroups_for_keypairs,
                sa.and_(
                    sgroups_for_keypairs.c.scaling_group == sg.name,
                    sgroups_for_keypairs.c.access_key == access_key,
                ),
                {"scaling_group": sg.name, "access_key": access_key},
            )

    async def write_image(self, i: int, image: _Image) -> None:
        where = _entry_name("images", i, "name", image.name)
        image_id = await self.conn.scalar(
            sa.select(images.c.id).where(
                images.c.name == image.name, images.c.architecture == image.architecture
            )
        )
        if image_id is None:
            image_id = uuid.uuid4()
            await self.insert(
                where,
                images,
                {
                    "id": image_id,
                    "name": image.name,
                    "registry": image.registry,
                    "image": image.image,
                    "tag": image.tag,
                    "architecture": image.architecture,
                    "digest": image.digest,
                    "size_bytes": image.size_bytes,
                    "labels": image.labels,
                    "resources": image.resources,
                    "accelerators": image.accelerators,
                },
            )
        else:
            self.report._count(images.name, False)
        for alias in image.aliases:
            await self.add(
                where,
                image_aliases,
                image_aliases.c.alias == alias,
                {"alias": alias, "image_id": image_id},
            )


async def populate(
    db: Database,
    fixture: Mapping[str, Any],
    *,
    known_slots: Mapping[str, SlotTypes] = DEFAULT_SLOT_TYPES,
) -> PopulateReport:
    """Add what *fixture* describes to *db* in one transaction (see the module docs).

    *known_slots* are the slot names resource slots may use.  Returns what
    was inserted and skipped, and the keypairs created with their secrets.
    Raises :class:`FixtureError` (nothing written) for a malformed entry, a
    reference to something that does not exist, or a conflict with a row in
    the database.
    """
    parsed = _parse(fixture)
    # Hashing is slow on purpose: do it before the transaction, off the event loop.
    hashes: dict[str, str] = {}
    for i, u in enumerate(parsed.users):
        if u.password is not None:
            where = _entry_name("users", i, "email", u.email)
            try:
                hashes[u.email] = await trio.to_thread.run_sync(hash_password, u.password)
            except InvalidValue as exc:
                raise FixtureError(str(exc), field=where, echo=False) from None

    async def write(conn: Connection) -> PopulateReport:
        report = PopulateReport()
        await _Writer(conn, report, known_slots, hashes).write(parsed)
        return report

    return await db.transaction(write)
