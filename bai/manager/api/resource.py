"""``/resource``: resource presets, and what the caller can still allocate.

* ``GET /resource/presets`` -> ``{"presets": [{"name", "resource_slots",
  "shared_memory"}]}``.
* ``POST /resource/check-presets`` ``{"group": "default", "scaling_group":
  null}`` -> the caller's limits, usage and what remains, per the spec's
  response: ``keypair_limits``, ``keypair_using``, ``keypair_remaining``,
  ``group_limits``, ``group_using``, ``group_remaining``,
  ``scaling_group_remaining``, ``scaling_groups`` (``{name: {"using",
  "remaining"}}``) and ``presets`` (each with ``allocatable``).

Every slot object lists exactly the slots the cluster knows
(:func:`cluster_slot_types`: ``cpu``, ``mem`` and whatever the live agents
declare or report), with the spec's decimal strings and ``"Infinity"`` for no
limit.  The numbers are read in one read-only transaction; usage is derived
from the kernels that hold resources, never from a counter.  The rules are
those enqueue and the dispatcher apply (:mod:`bai.manager.policy`):

* ``keypair_limits`` come from the keypair's resource policy (a slot it does
  not name is 0 or unlimited by ``default_for_unspecified``); the project's
  and the domain's ``total_resource_slots`` cap the slots they name.
* ``keypair_remaining`` is, per slot, the least of what the keypair, the
  project and the domain have left (never below 0).
* The resource groups considered are the active ones associated with the
  caller's domain, project or keypair: only the public ones, unless
  ``scaling_group`` names one of them (a private one included).
* A group's ``remaining`` sums the free capacity (available minus occupied)
  of its live, schedulable agents, capped by ``keypair_remaining``;
  ``using`` is what the caller's user occupies there;
  ``scaling_group_remaining`` does the same over all considered groups.
* A preset is ``allocatable`` when one agent alone has room for all of it and
  it fits ``keypair_remaining``.  Slots the cluster does not know are left
  out of the preset's ``resource_slots``, but they still count for
  ``allocatable``: a GPU preset is not allocatable on a cluster without GPUs.
* ``group_*`` values are ``"NaN"`` unless the shared config key
  ``config/api/resources/group_resource_visibility`` is true, as in the spec.

With ``owner_access_key``, an admin sees all of this as that keypair sees it.

Usage reports (:mod:`bai.manager.usage`): ``GET /resource/usage/month``,
``GET /resource/usage/period`` (superadmins), ``GET /resource/stats/user/month``
(anyone, their own), ``GET /resource/stats/admin/month`` (superadmins), and
``POST /resource/recalculate-usage``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from quart import Blueprint, Response, request

from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import RESOURCE_OCCUPYING_STATUSES, SlotTypes
from bai.manager.api.auth import auth_required, current_auth, superadmin_required
from bai.manager.api.helpers import InvalidParameter, current_ctx, json_response, read_json
from bai.manager.db import Connection
from bai.manager.models.base import utcnow
from bai.manager.models.identity import (
    association_groups_users,
    domains,
    groups,
    keypair_resource_policies,
)
from bai.manager.models.resource import AgentStatus, agents, resource_presets
from bai.manager.models.session import kernels, sessions
from bai.manager.models.shared_config import get_config
from bai.manager.models.usage import agent_occupancy
from bai.manager.policy import (
    Slots,
    add,
    cap_limits,
    fits,
    free_capacity,
    keypair_limits,
    least,
    restrict,
    slot_types_of,
    subtract,
    usable_groups,
)
from bai.manager.sessions.queries import allowed_scaling_groups
from bai.manager.usage import month_span, monthly_bins, period_span, period_usage, usage_timezone

__all__ = [
    "GROUP_VISIBILITY_KEY",
    "blueprint",
    "cluster_slot_types",
]

#: The shared config key that makes ``check-presets`` show project limits and usage.
GROUP_VISIBILITY_KEY: Final = "config/api/resources/group_resource_visibility"

_ZERO: Final = Decimal(0)
_INFINITY: Final = Decimal("Infinity")
_OCCUPYING: Final = sorted(RESOURCE_OCCUPYING_STATUSES)

blueprint = Blueprint("resource", __name__, url_prefix="/resource")


async def cluster_slot_types(conn: Connection) -> dict[str, SlotTypes]:
    """The slots the cluster knows: those of the live agents, as
    :func:`~bai.manager.policy.slot_types_of` types them (``cpu`` and ``mem`` first)."""
    rows = (
        await conn.execute(
            sa.select(agents.c.compute_plugins, agents.c.available_slots).where(
                agents.c.status == AgentStatus.ALIVE
            )
        )
    ).all()
    return slot_types_of(
        (row.compute_plugins for row in rows), (row.available_slots for row in rows)
    )


def _json(slots: Slots) -> dict[str, str]:
    return ResourceSlot(slots).to_json()


def _preset(row: Any, known: Mapping[str, SlotTypes]) -> dict[str, Any]:
    return {
        "name": row.name,
        "resource_slots": _json({k: v for k, v in row.resource_slots.items() if k in known}),
        "shared_memory": None if row.shared_memory is None else str(row.shared_memory),
    }


async def _occupied(conn: Connection, known: Iterable[str], *where: Any) -> Slots:
    rows = await conn.execute(
        sa.select(kernels.c.occupied_slots)
        .select_from(kernels.join(sessions, kernels.c.session_id == sessions.c.id))
        .where(kernels.c.status.in_(_OCCUPYING), *where)
    )
    total = restrict(known, None, _ZERO)
    for row in rows:
        total = add(total, row.occupied_slots)
    return total


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return value is True or (isinstance(value, int) and value == 1)


# ---------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------


@blueprint.route("/presets", methods=["GET"])
@auth_required
async def presets() -> Response:
    """``GET /resource/presets``: every preset, by name."""
    async with current_ctx().db.begin_readonly() as conn:
        known = await cluster_slot_types(conn)
        rows = await conn.execute(sa.select(resource_presets).order_by(resource_presets.c.name))
    return json_response({"presets": [_preset(row, known) for row in rows]})


class _CheckPresets(msgspec.Struct, kw_only=True):
    group: str = "default"
    scaling_group: str | None = None


@blueprint.route("/check-presets", methods=["POST"])
@auth_required
async def check_presets() -> Response:
    """``POST /resource/check-presets`` (module docs)."""
    params = await read_json(_CheckPresets)
    owner = current_auth().owner
    async with current_ctx().db.begin_readonly() as conn:
        known = await cluster_slot_types(conn)

        policy = (
            await conn.execute(
                sa.select(
                    keypair_resource_policies.c.total_resource_slots,
                    keypair_resource_policies.c.default_for_unspecified,
                ).where(keypair_resource_policies.c.name == owner.resource_policy)
            )
        ).one()
        keypair_limit = restrict(
            known,
            keypair_limits(policy.total_resource_slots, policy.default_for_unspecified, known),
            _ZERO,
        )
        keypair_using = await _occupied(conn, known, sessions.c.access_key == owner.access_key)

        project = (
            await conn.execute(
                sa.select(groups.c.id, groups.c.total_resource_slots)
                .select_from(
                    groups.join(
                        association_groups_users,
                        association_groups_users.c.group_id == groups.c.id,
                    )
                )
                .where(
                    groups.c.name == params.group,
                    groups.c.domain_name == owner.domain_name,
                    groups.c.is_active.is_(True),
                    association_groups_users.c.user_id == owner.user_id,
                )
            )
        ).first()
        if project is None:
            raise InvalidValue(
                "no such active project in the domain, or the caller is not a member of it",
                value=params.group,
                field="group",
            )
        group_limits = restrict(known, cap_limits(project.total_resource_slots, known), _INFINITY)
        group_using = await _occupied(conn, known, sessions.c.group_id == project.id)

        domain_slots = (
            await conn.execute(
                sa.select(domains.c.total_resource_slots).where(domains.c.name == owner.domain_name)
            )
        ).scalar_one()
        domain_limits = restrict(known, cap_limits(domain_slots, known), _INFINITY)
        domain_using = await _occupied(conn, known, sessions.c.domain_name == owner.domain_name)

        remaining = least(
            subtract(keypair_limit, keypair_using),
            subtract(group_limits, group_using),
            subtract(domain_limits, domain_using),
        )

        allowed = await allowed_scaling_groups(
            conn,
            domain_name=owner.domain_name,
            group_id=project.id,
            access_key=owner.access_key,
        )
        considered = usable_groups(allowed, params.scaling_group, public_only=True)
        if considered is None:
            raise InvalidValue(
                "no such active resource group allowed to the caller",
                value=params.scaling_group,
                field="scaling_group",
            )

        agent_rows = await conn.execute(
            sa.select(agents.c.id, agents.c.scaling_group, agents.c.available_slots)
            .where(
                agents.c.status == AgentStatus.ALIVE,
                agents.c.schedulable.is_(True),
                agents.c.scaling_group.in_(considered),
            )
            .order_by(agents.c.id)
        )
        occupancy = await agent_occupancy(conn, [row.id for row in agent_rows])
        free_per_agent: list[Slots] = []
        free_per_group = {name: restrict(known, None, _ZERO) for name in considered}
        for row in agent_rows:
            free = free_capacity(row.available_slots, occupancy[row.id].occupied_slots)
            free_per_agent.append(free)
            free_per_group[row.scaling_group] = add(free_per_group[row.scaling_group], free)

        using_rows = await conn.execute(
            sa.select(sessions.c.scaling_group_name, kernels.c.occupied_slots)
            .select_from(kernels.join(sessions, kernels.c.session_id == sessions.c.id))
            .where(
                kernels.c.status.in_(_OCCUPYING),
                sessions.c.user_uuid == owner.user_id,
                sessions.c.scaling_group_name.in_(considered),
            )
        )
        using_per_group = {name: restrict(known, None, _ZERO) for name in considered}
        for row in using_rows:
            name = row.scaling_group_name
            using_per_group[name] = add(using_per_group[name], row.occupied_slots)

        all_free = restrict(known, None, _ZERO)
        for free in free_per_group.values():
            all_free = add(all_free, free)

        preset_rows = await conn.execute(
            sa.select(resource_presets).order_by(resource_presets.c.name)
        )
        visible = _truthy(await get_config(conn, GROUP_VISIBILITY_KEY))

    preset_list = []
    for row in preset_rows:
        wanted = dict(row.resource_slots.items())
        entry = _preset(row, known)
        entry["allocatable"] = fits(wanted, remaining) and any(
            fits(wanted, free) for free in free_per_agent
        )
        preset_list.append(entry)

    def group_view(slots: Slots) -> dict[str, str]:
        return _json(slots) if visible else dict.fromkeys(slots, "NaN")

    return json_response(
        {
            "keypair_limits": _json(keypair_limit),
            "keypair_using": _json(keypair_using),
            "keypair_remaining": _json(remaining),
            "group_limits": group_view(group_limits),
            "group_using": group_view(group_using),
            "group_remaining": group_view(subtract(group_limits, group_using)),
            "scaling_group_remaining": _json(least(all_free, remaining)),
            "scaling_groups": {
                name: {
                    "using": _json(using_per_group[name]),
                    "remaining": _json(least(free_per_group[name], remaining)),
                }
                for name in considered
            },
            "presets": preset_list,
        }
    )


# ------------------------------------------------------------------ usage reports


@blueprint.route("/recalculate-usage", methods=["POST"])
@superadmin_required
async def recalculate_usage() -> Response:
    """``POST /resource/recalculate-usage``: the original rebuilds cached occupancy
    counters; bai keeps none (occupancy is always summed from the kernels that hold
    resources), so there is nothing to rebuild and the answer is ``{}``."""
    return json_response({})


def _group_ids(values: list[str], field: str) -> list[uuid.UUID]:
    found: list[uuid.UUID] = []
    for value in values:
        for part in value.split(","):
            if not part:
                continue
            try:
                found.append(uuid.UUID(part))
            except ValueError:
                raise InvalidParameter("must be project UUIDs", field=field, value=part) from None
    return found


def _usage_error(exc: InvalidValue) -> InvalidParameter:
    return InvalidParameter(exc.problem, field=exc.field, value=exc.value)


@blueprint.route("/usage/month", methods=["GET"])
@superadmin_required
async def usage_per_month() -> Response:
    """``GET /resource/usage/month?month=YYYYMM[&group_ids=...]``: each project's kernels
    that lived in the month (:func:`bai.manager.usage.period_usage`)."""
    ctx = current_ctx()
    month = request.args.get("month")
    if month is None:
        raise InvalidParameter("is required", field="month")
    zone = await usage_timezone(ctx.db)
    try:
        start, end = month_span(month, zone)
    except InvalidValue as exc:
        raise _usage_error(exc) from None
    group_ids = _group_ids(request.args.getlist("group_ids"), "group_ids")
    report = await period_usage(ctx.db, start, end, zone, ctx.livestats.kernels, group_ids)
    return json_response(report)


@blueprint.route("/usage/period", methods=["GET"])
@superadmin_required
async def usage_per_period() -> Response:
    """``GET /resource/usage/period?start_date=YYYYMMDD&end_date=YYYYMMDD[&group_id=]``:
    the same for the days from start to end (at most 100)."""
    ctx = current_ctx()
    dates = {name: request.args.get(name) for name in ("start_date", "end_date")}
    for name, value in dates.items():
        if value is None:
            raise InvalidParameter("is required", field=name)
    zone = await usage_timezone(ctx.db)
    try:
        start, end = period_span(str(dates["start_date"]), str(dates["end_date"]), zone)
    except InvalidValue as exc:
        raise _usage_error(exc) from None
    field = "project_id" if "project_id" in request.args else "group_id"
    group_ids = _group_ids(request.args.getlist(field), field)
    report = await period_usage(ctx.db, start, end, zone, ctx.livestats.kernels, group_ids)
    return json_response(report)


@blueprint.route("/stats/user/month", methods=["GET"])
@auth_required
async def user_month_stats() -> Response:
    """``GET /resource/stats/user/month``: the caller's ended kernels in 15-minute bins
    over the last 30 days."""
    bins = await monthly_bins(current_ctx().db, utcnow(), current_auth().user_id)
    return json_response(bins)


@blueprint.route("/stats/admin/month", methods=["GET"])
@superadmin_required
async def admin_month_stats() -> Response:
    """``GET /resource/stats/admin/month``: everyone's, the same way."""
    return json_response(await monthly_bins(current_ctx().db, utcnow()))
