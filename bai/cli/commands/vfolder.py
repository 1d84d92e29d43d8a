"""``bai vfolder ...``: virtual folders, their files, their sharing, and transfers.

The commands mirror the official ``backend.ai vfolder`` ones (spec, lines
11194-11260): the same names, arguments and options where those exist::

    $ bai vfolder create mydata1 local:local
    $ bai vfolder upload mydata1 ./bigdata.csv
    $ bai run --rm -m mydata1 -c 'print(open("mydata1/bigdata.csv").read(10))' python
    $ bai vfolder download mydata1 bigdata.csv -b results/

Transfers go straight to the storage proxy and resume by themselves after a
dropped connection (``--max-retries``); on a terminal each file gets a rich
progress bar on stderr.  ``delete`` moves a folder to the trash, which
``trash`` lists, ``restore`` empties back and ``purge`` empties for good.

Tables go to stdout (tab-separated when not on a terminal), status lines to
stderr.  Only click is imported here at module level; the client and rich
are imported when a command runs.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from bai.cli.commands.pretty import (
    print_done,
    print_fail,
    print_info,
    print_table,
    print_wait,
    print_warn,
)
from bai.cli.commands.runtime import EXIT_FAILURE, run_client

if TYPE_CHECKING:
    from types import TracebackType

    from bai.client import APIClient
    from bai.client.bgtask import TaskProgress
    from bai.client.vfolder import Transferred, VFolder

__all__ = ["vfolder"]

PERMISSIONS: Final = ("ro", "rw", "wd")
USAGE_MODES: Final = ("general", "data", "model")
_CONTEXT: Final = {"help_option_names": ["-h", "--help"]}
_GIVEN_PERMISSION: Final = "Permission to give: ro (read-only), rw (read-write), wd (write-delete)."

_T = TypeVar("_T")
_FC = TypeVar("_FC", bound=Callable[..., Any] | click.Command)


class ByteSize(click.ParamType[int, Any]):
    """A byte count with an optional binary unit (``16m``, ``10g``, ``1024``)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from bai.common.errors import InvalidValue
        from bai.common.slots import BinarySize

        try:
            return int(BinarySize.parse(value))
        except InvalidValue as exc:
            self.fail(f"{value!r} is not a size: {exc}", param, ctx)


class AddressMap(click.ParamType[dict[str, str], Any]):
    """``URL1=URL2,URL3=URL4``: storage proxy addresses to reach at another address."""

    name = "map"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dict[str, str]:
        if isinstance(value, dict):
            return value
        mapping: dict[str, str] = {}
        for item in str(value).split(","):
            key, sep, target = item.strip().partition("=")
            if not sep or not key or not target:
                self.fail(f"expected ADDRESS=ADDRESS pairs, got {item!r}", param, ctx)
            mapping[key] = target
        return mapping


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%b %d %Y %H:%M:%S")


def _size(count: int) -> str:
    """*count* bytes for people: ``512 B``, ``683.6 KiB``, ``1.5 GiB``."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


class TransferView:
    """One rich progress bar per file on a terminal (stderr); nothing elsewhere."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> TransferView:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, relpath: str, done: int, total: int | None) -> None:
        """Move *relpath*'s bar to *done* of *total* bytes."""
        if self._progress is None:
            return
        task = self._tasks.get(relpath)
        if task is None:
            task = self._tasks[relpath] = self._progress.add_task(relpath, total=total)
        self._progress.update(task, completed=done, total=total)

    def resumed(self, relpath: str, retry: int, offset: int, failure: BaseException) -> None:
        """Say that *relpath*'s transfer broke off and resumes at *offset*."""
        reason = str(failure) or type(failure).__name__
        message = f"{relpath}: {reason}; resuming at byte {offset} (retry {retry})"
        if self._progress is not None:
            self._progress.console.print(f"[yellow]\u2219[/] {message}", highlight=False)
        else:
            print_warn(message)


def _sdk() -> type[VFolder]:
    """The SDK's folder class, imported only when a command runs."""
    from bai.client.vfolder import VFolder

    return VFolder


