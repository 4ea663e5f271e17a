"""Run a real one-node OpenStack Swift, with s3api and tempauth, on loopback.

The servers come from the distribution packages (``swift-*-server`` on the
system python3) and run as plain child processes with ``workers = 0``, so each
one is a single PID that can be killed and started again. Everything (configs,
rings, the device directory, logs) lives under the directory given to
``start``; only ``/etc/swift/swift.conf`` is read from its fixed path, because
Swift always reads it from there.

Run it by hand (for example in CI or for debugging)::

    python3 tests/real/swift_server.py [DIR]

prints the endpoint and credentials and runs until interrupted.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SWIFT_CONF = Path("/etc/swift/swift.conf")
SYSTEM_PYTHON = "/usr/bin/python3"
BINARIES = (
    "memcached",
    "swift-proxy-server",
    "swift-account-server",
    "swift-container-server",
    "swift-object-server",
)
BACKENDS = ("account", "container", "object")

ACCOUNT = "test"
USER = "tester"
KEY = "testing"
REGION = "us-east-1"
START_TIMEOUT = 30.0

_RING_SCRIPT = """
import sys
from swift.common.ring import RingBuilder
swift_dir = sys.argv[1]
for kind, port in zip(("account", "container", "object"), sys.argv[2:5]):
    builder = RingBuilder(8, 1, 1)
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1",
                     "port": int(port), "device": "d1", "weight": 100})
    builder.rebalance()
    builder.save(f"{swift_dir}/{kind}.builder")
    builder.get_ring().save(f"{swift_dir}/{kind}.ring.gz")
"""

_BACKEND_CONF = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {swift_dir}
devices = {devices}
mount_check = false
fallocate_reserve = 0
log_name = {kind}-server
log_address = {swift_dir}/no-syslog

[pipeline:main]
pipeline = healthcheck {kind}-server

[app:{kind}-server]
use = egg:swift#{kind}

[filter:healthcheck]
use = egg:swift#healthcheck
"""

# Shared by both proxies: the head (port, logs) and the filters either uses.
_PROXY_HEAD = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {swift_dir}
log_name = {log_name}
log_address = {swift_dir}/no-syslog

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcached_port}
"""
_PROXY_FILTERS = "".join(
    f"\n[filter:{name}]\nuse = egg:swift#{egg}\n"
    for name, egg in (
        ("catch_errors", "catch_errors"),
        ("gatekeeper", "gatekeeper"),
        ("healthcheck", "healthcheck"),
        ("proxy-logging", "proxy_logging"),
        ("listing_formats", "listing_formats"),
        ("bulk", "bulk"),
        ("tempurl", "tempurl"),
        ("copy", "copy"),
        ("slo", "slo"),
        ("dlo", "dlo"),
        ("versioned_writes", "versioned_writes"),
        ("symlink", "symlink"),
    )
)

# NOTE(ims): s3api must sit before tempauth, and slo after s3api, or s3api
# quietly disables multipart uploads (reference/swift-s3api-notes.md).
_PROXY_CONF = (
    _PROXY_HEAD
    + """
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl \
s3api tempauth copy slo dlo versioned_writes symlink proxy-logging proxy-server

[filter:tempauth]
use = egg:swift#tempauth
user_{account}_{user_name} = {key} .admin

