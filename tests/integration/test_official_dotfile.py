"""The official client's ``dotfile create/list/get/update/delete`` against ``bai up``, unchanged,
for user, project and domain dotfiles, and the dotfiles in a session it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bai.embedded import EmbeddedHandle, Keypair

from support.official import embedded_cluster, official, official_cli_path

SHOW = "print(''.join(open(name).read() for name in ('.bairc', 'from-project', 'from-domain')))"


@pytest.fixture
def official_cli() -> Path:
    return official_cli_path()


def keypair_of(handle: EmbeddedHandle, email: str) -> Keypair:
    return next(k for k in handle.keypairs if k.email == email)


async def ok(cli: Path, handle: EmbeddedHandle, cwd: Path, *args: str, **kw: object) -> str:
    """Run a command that must succeed; its stdout and stderr together."""
    code, out, err = await official(cli, handle, cwd, *args, **kw)  # type: ignore[arg-type]
    assert code == 0, (args, out, err)
    assert "Traceback" not in err, (args, err)
    return out + err


async def test_dotfile_commands(official_cli: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "rc").write_text("export FROM_USER=1\n")
    (work / "rc2").write_text("export FROM_USER=2\n")
    (work / "project").write_text("project\n")
    (work / "domain").write_text("domain\n")
    async with embedded_cluster(tmp_path / "data") as up:
        user = keypair_of(up, "user@lablup.com")
        as_user = {"keypair": user}
        listed = await ok(official_cli, up, work, "dotfile", "list", **as_user)
        assert "There is no dotfiles created yet." in listed
        created = await ok(
            official_cli, up, work, "dotfile", "create", ".bairc", "-f", "rc", "--perm", "644",
            **as_user,
        )  # fmt: skip
        assert "Dotfile .bairc created and ready" in created
        listed = await ok(official_cli, up, work, "dotfile", "list", **as_user)
        assert ".bairc" in listed and "export FROM_USER=1" in listed and "644" in listed
        shown = await ok(official_cli, up, work, "dotfile", "get", ".bairc", **as_user)
        assert shown.startswith("export FROM_USER=1\n")
        updated = await ok(
            official_cli, up, work, "dotfile", "update", ".bairc", "-f", "rc2", "--perm", "600",
            **as_user,
        )  # fmt: skip
        assert "Dotfile .bairc updated" in updated
        shown = await ok(official_cli, up, work, "dotfile", "get", ".bairc", **as_user)
        assert shown.startswith("export FROM_USER=2\n")
        # An admin acts for the user with -o.
        admin_view = await ok(
            official_cli, up, work, "dotfile", "get", ".bairc", "-o", user.access_key
        )
        assert admin_view.startswith("export FROM_USER=2\n")
        # Project (by name with its domain) and domain dotfiles, as the superadmin.
        await ok(
            official_cli, up, work, "dotfile", "create", "from-project", "-f", "project",
            "-g", "default", "-d", "default",
        )  # fmt: skip
        await ok(
            official_cli,
            up,
            work,
            "dotfile",
            "create",
            "from-domain",
            "-f",
            "domain",
            "-d",
            "default",
        )
        # The user reads both (a member of the project, a user of the domain).
        in_project = await ok(
            official_cli, up, work, "dotfile", "list", "-g", "default", "-d", "default", **as_user
        )
        assert "from-project" in in_project
        in_domain = await ok(official_cli, up, work, "dotfile", "list", "-d", "default", **as_user)
        assert "from-domain" in in_domain
        # ...but may not change the domain's.
        code, out, err = await official(
            official_cli, up, work, "dotfile", "create", "x", "-f", "domain", "-d", "default",
            keypair=user,
        )  # fmt: skip
        assert code != 0 and "403" in out + err, (out, err)
        # A path leaving /home/work is refused with the field named.
        code, out, err = await official(
            official_cli, up, work, "dotfile", "create", "../escape", "-f", "rc", keypair=user
        )
        assert code != 0 and "path" in out + err and "'..'" in out + err, (out, err)
        # A new session of the user has all three in /home/work.
        ran = await ok(
            official_cli, up, work, "run", "--rm", "-c",
            SHOW,
            "python",
            **as_user,
        )  # fmt: skip
        assert "export FROM_USER=2\nproject\ndomain\n" in ran
        deleted = await ok(official_cli, up, work, "dotfile", "delete", ".bairc", "-f", **as_user)
        assert "Dotfile .bairc deleted" in deleted
        listed = await ok(official_cli, up, work, "dotfile", "list", **as_user)
        assert "There is no dotfiles created yet." in listed
        await ok(official_cli, up, work, "dotfile", "delete", "from-domain", "-f", "-d", "default")
        await ok(
            official_cli, up, work, "dotfile", "delete", "from-project", "-f",
            "-g", "default", "-d", "default",
        )  # fmt: skip
