"""The runner's NNG sockets (straight on pynng's binding) against pynng peers that dial them."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pynng
import pytest

from bai.kernel import sockets


@pytest.fixture
def folder() -> Iterator[Path]:
    # Under /tmp, not pytest's tmp_path: a UNIX socket path must fit in 107 bytes.
    path = tempfile.mkdtemp(prefix="bks-", dir="/tmp")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_messages_pass_both_ways_over_ipc(folder: Path) -> None:
    pull = sockets.pull(f"ipc://{folder}/in", recv_max_size=1024)
    push = sockets.push(f"ipc://{folder}/out", send_timeout_ms=2000)
    try:
        with (
            pynng.Push0(dial=f"ipc://{folder}/in", send_timeout=2000) as agent_out,
            pynng.Pull0(dial=f"ipc://{folder}/out", recv_timeout=2000) as agent_in,
        ):
            agent_out.send(b"to the runner")
            assert pull.recv() == b"to the runner"
            push.send(b"\x00binary\xff" * 100)
            assert agent_in.recv() == b"\x00binary\xff" * 100
    finally:
        pull.close()
        push.close()


def test_tcp_addresses_work_too() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pull = sockets.pull(f"tcp://127.0.0.1:{port}", recv_max_size=0)
    try:
        with pynng.Push0(dial=f"tcp://127.0.0.1:{port}", send_timeout=2000) as agent_out:
            agent_out.send(b"over tcp")
            assert pull.recv() == b"over tcp"
    finally:
        pull.close()


def test_messages_over_the_limit_are_dropped(folder: Path) -> None:
    pull = sockets.pull(f"ipc://{folder}/in", recv_max_size=100)
    try:
        with pynng.Push0(dial=f"ipc://{folder}/in", send_timeout=2000) as agent_out:
            agent_out.send(b"x" * 101)
            # NNG drops the connection of a peer that sends too much; it redials.
            deadline = time.monotonic() + 5
            received: list[bytes] = []
            receiver = threading.Thread(target=lambda: received.append(pull.recv()))
            receiver.start()
            while not received and time.monotonic() < deadline:
                agent_out.send(b"small")
                time.sleep(0.05)
            pull.close()
            receiver.join(5)
            assert received == [b"small"]
    finally:
        pull.close()


def test_a_send_without_a_peer_times_out(folder: Path) -> None:
    push = sockets.push(f"ipc://{folder}/out", send_timeout_ms=50)
    try:
        started = time.monotonic()
        with pytest.raises(sockets.Timeout):
            push.send(b"nobody listens")
        assert time.monotonic() - started >= 0.04
    finally:
        push.close()


def test_closing_wakes_a_blocked_receive(folder: Path) -> None:
    pull = sockets.pull(f"ipc://{folder}/in", recv_max_size=0)
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            pull.recv()
        except sockets.NNGError as exc:
            errors.append(exc)

    receiver = threading.Thread(target=receive)
    receiver.start()
    time.sleep(0.05)
    pull.close()
    receiver.join(5)
    assert not receiver.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], sockets.Closed)


def test_an_address_that_cannot_be_listened_on_is_an_error(folder: Path) -> None:
    with pytest.raises(sockets.NNGError) as error:
        sockets.pull(f"ipc://{folder}/missing/dir/in", recv_max_size=0)
    assert error.value.errno != 0 and str(error.value)
    first = sockets.push(f"ipc://{folder}/taken", send_timeout_ms=10)
    try:
        with pytest.raises(sockets.NNGError, match="in use"):
            sockets.push(f"ipc://{folder}/taken", send_timeout_ms=10)
    finally:
        first.close()