[filter:s3api]
use = egg:swift#s3api
location = {region}
max_upload_part_num = 10000
"""
    + _PROXY_FILTERS
)

# A second proxy on the same ring that takes Keystone tokens (authtoken +
# keystoneauth) instead of tempauth: for drivers that log in with Keystone v3.
_KEYSTONE_PROXY_CONF = (
    _PROXY_HEAD
    + """
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats \
authtoken keystoneauth copy slo dlo proxy-logging proxy-server

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
delay_auth_decision = true
www_authenticate_uri = {auth_url}
auth_url = {auth_url}
auth_type = password
username = {username}
password = {password}
project_name = {project_name}
user_domain_name = Default
project_domain_name = Default
memcached_servers = 127.0.0.1:{memcached_port}

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
"""
    + _PROXY_FILTERS
)


def missing_keystone_middleware() -> str | None:
    """Say why a Keystone proxy cannot run here, or None when it can."""
    found = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import keystonemiddleware.auth_token"],
        capture_output=True,
    )
    if found.returncode:
        return "keystonemiddleware is missing for the system python3 (python3-keystonemiddleware)"
    return None


def missing_requirements() -> str | None:
    """Say what is missing to run Swift here, or None when all is present."""
    absent = [name for name in BINARIES if shutil.which(name) is None]
    if absent:
        return "Swift is not installed (missing " + ", ".join(absent) + ")"
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} is missing"
    if not SWIFT_CONF.exists():
        return f"{SWIFT_CONF} is missing"
    return None


def free_port() -> int:
    """Return a loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SwiftServer:
    """One Swift node (memcached, account, container, object, proxy servers)."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.ports: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- what clients need -------------------------------------------------

    @property
    def proxy_port(self) -> int:
        return self.ports["proxy"]

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL (the proxy itself, no path)."""
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def auth_url(self) -> str:
        """The tempauth (v1) URL."""
        return f"{self.endpoint}/auth/v1.0"

    @property
    def storage_url(self) -> str:
        return f"{self.endpoint}/v1/AUTH_{ACCOUNT}"

    user = f"{ACCOUNT}:{USER}"
    key = KEY
    region = REGION

    def pids(self) -> list[int]:
        """The process ids of the running servers (for CPU accounting in benchmarks)."""
        return [proc.pid for proc in self._procs.values() if proc.poll() is None]

    # -- life cycle --------------------------------------------------------

    def start(self, root: str | os.PathLike[str]) -> None:
        """Lay out configs and rings under ``root`` and start every server."""
        reason = missing_requirements()
        if reason:
            raise RuntimeError(reason)
        self.root = Path(root)
        if not self.ports:
            self.ports = {name: free_port() for name in ("memcached", "proxy", *BACKENDS)}
        self._write_layout()
        try:
            self._spawn_memcached()
            for kind in BACKENDS:
                self._spawn_server(kind)
            self._spawn_server("proxy")
            for name in ("proxy", *BACKENDS):
                self._wait_healthy(name)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL after a grace period)."""
        for name in list(self._procs):
            self._terminate(name, signal.SIGTERM)

    def restart(self) -> None:
        """Stop and start again on the same ports and data."""
        assert self.root is not None
        self.stop()
        self.start(self.root)

    def stop_proxy(self) -> None:
        """Kill the proxy at once, as a crash or a network cut would."""
        self._terminate("proxy", signal.SIGKILL)

    def start_proxy(self) -> None:
        """Start the proxy again on the same port and wait until it answers."""
        self._spawn_server("proxy")
        self._wait_healthy("proxy")

    def start_keystone_proxy(self, auth_url: str, service_user: dict[str, str]) -> str:
        """Start a proxy that takes Keystone tokens; return its storage base URL.

        ``service_user`` (username, password, project_name) validates tokens.
        Accounts are ``AUTH_<project id>``, open to the project's admins and
        members.
        """
        assert self.root is not None
        self.ports.setdefault("proxy-keystone", free_port())
        conf = self.root / "etc" / "proxy-keystone.conf"
        conf.write_text(
            _KEYSTONE_PROXY_CONF.format(
                port=self.ports["proxy-keystone"],
                log_name="proxy-keystone",
                user=getpass.getuser(),
                swift_dir=self.root / "etc",
                auth_url=auth_url,
                memcached_port=self.ports["memcached"],
                **service_user,
            )
        )
        self._spawn("proxy-keystone", ["swift-proxy-server", str(conf), "-v"])
        self._wait_healthy("proxy-keystone")
        return f"http://127.0.0.1:{self.ports['proxy-keystone']}"

    def ensure_proxy(self) -> None:
        """Start the proxy if a test left it stopped."""
        proc = self._procs.get("proxy")
        if proc is None or proc.poll() is not None:
            self.start_proxy()

    # -- internals ---------------------------------------------------------

    def _write_layout(self) -> None:
        assert self.root is not None
        swift_dir = self.root / "etc"
        devices = self.root / "srv"
        (devices / "d1").mkdir(parents=True, exist_ok=True)
        swift_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "log").mkdir(exist_ok=True)
        values = {
            "user": getpass.getuser(),
            "swift_dir": swift_dir,
            "devices": devices,
            "account": ACCOUNT,
            "user_name": USER,
            "key": KEY,
            "region": REGION,
            "memcached_port": self.ports["memcached"],
        }
        for kind in BACKENDS:
            text = _BACKEND_CONF.format(kind=kind, port=self.ports[kind], **values)
            (swift_dir / f"{kind}-server.conf").write_text(text)
        text = _PROXY_CONF.format(port=self.ports["proxy"], log_name="proxy-server", **values)
        (swift_dir / "proxy-server.conf").write_text(text)
        if not (swift_dir / "object.ring.gz").exists():
            # PERF(ims): one python3 process builds all three rings in ~0.3 s;
            # nine swift-ring-builder calls take ~3 s.
            subprocess.run(
                [SYSTEM_PYTHON, "-c", _RING_SCRIPT, str(swift_dir)]
                + [str(self.ports[kind]) for kind in BACKENDS],
                check=True,
                capture_output=True,
            )

    def _log(self, name: str):  # noqa: ANN202 - a file object for Popen
        assert self.root is not None
        return open(self.root / "log" / f"{name}.log", "ab")

    def _spawn_memcached(self) -> None:
        cmd = ["memcached", "-l", "127.0.0.1", "-p", str(self.ports["memcached"]), "-U", "0"]
        if os.geteuid() == 0:
            cmd += ["-u", getpass.getuser()]
        self._spawn("memcached", cmd)

    def _spawn_server(self, kind: str) -> None:
        assert self.root is not None
        conf = self.root / "etc" / f"{kind}-server.conf"
        self._spawn(kind, [f"swift-{kind}-server", str(conf), "-v"])

    def _spawn(self, name: str, cmd: list[str]) -> None:
        with self._log(name) as log:
            # NOTE(ims): a session of its own, so a Ctrl-C in pytest or a
            # killpg in Swift never reaches the other side.
            self._procs[name] = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _terminate(self, name: str, sig: int) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def _wait_healthy(self, name: str) -> None:
        url = f"http://127.0.0.1:{self.ports[name]}/healthcheck"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            proc = self._procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} server exited with {proc.returncode}; see logs")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} server did not answer {url}")
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    """Start a server under ``argv[1]`` (or a temporary dir) until interrupted."""
    root = argv[1] if len(argv) > 1 else tempfile.mkdtemp(prefix="ims-swift-")
    server = SwiftServer()
    started = time.monotonic()
    server.start(root)
    print(f"Swift ready in {time.monotonic() - started:.1f}s under {root}")
    print(f"  S3:    endpoint {server.endpoint} key {server.user} secret {server.key}")
    print(f"  Swift: auth {server.auth_url} user {server.user} key {server.key}")
    print("Ctrl-C to stop.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
