"""Shared by the hostile-code tests: code a stranger runs in a kernel to look for a way out.

Imported by ``test_agent_sandbox``, ``test_embedded_up`` and
``test_distributed_processes`` (it holds no tests itself).  :func:`probe_code`
builds Python code that prints one JSON object of what it found;
:func:`assert_contained` asserts the kernel found nothing of the host.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

_PROBE = r"""
import json, os, socket
found = {}
def readable(path):
    try:
        with open(path, 'rb') as f:
            f.read(1)
        return True
    except OSError:
        return False
def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return exc.errno
def reach(port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(('127.0.0.1', port))
        return True
    except OSError:
        return False
    finally:
        s.close()
status = dict(line.split(':\t', 1) for line in open('/proc/self/status').read().splitlines()
              if ':\t' in line)
found['uid'] = os.getuid()
found['gid'] = os.getgid()
found['groups'] = os.getgroups()
found['caps'] = [status['CapEff'].strip(), status['CapBnd'].strip(), status['CapPrm'].strip()]
found['no_new_privs'] = status['NoNewPrivs'].strip()
found['cwd'] = os.getcwd()
found['readable'] = {p: readable(p) for p in PATHS}
found['listings'] = {p: listing(p) for p in LISTED}
found['reach'] = {str(p): reach(p) for p in PORTS}
found['interfaces'] = sorted(name for _, name in socket.if_nameindex())
found['pid1_environ'] = readable('/proc/1/environ')
found['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
found['hostname'] = socket.gethostname()
found['user'] = __import__('pwd').getpwuid(os.getuid()).pw_name
try:
    open('/usr/bai-escape', 'w')
    found['write_usr'] = 0
except OSError as exc:
    found['write_usr'] = exc.errno
print(json.dumps(found))
"""

#: Host files that hold secrets on every Debian host.
HOST_SECRETS = ("/etc/shadow", "/etc/gshadow", "/root/.bash_history", "/etc/ssl/private")
#: Services on the host's loopback: Redis and PostgreSQL.
HOST_PORTS = (6379, 5432)


def probe_code(
    paths: Sequence[str] = (), listed: Sequence[str] = (), ports: Sequence[int] = ()
) -> str:
    """Code that tries to read *paths*, list *listed* and connect to *ports* on loopback."""
    return (
        f"PATHS = {[*HOST_SECRETS, *paths]!r}\nLISTED = {list(listed)!r}\n"
        f"PORTS = {[*HOST_PORTS, *ports]!r}\n{_PROBE}"
    )


def assert_contained(found: dict[str, Any], *, readable: Sequence[str] = ()) -> None:
    """The kernel ran as nobody special, read none but *readable*, and reached no port."""
    assert found["uid"] != 0 and found["gid"] != 0, found
    assert found["caps"] == ["0000000000000000"] * 3, found
    assert found["no_new_privs"] == "1", found
    unexpected = {p for p, ok in found["readable"].items() if ok and p not in readable}
    assert not unexpected, f"the kernel read {unexpected}"
    reached = {port for port, ok in found["reach"].items() if ok}
    assert not reached, f"the kernel reached host ports {reached}"
    assert found["interfaces"] == ["lo"], found
    assert found["pid1_environ"] is False
    assert found["write_usr"] in (13, 30), found  # EACCES or EROFS


def parse(output: str) -> dict[str, Any]:
    """The probe's JSON line."""
    found: dict[str, Any] = json.loads(output)
    return found
