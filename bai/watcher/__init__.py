"""The agent watcher (``bai watcher``): a small HTTP service next to an agent that reports
its state and starts, stops or restarts it for the manager's ``/resource/watcher`` routes.

:mod:`~bai.watcher.control` holds the two ways to control an agent (as the
watcher's own child process, or as a systemd unit), :mod:`~bai.watcher.app`
the API, :mod:`~bai.watcher.server` the service and
:mod:`~bai.watcher.daemon` the process.  It imports only :mod:`bai.common`:
the agent is another process.
"""

from bai.watcher.server import WatcherService

__all__ = ["WatcherService"]