def _folder(api: APIClient, name: str) -> VFolder:
    return _sdk()(api, name)


def _run(call: Callable[[APIClient], Awaitable[_T]], report: Callable[[_T], object]) -> None:
    """Make ``call(api)`` with the configured client, show its answer with *report*, exit 0."""

    async def main(api: APIClient) -> int:
        report(await call(api))
        return 0

    run_client(main)


def _done(message: str) -> Callable[[object], None]:
    """A report for :func:`_run`: *message* as a success line."""
    return lambda _answer: print_done(message)


def _pick(item: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """The first true value of *keys* in *item*, else the last key's value."""
    return next((item[key] for key in keys[:-1] if item.get(key)), item.get(keys[-1]))


def _items_table(
    empty: str, columns: Mapping[str, Sequence[str]]
) -> Callable[[Sequence[Mapping[str, Any]]], None]:
    """A report for :func:`_run`: items as a table (each column shows :func:`_pick` of
    its keys), or *empty* when there are none."""

    def report(items: Sequence[Mapping[str, Any]]) -> None:
        if not items:
            click.echo(empty)
            return
        rows = [[_cell(_pick(item, keys)) for keys in columns.values()] for item in items]
        print_table(list(columns), rows)

    return report


def _emails(key: str, heading: str, nobody: str) -> Callable[[Mapping[str, Any]], None]:
    """A report for :func:`_run`: the emails an answer lists under *key*, or *nobody*."""

    def report(answer: Mapping[str, Any]) -> None:
        emails = answer.get(key)
        if isinstance(emails, list) and emails:
            click.echo(heading)
            for email in emails:
                click.echo(f"\t- {email}")
        else:
            click.echo(nobody)

    return report


def _usage_mode_option(help_text: str) -> Callable[[_FC], _FC]:
    return click.option(
        "-m",
        "--usage-mode",
        type=click.Choice(USAGE_MODES),
        default="general",
        show_default=True,
        help=help_text,
    )


def _permission_option(help_text: str, *decls: str) -> Callable[[_FC], _FC]:
    """A permission (ro, rw or wd; default rw) named by *decls*."""
    return click.option(
        *decls,
        type=click.Choice(PERMISSIONS),
        default="rw",
        show_default=True,
        help=help_text,
    )


@click.group(context_settings=_CONTEXT)
def vfolder() -> None:
    """Virtual folders: persistent storage that sessions mount."""


# ---------------------------------------------------------------- folders


@vfolder.command("list", context_settings=_CONTEXT)
@click.option("-a", "--all", "all_", is_flag=True, help="Every folder (superadmins).")
@click.option(
    "-g", "--group", "group_id", metavar="PROJECT_ID", default=None, help="One project's folders."
)
def list_(all_: bool, group_id: str | None) -> None:
    """List the virtual folders you can use: your own, invited, and your projects'."""
    columns = {
        "Name": ["name"],
        "ID": ["id"],
        "Host": ["host"],
        "Status": ["status"],
        "Permission": ["permission"],
        "Type": ["ownership_type", "type"],
        "Owner": ["is_owner"],
        "Usage Mode": ["usage_mode"],
    }
    _run(
        lambda api: _sdk().list(api, all=all_, group_id=group_id),
        _items_table("There are no virtual folders.", columns),
    )


@vfolder.command(context_settings=_CONTEXT)
@click.option("-g", "--group", "group_id", metavar="PROJECT_ID", default=None)
def list_hosts(group_id: str | None) -> None:
    """List the hosts where you may create virtual folders."""

    def report(hosts: Mapping[str, Any]) -> None:
        click.echo(f"Default vfolder host: {hosts.get('default') or '-'}")
        click.echo(f"Usable hosts: {', '.join(str(h) for h in hosts.get('allowed', []))}")

    _run(lambda api: _sdk().list_hosts(api, group_id=group_id), report)


@vfolder.command(context_settings=_CONTEXT)
def list_allowed_types() -> None:
    """List the ownership types of folders you may create (user, group)."""
    _run(lambda api: _sdk().list_allowed_types(api), lambda types: click.echo(", ".join(types)))


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.argument("host", required=False, default=None)
@click.option(
    "-g",
    "--group",
    metavar="GROUP",
    default=None,
    help="Project id or name: create a project folder instead of your own.",
)
@_usage_mode_option("Purpose of the folder.")
@_permission_option("Permission of the members of a project folder.", "-p", "--permission")
@click.option(
    "-q",
    "--quota",
    type=ByteSize(),
    default=None,
    help="Byte limit of the folder (e.g. 10g; default: none).",
)
@click.option(
    "--cloneable", "--allow-clone", "cloneable", is_flag=True, help="Allow users to clone it."
)
def create(
    name: str,
    host: str | None,
    group: str | None,
    usage_mode: str,
    permission: str,
    quota: int | None,
    cloneable: bool,
) -> None:
    """Create a virtual folder NAME on HOST (default: the default host)."""

    def report(created: Mapping[str, Any]) -> None:
        where = f" on {created['host']}" if created.get("host") else ""
        print_done(
            f'Virtual folder "{created.get("name", name)}" is created{where} '
            f"(ID: {created.get('id', '-')})."
        )

    _run(
        lambda api: _sdk().create(
            api,
            name,
            host,
            group=group,
            usage_mode=usage_mode,
            permission=permission,
            quota=quota or None,
            cloneable=cloneable,
        ),
        report,
    )


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
def info(name: str) -> None:
    """Show the details of the virtual folder NAME."""

    def report(data: Mapping[str, Any]) -> None:
        files = data.get("numFiles", data.get("num_files"))
        lines = [
            f'Virtual folder "{data.get("name", name)}" (ID: {_cell(data.get("id"))})',
            f"- Host: {_cell(data.get('host'))}",
            f"- Owner: {_cell(data.get('is_owner'))}",
            f"- Permission: {_cell(data.get('permission'))}",
            f"- Status: {_cell(data.get('status'))}",
            f"- Number of files: {_cell(files)}",
            f"- Ownership Type: {_cell(data.get('type') or data.get('ownership_type'))}",
            f"- Usage Mode: {_cell(data.get('usage_mode'))}",
            f"- Group ID: {_cell(data.get('group'))}",
            f"- User ID: {_cell(data.get('user'))}",
            f"- Clone Allowed: {_cell(data.get('cloneable'))}",
        ]
        if data.get("max_size") or data.get("quota"):
            lines.append(f"- Quota: {_cell(data.get('max_size') or data.get('quota'))}")
        click.echo("\n".join(lines))

    _run(lambda api: _folder(api, name).info(), report)


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
def delete(name: str) -> None:
    """Move the virtual folder NAME to the trash (`bai vfolder restore` brings it back)."""
    _run(
        lambda api: _folder(api, name).delete(),
        _done(f'Moved "{name}" to the trash (see `bai vfolder trash`).'),
    )


@vfolder.command(context_settings=_CONTEXT)
@click.argument("old_name")
@click.argument("new_name")
def rename(old_name: str, new_name: str) -> None:
    """Rename the virtual folder OLD_NAME to NEW_NAME."""
    _run(lambda api: _folder(api, old_name).rename(new_name), _done("Renamed."))


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.option(
    "-p", "--permission", type=click.Choice(PERMISSIONS), default=None, help="New permission."
)
@click.option(
    "--set-cloneable",
    type=bool,
    metavar="BOOLEXPR",
    default=None,
    help="Whether users may clone the folder (true/false).",
)
def update_options(name: str, permission: str | None, set_cloneable: bool | None) -> None:
    """Change the permission or the cloneable flag of the virtual folder NAME."""
    if permission is None and set_cloneable is None:
        raise click.UsageError("Give --permission, --set-cloneable or both.")
    _run(
        lambda api: _folder(api, name).update_options(
            permission=permission, cloneable=set_cloneable
        ),
        _done("Updated."),
    )


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.argument("target_name")
@click.argument("target_host", required=False, default=None)
@_usage_mode_option("Purpose of the new folder.")
@_permission_option("Permission of the new folder.", "-p", "--permission")
def clone(
    name: str, target_name: str, target_host: str | None, usage_mode: str, permission: str
) -> None:
    """Copy the virtual folder NAME into a new folder TARGET_NAME (on TARGET_HOST).

    Waits until the copy is complete.
    """

    async def main(api: APIClient) -> int:
        answer = await _folder(api, name).clone(
            target_name, target_host=target_host, usage_mode=usage_mode, permission=permission
        )
        task_id = answer.get("bgtask_id")
        if not task_id:
            print_done("Cloning the vfolder is complete.")
            return 0
        print_wait("Cloning the vfolder... (this may take a while for many files)")

        def on_progress(progress: TaskProgress) -> None:
            if progress.total:
                print_wait(f"Cloning the vfolder... {progress.current}/{progress.total}")

        target = str(answer.get("id") or target_name)
        outcome = await _sdk().wait_cloned(
            api, str(task_id), target=target, on_progress=on_progress
        )
        if outcome.ok:
            print_done("Cloning the vfolder is complete.")
            return 0
        if outcome.status == "cancelled":
            print_warn("The clone was cancelled (the manager may have shut down).")
        elif outcome.status == "failed":
            print_fail(f"Cloning failed: {outcome.message or 'no reason given'}")
        else:
            print_warn("The clone ended without a result; check it with `bai vfolder info`.")
        return EXIT_FAILURE

    run_client(main)


# ---------------------------------------------------------------- the trash


@vfolder.command(context_settings=_CONTEXT)
def trash() -> None:
    """List your deleted virtual folders that can still be restored."""
    columns = {
        "Name": ["name"],
        "ID": ["id"],
        "Host": ["host"],
        "Deleted At": ["deleted_at", "status_changed"],
    }
    _run(lambda api: _sdk().trash(api), _items_table("The trash is empty.", columns))


async def _trashed_id(api: APIClient, text: str) -> str | None:
    """The id of the trashed folder *text* names (an id, or a name unique in the trash)."""
    import uuid

    try:
        uuid.UUID(text)
        return text
    except ValueError:
        pass
    found = [item for item in await _sdk().trash(api) if item.get("name") == text]
    if len(found) == 1:
        return str(found[0].get("id"))
    if not found:
        print_fail(f'There is no folder named "{text}" in the trash.')
    else:
        ids = ", ".join(str(item.get("id")) for item in found)
        print_fail(f'Several folders named "{text}" are in the trash; name one by id: {ids}')
    return None


def _run_on_trashed(
    folder: str, call: Callable[[APIClient, str], Awaitable[object]], done: str
) -> None:
    """``call(api, id)`` for the trashed *folder* (:func:`_trashed_id`), then *done* it."""

    async def main(api: APIClient) -> int:
        folder_id = await _trashed_id(api, folder)
        if folder_id is None:
            return EXIT_FAILURE
        await call(api, folder_id)
        print_done(f"{done} {folder}.")
        return 0

    run_client(main)


@vfolder.command(context_settings=_CONTEXT)
@click.argument("folder", metavar="ID_OR_NAME")
def restore(folder: str) -> None:
    """Bring a deleted virtual folder back from the trash."""
    _run_on_trashed(folder, _sdk().restore, "Restored")


@vfolder.command(context_settings=_CONTEXT)
@click.argument("folder", metavar="ID_OR_NAME")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(folder: str, yes: bool) -> None:
    """Remove a deleted virtual folder and all its data for good."""
    if not yes:
        click.confirm(f"Purge {folder} and all its data for good?", abort=True, err=True)
    _run_on_trashed(folder, _sdk().purge, "Purged")


# ---------------------------------------------------------------- files


def _transfer_options(fn: Any) -> Any:
    options = [
        click.option(
            "-b",
            "--base-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Local directory the paths are relative to (default: the current one).",
        ),
        click.option(
            "--override-storage-proxy",
            "address_map",
            type=AddressMap(),
            default=None,
            help='Reach storage proxies at other addresses: "URL1=URL2,URL3=URL4".',
        ),
        click.option(
            "--max-retries",
            type=click.IntRange(min=0),
            default=20,
            show_default=True,
            help="How often each file's transfer resumes after a dropped connection.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _run_transfer(
    call: Callable[[APIClient, TransferView], Awaitable[list[Transferred]]],
    done: str,
    shown: Callable[[Transferred], object],
) -> None:
    """``call(api, view)`` under a :class:`TransferView`, then each file (as *shown*) and
    the total, *done*."""

    async def main(api: APIClient) -> int:
        with TransferView() as view:
            moved = await call(api, view)
        for item in moved:
            print_info(f"{shown(item)} ({_size(item.size)})")
        print_done(f"{done} {len(moved)} file(s), {_size(sum(i.size for i in moved))}.")
        return 0

    run_client(main)


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.argument("filenames", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Upload directories with their contents.")
@click.option(
    "--chunk-size",
    type=ByteSize(),
    default="64m",
    show_default=True,
    help="Bytes sent per request (e.g. 16m).",
)
@_transfer_options
def upload(
    name: str,
    filenames: Sequence[str],
    recursive: bool,
    chunk_size: int,
    base_dir: str | None,
    address_map: Mapping[str, str] | None,
    max_retries: int,
) -> None:
    """Upload local files into the virtual folder NAME.

    Each file keeps its path relative to the base directory; a file of the
    same path in the folder is replaced once the new one arrived whole.
    """
    if chunk_size < 1:
        raise click.BadParameter("must be at least 1 byte", param_hint="'--chunk-size'")
    _run_transfer(
        lambda api, view: _folder(api, name).upload(
            filenames,
            basedir=base_dir,
            recursive=recursive,
            chunk_size=chunk_size,
            progress=view.update,
            on_resume=view.resumed,
            address_map=address_map,
            max_retries=max_retries,
        ),
        "Uploaded",
        lambda item: item.relpath,
    )


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.argument("filenames", nargs=-1, required=True)
@click.option(
    "--archive",
    is_flag=True,
    help="Download each path (a directory, or . for the whole folder) as PATH.zip.",
)
@click.option("-f", "--overwrite", is_flag=True, help="Replace local files that exist already.")
@_transfer_options
def download(
    name: str,
    filenames: Sequence[str],
    archive: bool,
    overwrite: bool,
    base_dir: str | None,
    address_map: Mapping[str, str] | None,
    max_retries: int,
) -> None:
    """Download files of the virtual folder NAME into the base directory.

    Each file lands at its path in the folder, below the base directory, and
    appears only once complete.
    """
    _run_transfer(
        lambda api, view: _folder(api, name).download(
            filenames,
            basedir=base_dir,
            archive=archive,
            overwrite=overwrite,
            progress=view.update,
            on_resume=view.resumed,
            address_map=address_map,
            max_retries=max_retries,
        ),
        "Downloaded",
        lambda item: item.local,
    )


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.argument("path", default=".")
def ls(name: str, path: str) -> None:
    """List the files in PATH (default: the top) of the virtual folder NAME."""

    async def main(api: APIClient) -> int:
        print_wait(f'Retrieving list of files in "{path}"...')
        entries = await _folder(api, name).list_files(path)
        rows = [
            [
                entry.name + ("/" if entry.is_dir else ""),
                str(entry.size),
                _when(entry.modified),
                entry.mode or "-",
            ]
            for entry in entries
        ]
        print_table(["Name", "Size", "Modified", "Mode"], rows)
        return 0

    run_client(main)


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.argument("path")
@click.option("-p", "--parents", is_flag=True, help="Create missing parent directories too.")
@click.option("-e", "--exist-ok", is_flag=True, help="Succeed if the directory exists.")
def mkdir(name: str, path: str, parents: bool, exist_ok: bool) -> None:
    """Create the directory PATH in the virtual folder NAME."""
    _run(
        lambda api: _folder(api, name).mkdir(path, parents=parents, exist_ok=exist_ok),
        _done("Done."),
    )


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.argument("src")
@click.argument("dst")
def mv(name: str, src: str, dst: str) -> None:
    """Move SRC to DST inside the virtual folder NAME (into DST if it is a directory)."""
    _run(lambda api: _folder(api, name).move_file(src, dst), _done("Moved."))


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.argument("target_path")
@click.argument("new_name")
def rename_file(name: str, target_path: str, new_name: str) -> None:
    """Rename TARGET_PATH in the virtual folder NAME to NEW_NAME (same directory)."""
    _run(lambda api: _folder(api, name).rename_file(target_path, new_name), _done("Renamed."))


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.argument("filenames", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Delete directories with their contents.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(name: str, filenames: Sequence[str], recursive: bool, yes: bool) -> None:
    """Delete files in the virtual folder NAME. This cannot be undone."""
    if not yes:
        click.confirm(f"Delete {len(filenames)} path(s) in {name} for good?", abort=True, err=True)
    _run(
        lambda api: _folder(api, name).delete_files(filenames, recursive=recursive),
        _done("Done."),
    )


# ---------------------------------------------------------------- sharing


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.argument("emails", nargs=-1, required=True)
@_permission_option(_GIVEN_PERMISSION, "-p", "--perm", "--permission", "perm")
def invite(name: str, emails: Sequence[str], perm: str) -> None:
    """Invite users (by email) to your virtual folder NAME."""
    _run(
        lambda api: _folder(api, name).invite(perm, emails),
        _emails("invited_ids", "Invitation sent to:", "No users found. Invitation was not sent."),
    )


@vfolder.command(context_settings=_CONTEXT)
def invitations() -> None:
    """List the invitations you received (accept one with `accept-invitation`)."""
    columns = {
        "ID": ["id"],
        "Folder": ["vfolder_name"],
        "Inviter": ["inviter"],
        "Permission": ["perm", "permission"],
        "State": ["state"],
    }
    _run(lambda api: _sdk().invitations(api), _items_table("No invitations.", columns))


@vfolder.command(context_settings=_CONTEXT)
@click.argument("inv_id", metavar="INVITATION_ID")
def accept_invitation(inv_id: str) -> None:
    """Accept an invitation: its folder becomes usable (and mountable) for you."""
    _run(lambda api: _sdk().accept_invitation(api, inv_id), _done("Accepted."))


@vfolder.command(context_settings=_CONTEXT)
@click.argument("inv_id", metavar="INVITATION_ID")
def delete_invitation(inv_id: str) -> None:
    """Reject an invitation you received (or withdraw one you sent)."""
    _run(lambda api: _sdk().delete_invitation(api, inv_id), _done("Deleted."))


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.argument("emails", nargs=-1, required=True)
@_permission_option(_GIVEN_PERMISSION, "-p", "--perm", "--permission", "perm")
def share(name: str, emails: Sequence[str], perm: str) -> None:
    """Share the project folder NAME with users (by email), overriding its permission."""
    _run(
        lambda api: _folder(api, name).share(perm, emails),
        _emails(
            "shared_emails",
            f"Shared with {perm} permission to:",
            "No users found. Folder is not shared.",
        ),
    )


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.argument("emails", nargs=-1, required=True)
def unshare(name: str, emails: Sequence[str]) -> None:
    """Take back from users (by email) what `share` gave them."""
    _run(
        lambda api: _folder(api, name).unshare(emails),
        _emails("unshared_emails", "Unshared from:", "No users found. Folder is not unshared."),
    )


@vfolder.command(context_settings=_CONTEXT)
@click.argument("name")
@click.option(
    "-s",
    "--shared-user-uuid",
    metavar="USER_ID",
    default=None,
    help="The user who leaves (default: you; admins may name another).",
)
def leave(name: str, shared_user_uuid: str | None) -> None:
    """Stop using the virtual folder NAME that was shared with you."""
    _run(
        lambda api: _folder(api, name).leave(shared_user_uuid),
        _done(f'Left the shared virtual folder "{name}".'),
    )
