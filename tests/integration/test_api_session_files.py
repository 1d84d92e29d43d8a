"""A session whose code turns its files against the agent: FIFOs, sockets and links where
files are expected.  Every file route answers an RFC 7807 4xx at once naming the field and
the value, and a refused upload writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio

from bai.common.errors import describe_value
from bai.manager.sessions.relay import MAX_UPLOAD_FILE_SIZE, MAX_UPLOAD_FILES

from support.agent import HOSTILE_FILES, HOSTILE_KINDS
from support.api_session import Deployment, problem, unique_name


async def file_route(deployment: Deployment, name: str, field: str, path: str) -> httpx.Response:
    """Use *path* as the file route whose parameter is *field* (``files`` of an upload is
    ``upload``) does, answering within a few seconds."""
    user = deployment.api.user
    with trio.fail_after(5):
        if field == "upload":
            return await deployment.upload(name, [(path, b"x")])
        route = {"files": "download", "file": "download_single", "path": "files"}[field]
        return await deployment.api.call(
            "GET", f"/session/{name}/{route}", key=user, params={field: path}
        )


def refusal(response: httpx.Response, field: str, path: str) -> str:
    """The problem of a refused *path*: 400 naming *field* once, and the value."""
    detail = problem(response, 400, "invalid-api-params", field)
    assert detail.startswith(f"{field}: ") and detail.count(f"{field}:") == 1, detail
    assert detail.endswith(f"(got {describe_value(path)})"), detail
    return detail


#: What every session's /home/work holds from the start: the owner's SSH keys.
SSH_FILES = {"id_container": "-", ".ssh": "d"}


async def listing(deployment: Deployment, name: str) -> dict[str, str]:
    """The session's /home/work: file name -> file type letter."""
    response = await deployment.api.call(
        "GET", f"/session/{name}/files", key=deployment.api.user, params={"path": "."}
    )
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = json.loads(response.json()["files"])
    return {e["filename"]: e["mode"][0] for e in entries}


async def test_special_files_are_refused_by_every_file_route(
    deployment: Deployment, tmp_path: Path
) -> None:
    name = unique_name()
    await deployment.create(name=name)
    outside = tmp_path / "outside"
    outside.mkdir()
    await deployment.run(name, HOSTILE_FILES.format(outside=str(outside)))
    for target, kind in HOSTILE_KINDS.items():
        for field, path in (
            ("upload", target),
            ("upload", f"{target}/new"),
            ("files", target),
            ("files", f"{target}/passwd"),
            ("file", target),
            ("path", target),
        ):
            response = await file_route(deployment, name, field, path)
            detail = refusal(response, "files" if field == "upload" else field, path)
            assert f"'{target}' is {kind}; only regular files and folders" in detail
    assert list(outside.iterdir()) == []
    assert await listing(deployment, name) == {
        **SSH_FILES,
        "fifo": "p",
        "sock": "s",
        "shadow": "l",
        "outside": "l",
    }
    # The session answers as before.
    assert await deployment.run(name, "print(len(os.listdir()))") == ("6\n", "")


async def test_a_refused_upload_of_several_files_writes_nothing(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    await deployment.run(name, "import os; os.mkfifo('fifo')")
    for bad, refused, problem_text in (
        ("../bad", "../bad", "'..' is not allowed in a path"),
        ("fifo", "fifo", "'fifo' is a FIFO (named pipe)"),
        ("good.txt/inner", "good.txt", "is a folder of another file of the same upload"),
    ):
        response = await deployment.upload(name, [("good.txt", b"good"), (bad, b"bad")])
        assert problem_text in refusal(response, "files", refused)
        assert await listing(deployment, name) == {**SSH_FILES, "fifo": "p"}
    response = await deployment.upload(name, [("good.txt", b"good"), ("sub/ok.txt", b"ok")])
    assert response.status_code == 204, response.text
    assert await listing(deployment, name) == {
        **SSH_FILES,
        "fifo": "p",
        "good.txt": "-",
        "sub": "d",
    }


async def test_malformed_file_requests_answer_problems(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    # An empty session name is an unknown route, not a redirect.
    empty = await deployment.api.call("GET", "/session//files", key=deployment.api.user)
    problem(empty, 404, "generic-not-found")
    # A name longer than the file system allows is bad input on every route, not a 404.
    long_name = "d/" + "x" * 256
    for field in ("upload", "files", "file", "path"):
        response = await file_route(deployment, name, field, long_name)
        detail = refusal(response, "files" if field == "upload" else field, long_name)
        assert "a file or folder name is at most 255 bytes" in detail
    # A folder downloaded as a single file says so.
    await deployment.run(name, "import os; os.mkdir('folder')")
    response = await file_route(deployment, name, "file", "folder")
    assert "names a folder, not a single file" in refusal(response, "file", "folder")
    # So does a file over the agent's download limit.
    await deployment.run(name, "open('huge', 'wb').truncate(13 * 1024 * 1024)")
    response = await file_route(deployment, name, "file", "huge")
    detail = problem(response, 413, "file-too-large", "file")
    assert detail == "file: larger than the download limit of 12582912 bytes (got 'huge')"


async def test_the_largest_upload_allowed_is_written_in_one_piece(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    files = [(f"big/{i}.bin", bytes([i]) * MAX_UPLOAD_FILE_SIZE) for i in range(MAX_UPLOAD_FILES)]
    response = await deployment.upload(name, files)
    assert response.status_code == 204, response.text
    out, _ = await deployment.run(
        name, "import os; print(sum(os.path.getsize(f'big/{n}') for n in os.listdir('big')))"
    )
    assert out == f"{MAX_UPLOAD_FILES * MAX_UPLOAD_FILE_SIZE}\n"
