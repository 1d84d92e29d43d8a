"""Session and cluster templates, below the API: reading their documents and turning
them into a session's creation body.

Pure (no database, no I/O): :mod:`~bai.manager.templates.documents` reads a
``payload`` (JSON or YAML) into checked task and cluster templates,
:mod:`~bai.manager.templates.merge` turns templates and a caller's overrides
into the body of ``POST /session``.  The routes are
:mod:`bai.manager.api.template` and :mod:`bai.manager.api.session.templates`.
"""

from __future__ import annotations

from bai.manager.templates.documents import (
    MAIN_ROLE,
    MAX_PAYLOAD,
    ClusterTemplate,
    InvalidTemplate,
    TaskEntry,
    TaskTemplate,
    check_cluster_template,
    check_task_template,
    cluster_payload,
    dump_yaml,
    load_payload,
    task_entries,
)
from bai.manager.templates.merge import cluster_body, git_clone_script, merged_body, task_body

__all__ = [
    "MAIN_ROLE",
    "MAX_PAYLOAD",
    "ClusterTemplate",
    "InvalidTemplate",
    "TaskEntry",
    "TaskTemplate",
    "check_cluster_template",
    "check_task_template",
    "cluster_body",
    "cluster_payload",
    "dump_yaml",
    "git_clone_script",
    "load_payload",
    "merged_body",
    "task_body",
    "task_entries",
]
