"""The ``sshd`` intrinsic service: OpenSSH's sshd run by the runner, as the kernel user.

:func:`prepare` writes a host key and a configuration into a directory of
the runner's own and returns the command that runs sshd in the foreground
(``-D -e``: logs on stderr), listening on 127.0.0.1 at the service's ports.

Guarantees of the configuration:

* public-key logins only (no passwords, no keyboard-interactive, no PAM),
  for the user the runner runs as and nobody else (an unprivileged sshd can
  log in no one else anyway), with keys from ``.ssh/authorized_keys`` in the
  kernel's working directory (its ``/home/work``, where the agent writes the
  session owner's key) and in the user's home (the same file in a kernel);
  ``StrictModes no``, because the agent, not the user, owns those files' modes;
* ``sftp`` is ``internal-sftp``, so ``scp`` and ``sftp`` work without an
  sftp-server binary;
* a session gets the kernel's environment (``SetEnv``), not only sshd's
  minimal one, so ``ssh`` runs commands with the same ``PATH``, runtime and
  ``BACKENDAI_*`` variables as the kernel's code;
* each source address may fail to log in any number of times (OpenSSH 9.8's
  per-source penalties are off): every connection of the app proxy comes
  from the same address, and one user's mistakes must not lock out the others.

:class:`SshdError` names what is missing: the sshd or ssh-keygen binary, a
passwd entry for the kernel user (sshd looks the user up by uid), a usable
login shell.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Final

#: Where sshd lives when it is not on PATH (ordinary users' PATH often lacks sbin).
SBIN_DIRS: Final = ("/usr/sbin", "/usr/local/sbin", "/sbin")
#: sshd's privilege separation directory when it runs as root (Debian's and Ubuntu's).
PRIVSEP_DIR: Final = "/run/sshd"
HOST_KEY: Final = "ssh_host_ed25519_key"
CONFIG: Final = "sshd_config"
#: Variables a login sets for itself: the kernel's values would be wrong there.
_LOGIN_VARIABLES: Final = frozenset(
    {"HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "MAIL", "SHLVL", "_", "TERM", "DISPLAY"}
)
_VERSION: Final = re.compile(r"OpenSSH_(\d+)\.(\d+)")
_UNQUOTABLE: Final = re.compile(r'["\\\x00-\x1f\x7f]')


class SshdError(Exception):
    """sshd cannot run in this kernel; the text says what is missing."""


def find_program(name: str) -> str | None:
    """The absolute path of *name* on PATH or in :data:`SBIN_DIRS`, or None."""
    found = shutil.which(name)
    if found is None:
        found = shutil.which(name, path=os.pathsep.join(SBIN_DIRS))
    return os.path.abspath(found) if found else None


def openssh_version(sshd: str, timeout: float) -> tuple[int, int] | None:
    """``(major, minor)`` of the OpenSSH *sshd* is part of, None when it does not say."""
    try:
        # -V prints the version; an sshd older than the option prints it in its usage.
        done = subprocess.run(
            [sshd, "-V"], capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search((done.stderr + done.stdout).decode("utf-8", "replace"))
    return (int(match.group(1)), int(match.group(2))) if match else None


def login_user() -> pwd.struct_passwd:
    """The passwd entry of the user the runner runs as; :class:`SshdError` if it cannot log in."""
    uid = os.getuid()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise SshdError(
            f"the kernel user (uid {uid}) has no entry in /etc/passwd, and sshd "
            "logs in only users it can look up"
        ) from None
    shell = entry.pw_shell or "/bin/sh"
    if os.path.basename(shell) in ("nologin", "false") or not os.access(shell, os.X_OK):
        raise SshdError(
            f"the kernel user {entry.pw_name!r} has the login shell {shell!r}, "
            "which cannot run an ssh session"
        )
    return entry


def _quote(value: str) -> str | None:
    """*value* as one double-quoted sshd_config argument, None if it cannot be written so."""
    if _UNQUOTABLE.search(value):
        return None
    return f'"{value}"'


def config_text(
    *,
    ports: Sequence[int],
    host_key: str,
    user: str,
    authorized_keys: Sequence[str],
    environ: Mapping[str, str],
    version: tuple[int, int] | None,
) -> str:
    """The sshd_config (see the module docstring); paths must be quotable."""
    keys = []
    for path in authorized_keys:
        quoted = _quote(path.replace("%", "%%"))  # % starts a token in AuthorizedKeysFile
        if quoted is not None:
            keys.append(quoted)
    lines = [
        "# Written by the bai kernel runner for the sshd intrinsic service.",
        *(f"ListenAddress 127.0.0.1:{port}" for port in ports),
        f"HostKey {_quote(host_key)}",
        "PidFile none",
        f"AllowUsers {user}",
        f"AuthorizedKeysFile {' '.join(keys) or 'none'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        # ChallengeResponseAuthentication: the name that OpenSSH before 8.7 knows too.
        "ChallengeResponseAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "Subsystem sftp internal-sftp",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        "X11Forwarding no",
        "AllowTcpForwarding yes",
        "ClientAliveInterval 30",
    ]
    if version is not None and version >= (9, 8):
        lines.append("PerSourcePenalties no")
    variables = []
    for name, value in sorted(environ.items()):
        if name in _LOGIN_VARIABLES or name.startswith(("SSH_", "BAI_KERNEL_")):
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            continue
        quoted = _quote(f"{name}={value}")
        if quoted is not None:  # a value with quotes or control characters stays out
            variables.append(quoted)
    if variables:
        lines.append(f"SetEnv {' '.join(variables)}")
    return "\n".join(lines) + "\n"


def prepare(
    directory: str,
    ports: Sequence[int],
    *,
    workdir: str,
    environ: Mapping[str, str],
    timeout: float,
) -> list[str]:
    """Write a host key and the config into *directory*; the command that runs sshd.

    *directory* must be the runner's own (mode 0700) and quotable in the
    config.  Raises :class:`SshdError` for what this kernel lacks.
    """
    sshd = find_program("sshd")
    if sshd is None:
        raise SshdError(
            "no sshd binary in this kernel (looked on PATH and in "
            f"{', '.join(SBIN_DIRS)}): its image needs OpenSSH's server (openssh-server)"
        )
    keygen = find_program("ssh-keygen")
    if keygen is None:
        raise SshdError("no ssh-keygen binary in this kernel to make sshd's host key")
    user = login_user()
    if _quote(directory) is None:
        raise SshdError(f"the directory {directory!r} cannot be written in sshd_config")
    host_key = os.path.join(directory, HOST_KEY)
    try:
        done = subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", host_key],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise SshdError("ssh-keygen did not make the host key in time") from None
    except OSError as exc:
        raise SshdError(f"cannot run ssh-keygen ({exc})") from None
    if done.returncode != 0:
        output = (done.stderr + done.stdout).decode("utf-8", "replace").strip()
        raise SshdError(f"ssh-keygen failed with code {done.returncode}: {output}")
    if os.geteuid() == 0:
        # Only root's sshd chroots its pre-auth child; the directory must exist then.
        os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
    authorized = [os.path.join(workdir, ".ssh", "authorized_keys")]
    if os.path.join(user.pw_dir, ".ssh", "authorized_keys") != authorized[0]:
        authorized.append(".ssh/authorized_keys")  # relative: the user's home
    config = os.path.join(directory, CONFIG)
    text = config_text(
        ports=ports,
        host_key=host_key,
        user=user.pw_name,
        authorized_keys=authorized,
        environ=environ,
        version=openssh_version(sshd, timeout),
    )
    with open(config, "w", encoding="utf-8") as f:
        f.write(text)
    return [sshd, "-D", "-e", "-f", config]
