"""The user-facing ``bai`` commands that talk to a manager through the client SDK.

:func:`register` adds them to the ``bai`` group.  Their modules import only
click (and each other) at import time; the SDK, Trio, httpx and rich are
imported when a command runs, so ``bai --help`` stays fast.
"""

from __future__ import annotations

import click

from bai.cli.commands.account import login, logout, update_password
from bai.cli.commands.admin import admin
from bai.cli.commands.app import app, apps, scp, ssh
from bai.cli.commands.config import config
from bai.cli.commands.dotfile import dotfile
from bai.cli.commands.ps import ps
from bai.cli.commands.session import events, logs, rm, run, start
from bai.cli.commands.shell import shell
from bai.cli.commands.template import session_template, start_template
from bai.cli.commands.vfolder import vfolder

__all__ = ["register"]


def register(group: click.Group) -> None:
    """Add ``run``, ``start``, ``ps``, ``rm``, ``logs``, ``events``, ``config``, ``vfolder``,
    ``apps``, ``app``, ``ssh``, ``scp``, ``shell``, ``admin``, ``login``, ``logout``,
    ``update-password``, ``session-template`` and ``start-template``."""
    for command in (
        run,
        start,
        ps,
        rm,
        logs,
        events,
        config,
        vfolder,
        apps,
        app,
        ssh,
        scp,
        shell,
        admin,
        login,
        logout,
        update_password,
        dotfile,
        session_template,
        start_template,
    ):
        group.add_command(command)
