"""bai's client SDK: the manager's REST API from Python, Trio-native.

Async (Trio)::

    async with APIClient(APIConfig.from_env()) as api:
        sess = await ComputeSession.create(api, "python", name="hello")
        async with aclosing(sess.run('print("hello world")')) as results:
            async for result in results:
                ...
        await sess.destroy()

Administration (users, projects, domains, keypairs, policies, resource
groups, presets, agents, the manager's status): :mod:`bai.client.identity`,
:mod:`bai.client.cluster`, :mod:`bai.client.manager`, :mod:`bai.client.auth`,
over the GraphQL helpers of :mod:`bai.client.admin`.

Blocking: :class:`~bai.client.sync.SyncAPIClient` offers the same calls
(except the streams).  A session's terminal, streamed runs and TCP tunnels
to its apps: :mod:`bai.client.stream`.

This package imports only :mod:`bai.common` from bai (and httpx, trio).
"""

from bai.client.admin import Admin, Page, SessionPage, graphql, list_sessions
from bai.client.auth import Auth, Credentials
from bai.client.cluster import Agent, ResourcePreset, ScalingGroup
from bai.client.exceptions import (
    BackendAPIError,
    BackendClientError,
    BackendError,
    Conflict,
    Forbidden,
    GraphQLError,
    InvalidAPIParameters,
    MalformedResponse,
    MutationFailed,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
)
from bai.client.identity import Domain, Group, KeyPair, ResourcePolicy, User
from bai.client.manager import Announcement, ErrorLog, ErrorLogPage, Manager
from bai.client.request import APIClient, APIResponse
from bai.client.session import (
    AppInfo,
    ComputeSession,
    ConsoleItem,
    ExecutionResult,
    FileEntry,
    FileListing,
    session_events,
)
from bai.client.settings import API_VERSION, APIConfig, ClientConfigError
from bai.client.shared_config import delete_config, get_config, set_config
from bai.client.sse import SSEEvent
from bai.client.stream import (
    ExecuteStream,
    ForwardStats,
    PtyError,
    PtyStream,
    StreamClosed,
    TcpTunnel,
    forward_app,
    open_tcpproxy,
    stream_execute,
    stream_pty,
)
from bai.client.sync import SyncAPIClient, SyncComputeSession, SyncVFolder
from bai.client.vfolder import FolderEntry, Transferred, VFolder

__all__ = [
    "API_VERSION",
    "APIClient",
    "APIConfig",
    "APIResponse",
    "Admin",
    "Agent",
    "Announcement",
    "AppInfo",
    "Auth",
    "BackendAPIError",
    "BackendClientError",
    "BackendError",
    "ClientConfigError",
    "ComputeSession",
    "Conflict",
    "ConsoleItem",
    "Credentials",
    "Domain",
    "ErrorLog",
    "ErrorLogPage",
    "ExecuteStream",
    "ExecutionResult",
    "FileEntry",
    "FileListing",
    "FolderEntry",
    "Forbidden",
    "ForwardStats",
    "GraphQLError",
    "Group",
    "InvalidAPIParameters",
    "KeyPair",
    "MalformedResponse",
    "Manager",
    "MutationFailed",
    "NotFound",
    "Page",
    "PtyError",
    "PtyStream",
    "RateLimited",
    "ResourcePolicy",
    "ResourcePreset",
    "SSEEvent",
    "ScalingGroup",
    "ServerError",
    "SessionPage",
    "StreamClosed",
    "SyncAPIClient",
    "SyncComputeSession",
    "SyncVFolder",
    "TcpTunnel",
    "Transferred",
    "Unauthorized",
    "User",
    "VFolder",
    "delete_config",
    "forward_app",
    "get_config",
    "graphql",
    "list_sessions",
    "open_tcpproxy",
    "session_events",
    "set_config",
    "stream_execute",
    "stream_pty",
]
