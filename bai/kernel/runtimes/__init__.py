"""Code execution back ends of the kernel runner.

* :mod:`~bai.kernel.runtimes.python` -- query mode for Python (a persistent
  namespace in a separate Python process, :mod:`._pyworker`);
* :mod:`~bai.kernel.runtimes.batch` -- shell commands: batch mode's clean,
  build and exec steps, and query mode for the ``shell`` runtime.

Every process the runner starts for user code (the Python process, shell
commands, the bootstrap script, services, the PTY shell) goes through
:func:`yield_to_oom_killer`, so that a kernel filling its memory limit loses
user code, never the runner (whose death would end the session).
"""

from __future__ import annotations

import contextlib
import os

#: The highest ``oom_score_adj``: the OOM killer takes any of these processes
#: (and their children, who inherit it) before the runner, which keeps its own.
USER_CODE_OOM_SCORE_ADJ = b"1000"


def yield_to_oom_killer(pid: int) -> None:
    """Make process *pid* and the children it starts from now on the OOM killer's first choice.

    Raising a score needs no privilege.  Without a writable ``/proc`` the
    process keeps the runner's score: user code still runs, only unprotected.
    A child that subprocess started gets it once ``Popen`` returned, after its
    exec: a shell takes milliseconds to start before it runs the user's
    commands, whose processes then inherit the score.  It takes no lock, so a
    child forked by this multi-threaded runner may call it before it execs.
    """
    with contextlib.suppress(OSError):
        fd = os.open(f"/proc/{pid}/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, USER_CODE_OOM_SCORE_ADJ)
        finally:
            os.close(fd)
