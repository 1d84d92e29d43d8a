"""The local backend's sandbox command line, built from an allow-list (no bwrap needed)."""

from __future__ import annotations

from pathlib import Path

from bai.agent.backends import sandbox


def _spec(**changes: object) -> sandbox.Sandbox:
    base: dict[str, object] = {
        "bwrap": "/usr/bin/bwrap",
        "etc_base": Path("/tmp/ipc/etc/_common"),
        "etc_dir": Path("/tmp/ipc/etc/k1"),
        "scratch_dir": Path("/srv/scratch/k1"),
        "sock_dir": Path("/tmp/ipc/k1"),
        "runtime_paths": [Path("/root/.pyenv/versions/3.11.7"), Path("/srv/app/.venv")],
        "hostname": "main1",
        "system_links": {"/bin": "usr/bin", "/lib": "usr/lib"},
    }
    base.update(changes)
    return sandbox.Sandbox(**base)  # type: ignore[arg-type]


def _binds(argv: list[str]) -> list[tuple[str, str, str]]:
    options = {"--ro-bind", "--ro-bind-try", "--bind", "--dev-bind-try", "--symlink"}
    return [(a, argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a in options]


def test_the_root_holds_only_what_the_allow_list_names() -> None:
    argv = sandbox.command(_spec(), ["python", "-m", "bai.kernel"])
    binds = _binds(argv)
    sources = {source for _, source, _ in binds}
    # Never the host's root, its home folders or the agent's folders as a whole.
    assert "/" not in sources and "/root" not in sources and "/tmp" not in sources
    assert ("--symlink", "usr/bin", "/bin") in binds
    assert ("--ro-bind-try", "/usr", "/usr") in binds
    assert ("--ro-bind", "/root/.pyenv/versions/3.11.7", "/root/.pyenv/versions/3.11.7") in binds
    assert ("--bind", "/srv/scratch/k1", "/home/work") in binds
    assert ("--bind", "/tmp/ipc/k1", "/tmp/ipc/k1") in binds
    assert ("--ro-bind", "/tmp/ipc/etc/_common", "/etc") in binds
    assert ("--ro-bind", "/tmp/ipc/etc/k1/hosts", "/etc/hosts") in binds
    assert not any(dest in ("/etc/shadow", "/etc/ssl/private") for _, _, dest in binds)
    # Read-write only the scratch and socket folders.
    assert {dest for kind, _, dest in binds if kind == "--bind"} == {"/home/work", "/tmp/ipc/k1"}
    assert argv[-3:] == ["python", "-m", "bai.kernel"]


def test_parents_of_mount_points_are_made_traversable_first() -> None:
    argv = sandbox.command(_spec(), ["true"])
    made = [argv[i + 3] for i, a in enumerate(argv) if a == "--perms" and argv[i + 1] == "0755"]
    assert "/root" in made and "/root/.pyenv/versions" in made and "/home" in made
    assert len(made) == len(set(made))
    # Each parent is made before the first mount below it.
    first_root_bind = argv.index("/root/.pyenv/versions/3.11.7")
    assert argv.index("/root") < first_root_bind
    # /tmp is a fresh tmpfs, mounted before the socket folder below it.
    assert argv.index("/tmp") < argv.index("/tmp/ipc/k1")


def test_the_kernel_user_is_switched_to_inside_with_no_capabilities() -> None:
    argv = sandbox.command(_spec(switch_user=("/usr/bin/setpriv", 999, 995)), ["runner"])
    tail = argv[argv.index("--chdir") :]
    assert tail[:4] == ["--chdir", "/home/work", "--", "/usr/bin/setpriv"]
    assert "--reuid=999" in tail and "--regid=995" in tail and "--clear-groups" in tail
    assert "--bounding-set=-all" in tail and "--no-new-privs" in tail
    added = [argv[i + 1] for i, a in enumerate(argv) if a == "--cap-add"]
    assert sorted(added) == ["CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID"]
    plain = sandbox.command(_spec(), ["runner"])
    assert "--cap-add" not in plain and "--cap-drop" in plain


def test_the_kernel_joins_its_sessions_network_namespace() -> None:
    argv = sandbox.command(_spec(netns=("/usr/bin/nsenter", Path("/n/s1"))), ["runner"])
    assert argv[:4] == ["/usr/bin/nsenter", "--net=/n/s1", "--", "/usr/bin/bwrap"]
    assert "--unshare-pid" in argv and "--unshare-net" not in argv


def test_runtime_paths_keep_prefixes_outside_system_folders_once() -> None:
    paths = sandbox.runtime_paths(
        ["/usr/bin/python3", "/opt/conda/bin/python", "/opt/conda/envs/x/bin/python"],
        [Path("/opt/conda/lib/python3.11/site-packages/bai"), Path("/srv/defs")],
    )
    assert paths == [Path("/opt/conda"), Path("/srv/defs")]


def test_generated_accounts_and_hosts() -> None:
    accounts = sandbox.account_files(999, 995)
    assert "work:x:999:995:work:/home/work:/bin/sh" in accounts["passwd"]
    assert "work:x:995:" in accounts["group"]
    assert "resolv.conf" not in accounts
    assert "work:" not in sandbox.account_files(0, 0)["passwd"]
    assert sandbox.account_files(999, 995, "10.0.2.3")["resolv.conf"] == "nameserver 10.0.2.3\n"
    bash = sandbox.account_files(999, 995, shell="/bin/bash")["passwd"]
    assert "work:x:999:995:work:/home/work:/bin/bash" in bash
    files = sandbox.host_files("main1", ["main1", "sub1"])
    assert "127.0.1.1\tmain1 sub1\n" in files["hosts"]
    assert files["hostname"] == "main1\n"
    assert "127.0.1.1" not in sandbox.host_files("", [])["hosts"]
