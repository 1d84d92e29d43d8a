"""A kernel's SSH files (bai.agent.sshkeys): written 0600 for the kernel's user, never through
a link or special file the kernel planted, never into a folder mounted over them."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from bai.agent.sshkeys import SSHKeysRefused, install_ssh_keys
from bai.common.agent_api import CreateKernels, InvalidRequest, SSHKeypair, parse

PUBLIC = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAT3s0kR0P/ClHBpZ1rPAVLMCZq+/J8yXdkeVckgoFv4 work@bai\n"
)
PRIVATE = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
PAIR = SSHKeypair(public_key=PUBLIC, private_key=PRIVATE)
#: Root hands the files to another user (as the agent does to the kernel's); others keep them.
OWNER = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    folder = tmp_path / "scratch"
    folder.mkdir()
    return folder


def tree(folder: Path) -> dict[str, str]:
    """Every entry below *folder* (links not followed): relative path -> file type letter."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            found[str(path.relative_to(folder))] = stat.filemode(path.lstat().st_mode)[0]
    return found


def owned_with_mode(path: Path, mode: int) -> bool:
    st = path.lstat()
    return (st.st_uid, st.st_gid) == OWNER and stat.S_IMODE(st.st_mode) == mode


def test_a_fresh_scratch_gets_both_files(scratch: Path) -> None:
    install_ssh_keys(scratch, PAIR, OWNER)
    assert (scratch / "id_container").read_text() == PRIVATE
    assert (scratch / ".ssh" / "authorized_keys").read_text() == PUBLIC
    assert owned_with_mode(scratch / "id_container", 0o600)
    assert owned_with_mode(scratch / ".ssh", 0o700)
    assert owned_with_mode(scratch / ".ssh" / "authorized_keys", 0o600)
    assert tree(scratch) == {"id_container": "-", ".ssh": "d", ".ssh/authorized_keys": "-"}


def test_keys_without_a_final_newline_are_written_with_one(scratch: Path) -> None:
    pair = SSHKeypair(public_key=PUBLIC.rstrip(), private_key=PRIVATE.rstrip())
    install_ssh_keys(scratch, pair, OWNER)
    assert (scratch / "id_container").read_text() == PRIVATE
    assert (scratch / ".ssh" / "authorized_keys").read_text() == PUBLIC


def test_writing_again_adds_nothing(scratch: Path) -> None:
    install_ssh_keys(scratch, PAIR, OWNER)
    install_ssh_keys(scratch, PAIR, OWNER)
    assert (scratch / ".ssh" / "authorized_keys").read_text() == PUBLIC


def test_existing_keys_are_kept_and_permissions_repaired(scratch: Path) -> None:
    ssh = scratch / ".ssh"
    ssh.mkdir(mode=0o755)
    other = "ssh-rsa AAAAB3NzaC1yc2E= someone@else"  # no final newline
    (ssh / "authorized_keys").write_text(other)
    (ssh / "authorized_keys").chmod(0o644)
    (scratch / "id_container").write_text("an old key\n")
    install_ssh_keys(scratch, PAIR, OWNER)
    assert (ssh / "authorized_keys").read_text() == f"{other}\n{PUBLIC}"
    assert (scratch / "id_container").read_text() == PRIVATE
    assert owned_with_mode(ssh, 0o700)
    assert owned_with_mode(ssh / "authorized_keys", 0o600)
    assert owned_with_mode(scratch / "id_container", 0o600)


def test_a_key_already_authorized_with_options_or_another_comment_is_not_added(
    scratch: Path,
) -> None:
    ssh = scratch / ".ssh"
    ssh.mkdir()
    _, data, _ = PUBLIC.split()
    existing = f'no-pty,command="true" ssh-ed25519 {data} renamed\n'
    (ssh / "authorized_keys").write_text(existing)
    install_ssh_keys(scratch, PAIR, OWNER)
    assert (ssh / "authorized_keys").read_text() == existing


def _outside_dir(scratch: Path, name: str) -> None:
    (scratch / name).symlink_to(scratch.parent / "outside")


def _outside_file(scratch: Path, name: str) -> None:
    (scratch / name).symlink_to(scratch.parent / "outside" / "file")


