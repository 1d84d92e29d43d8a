"""``GET /metrics``: the manager's Prometheus metrics (:mod:`bai.manager.metrics`).

Public, as scrapers send no signatures: the page holds aggregates only.
"""

from __future__ import annotations

from quart import Blueprint, Response

from bai.common.metrics import CONTENT_TYPE, exposition, snapshot
from bai.manager.api.auth import public
from bai.manager.api.helpers import current_ctx
from bai.manager.metrics import manager_families

__all__ = ["blueprint"]

blueprint = Blueprint("metrics", __name__)


@blueprint.route("/metrics", methods=["GET"])
@public
async def metrics() -> Response:
    """``GET /metrics``: the text exposition format."""
    page = exposition(snapshot(await manager_families(current_ctx().db)))
    return Response(page, status=200, content_type=CONTENT_TYPE)
