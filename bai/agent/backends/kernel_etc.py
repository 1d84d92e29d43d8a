"""The ``/etc`` that sandboxed local kernels share, kept in step with the host's.

Every sandboxed kernel gets the same read-only ``/etc`` base folder
(:mod:`bai.agent.backends.sandbox` lists what it holds): copies of the
host's allowed entries and the files the agent generates (the kernel user's
``passwd`` and ``group``).  :func:`refresh_etc` remakes it at each agent
start without pulling it from under kernels that still use it.  It does
blocking file I/O: call it through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from bai.agent.backends import sandbox


def refresh_etc(base: Path, generated: Mapping[str, str]) -> None:
    """Make *base* hold copies of the host's allowed ``/etc`` entries and *generated* files.

    Each entry is replaced in place by renames, so kernels still running
    from an earlier agent (their ``/etc`` is *base*) see the new entries (a
    folder entry is missing for the instant between its two renames).  Links
    are copied as links: they point into ``/usr``, which the kernels have too.
    """
    base.mkdir(mode=0o755, exist_ok=True)
    os.chmod(base, 0o755)
    for name in sandbox.ETC_ALLOWED:
        source = Path("/etc", name)
        if not os.path.lexists(source):
            continue
        target = base / name
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fresh = target.with_name(f".{target.name}.new")
        shutil.rmtree(fresh, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            fresh.unlink()
        if source.is_symlink():
            os.symlink(os.readlink(source), fresh)
        elif source.is_dir():
            shutil.copytree(source, fresh, symlinks=True)
        else:
            shutil.copy2(source, fresh)
        if target.is_dir() and not target.is_symlink():
            stale = target.with_name(f".{target.name}.old")
            shutil.rmtree(stale, ignore_errors=True)
            os.rename(target, stale)
            os.rename(fresh, target)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(fresh, target)
    for name, text in generated.items():
        fresh = base / f".{name}.new"
        fresh.write_text(text, encoding="utf-8")
        os.chmod(fresh, 0o644)
        os.replace(fresh, base / name)
    for name in sandbox.HOST_FILES:
        # Mount points for each kernel's own copy: /etc is read-only by then.
        (base / name).touch(mode=0o644)