def _plain_file(scratch: Path, name: str) -> None:
    (scratch / name).write_text("planted")


def _folder(scratch: Path, name: str) -> None:
    (scratch / name).mkdir()


def _fifo(scratch: Path, name: str) -> None:
    os.mkfifo(scratch / name)


def _socket(scratch: Path, name: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(scratch / name))


@pytest.mark.parametrize(
    ("name", "plant", "kind"),
    [
        (".ssh", _outside_dir, "a symbolic link"),
        (".ssh", _plain_file, "a regular file"),
        (".ssh", _fifo, "a FIFO (named pipe)"),
        ("id_container", _outside_file, "a symbolic link"),
        ("id_container", _folder, "a folder"),
        ("id_container", _socket, "a socket"),
        (".ssh/authorized_keys", _outside_file, "a symbolic link"),
        (".ssh/authorized_keys", _folder, "a folder"),
        (".ssh/authorized_keys", _fifo, "a FIFO (named pipe)"),
    ],
)
def test_what_the_kernel_planted_is_refused_and_nothing_written(
    scratch: Path, name: str, plant: Callable[[Path, str], None], kind: str
) -> None:
    outside = scratch.parent / "outside"
    outside.mkdir()
    (outside / "file").write_text("not the kernel's")
    if name.startswith(".ssh/"):
        (scratch / ".ssh").mkdir()
    plant(scratch, name)
    before = tree(scratch)
    with pytest.raises(SSHKeysRefused) as refused:
        install_ssh_keys(scratch, PAIR, OWNER)
    assert str(refused.value).startswith(f"/home/work/{name} is {kind} ")
    assert tree(scratch) == before
    assert sorted(p.name for p in outside.iterdir()) == ["file"]
    assert (outside / "file").read_text() == "not the kernel's"


def test_a_folder_mounted_at_ssh_is_not_written(scratch: Path) -> None:
    install_ssh_keys(scratch, PAIR, OWNER, ["/home/work/.ssh", "/home/work/data"])
    assert tree(scratch) == {"id_container": "-"}


def test_a_folder_mounted_at_id_container_is_left_to_the_folder(scratch: Path) -> None:
    install_ssh_keys(scratch, PAIR, OWNER, ["/home/work/id_container"])
    assert tree(scratch) == {".ssh": "d", ".ssh/authorized_keys": "-"}


def test_a_folder_mounted_inside_ssh_leaves_authorized_keys_to_write(scratch: Path) -> None:
    install_ssh_keys(scratch, PAIR, OWNER, ["/home/work/.ssh/keys"])
    assert (scratch / ".ssh" / "authorized_keys").read_text() == PUBLIC
    install_ssh_keys(scratch, PAIR, OWNER, ["/home/work/.ssh/authorized_keys"])
    assert (scratch / ".ssh" / "authorized_keys").read_text() == PUBLIC


@pytest.mark.parametrize(
    ("public_key", "private_key", "problem"),
    [
        (PUBLIC + PUBLIC, PRIVATE, "public_key: must be one line"),
        ("ssh-ed25519\n", PRIVATE, "public_key: must be one line"),
        ("ssh-ed25519 AAAA\rx", PRIVATE, "public_key: must be one line"),
        (PUBLIC, "not armoured", "private_key: must be a PEM-armoured private key"),
        (PUBLIC, PRIVATE + "\x00", "private_key: must be a PEM-armoured private key"),
    ],
)
def test_the_rpc_refuses_keys_that_could_break_the_files(
    public_key: str, private_key: str, problem: str
) -> None:
    config = {
        "kernel_id": "6f1c3a6e-3f1d-4e55-9a7e-0c5e8e1d2a10",
        "image": "python",
        "ssh_keypair": {"public_key": public_key, "private_key": private_key},
    }
    args = {"session_id": "0d7c5b8e-51c4-4f0e-8f43-0a7f1ac3c3b1", "kernels": [config]}
    with pytest.raises(InvalidRequest) as refused:
        parse(args, CreateKernels)
    assert problem in str(refused.value)
    # A secret never appears in the message.
    assert "b3BlbnNzaC1rZXkt" not in str(refused.value)


def test_the_rpc_bounds_the_keys() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"public_key": PUBLIC, "private_key": "x" * 20_000}, SSHKeypair)
