"""Run the real ims-api and a real Keystone as child processes on loopback.

Both servers run under gunicorn, are reached over real sockets and keep
their output in a log file under the test's directory, so a failing test
can show what the server said (see ``LIVE_SERVERS`` and the report hook in
conftest.py).

Keystone needs PostgreSQL: each KeystoneServer creates a uniquely named
database (``IMS_TEST_PG_URL`` names the server, default
``postgresql://postgres@127.0.0.1:5432/test``) and drops it when it stops.
SQLite is not offered for Keystone: its concurrent token writes deadlock
without BEGIN IMMEDIATE, which Keystone's engine does not use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

START_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0
PG_URL = os.environ.get("IMS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REGION = "RegionOne"
ADMIN_PASSWORD = "password"

#: Servers currently running, for the failure report hook in conftest.py.
LIVE_SERVERS: list[ServerProcess] = []


def free_port() -> int:
    """Return a loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes, without any OS_* variable.

    A developer's sourced openrc must never leak into a test's client or
    server: the tests say exactly what they use.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


class ServerError(RuntimeError):
    """A server did not start, or died; the message carries its log's tail."""


class ServerProcess:
    """One child process in its own process group, logging to a file."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, cmd: list[str], env: dict[str, str]) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        finally:
            log.close()
        LIVE_SERVERS.append(self)

    def log_text(self, tail: int = 20000) -> str:
        """Return the end of the server's log (all of it up to ``tail`` chars)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-tail:]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise ServerError (with the log) when the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerError(
                f"{self.name} exited with {self.proc.returncode}; log:\n{self.log_text()}"
            )

    def wait_for_http(self, url: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``url`` answers with any HTTP status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise ServerError(
            f"{self.name} did not answer {url} in {timeout}s; log:\n{self.log_text()}"
        )

    def stop(self) -> None:
        """Terminate the process group, then kill it if it lingers."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT)
        # Workers of a killed master may outlive it for a moment.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ini(sections: dict[str, dict[str, str]]) -> str:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _merge(
    base: dict[str, dict[str, str]], extra: dict[str, dict[str, str]] | None
) -> dict[str, dict[str, str]]:
    merged = {section: dict(values) for section, values in base.items()}
    for section, values in (extra or {}).items():
        merged.setdefault(section, {}).update(values)
    return merged


class IMSServer(ServerProcess):
    """``ims-api --config-file ims.conf`` on a free loopback port.

    ``extra_conf`` is merged over the defaults written here ({section:
    {option: value}}). State (SQLite database, filesystem store) lives in
    ``workdir/state`` unless the configuration says otherwise.
    """

    name = "ims-api"

    def __init__(
        self,
        tmp_path: Path,
        auth_strategy: str = "noauth",
        extra_conf: dict[str, dict[str, str]] | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(Path(tmp_path) / f"ims-{uuid.uuid4().hex[:8]}")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_path = self.workdir / "state"
        self.conf_path = self.workdir / "ims.conf"
        self.conf = _merge(
            {
                "DEFAULT": {
                    "state_path": str(self.state_path),
                    "bind_host": "127.0.0.1",
                    "bind_port": str(self.port),
                    "auth_strategy": auth_strategy,
                },
                "wsgi": {"workers": "2", "threads": "8", "graceful_timeout": "5"},
            },
            extra_conf,
        )

    @property
    def store_dir(self) -> Path:
        """The single filesystem store's directory (embedded default layout)."""
        configured = self.conf.get("glance_store", {}).get("filesystem_store_datadir")
        return Path(configured) if configured else self.state_path / "images"

    def start(self) -> IMSServer:
        self.conf_path.write_text(_ini(self.conf))
        self._spawn(
            [sys.executable, "-m", "ims.cmd.api", "--config-file", str(self.conf_path)],
            clean_env(),
        )
        self.wait_for_http(self.url + "/")
        return self


# The Keystone WSGI app parses sys.argv with oslo.config, so gunicorn's own
# command line must not reach it: run gunicorn from code with a bare argv.
_KEYSTONE_LAUNCHER = """
import sys
from gunicorn.app.base import BaseApplication

host, port, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.argv = sys.argv[:1]


class Keystone(BaseApplication):
    def load_config(self):
        settings = {"bind": [f"{host}:{port}"], "workers": workers,
                    "worker_class": "gthread", "threads": 8, "timeout": 120,
                    "graceful_timeout": 5, "errorlog": "-", "loglevel": "info"}
        # gunicorn >= 26 opens a control socket at a fixed per-user path.
        if "control_socket_disable" in self.cfg.settings:
            settings["control_socket_disable"] = True
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        from keystone.server.wsgi import initialize_public_application
        return initialize_public_application()


Keystone().run()
"""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A Keystone user scoped to one project."""

    username: str
    password: str
    project_name: str
    user_id: str
    project_id: str
    domain: str = "Default"

    def auth(self, auth_url: str) -> dict[str, str]:
        """The openstacksdk/keystoneauth ``auth`` dict for these credentials."""
        return {
            "auth_url": auth_url,
            "username": self.username,
            "password": self.password,
            "project_name": self.project_name,
            "user_domain_name": self.domain,
            "project_domain_name": self.domain,
        }

    def cli_args(self, auth_url: str) -> list[str]:
        """Options for the glance and openstack CLIs (password auth, v3)."""
        return [
            "--os-auth-url",
            auth_url,
            "--os-username",
            self.username,
            "--os-password",
            self.password,
            "--os-project-name",
            self.project_name,
            "--os-user-domain-name",
            self.domain,
            "--os-project-domain-name",
            self.domain,
            "--os-region-name",
            REGION,
        ]


class KeystoneServer(ServerProcess):
    """A real Keystone (fernet tokens, PostgreSQL) with the users IMS tests need.

    After ``start``: ``admin`` (admin of project admin), ``service`` (user
    ims, role service in project service, for auth_token), ``demo`` and
    ``alt`` (member of projects demo and alt) and ``reader`` (reader of
    demo). ``image_url`` becomes the ``image`` service's public, internal
    and admin endpoints in RegionOne.

    Keystone caches in memory (without a cache every token validation costs
    several queries); one worker process keeps that cache coherent.
    """

    name = "keystone"

    def __init__(self, tmp_path: Path, image_url: str | None = None, workers: int = 1) -> None:
        super().__init__(Path(tmp_path) / f"keystone-{uuid.uuid4().hex[:8]}")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth_url = self.url + "/v3"
        self.image_url = image_url
        self.workers = workers
        self.db_name = f"ims_ks_{uuid.uuid4().hex[:12]}"
        self.users: dict[str, Credentials] = {}
        self._db_created = False
        self._admin_token: str | None = None

    # -- database ---------------------------------------------------------

    def _pg(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(PG_URL)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    @property
    def db_url(self) -> str:
        from sqlalchemy.engine import make_url

        url = make_url(PG_URL).set(drivername="postgresql+psycopg2", database=self.db_name)
        return url.render_as_string(hide_password=False)

    # -- life cycle -------------------------------------------------------

    def start(self) -> KeystoneServer:
        try:
            self._pg(f'CREATE DATABASE "{self.db_name}"')
            self._db_created = True
            self._configure()
            self._spawn(
                [
                    sys.executable,
                    "-c",
                    _KEYSTONE_LAUNCHER,
                    "127.0.0.1",
                    str(self.port),
                    str(self.workers),
                ],
                self._env(),
            )
            self.wait_for_http(self.auth_url)
            self._populate()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        super().stop()
        if self._db_created:
            with contextlib.suppress(Exception):
                self._pg(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self._db_created = False

    def _env(self) -> dict[str, str]:
        return clean_env(OS_KEYSTONE_CONFIG_DIR=str(self.workdir))

    def _configure(self) -> None:
        work = self.workdir
        (work / "keystone.conf").write_text(
            _ini(
                {
                    "DEFAULT": {"debug": "false", "use_stderr": "true"},
                    "database": {"connection": self.db_url},
                    "token": {"provider": "fernet", "expiration": "7200"},
                    "fernet_tokens": {"key_repository": str(work / "fernet-keys")},
                    "fernet_receipts": {"key_repository": str(work / "fernet-receipts")},
                    "credential": {"key_repository": str(work / "credential-keys")},
                    "identity": {"password_hash_rounds": "4"},
                    # One worker process, so its in-memory cache is the only one.
                    "cache": {"enabled": "true", "backend": "dogpile.cache.memory"},
                }
            )
        )
        owner = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
        self._manage("db_sync")
        self._manage("fernet_setup", *owner)
        self._manage("credential_setup", *owner)
        self._manage(
            "bootstrap",
            "--bootstrap-username",
            "admin",
            "--bootstrap-password",
            ADMIN_PASSWORD,
            "--bootstrap-project-name",
            "admin",
            "--bootstrap-role-name",
            "admin",
            "--bootstrap-service-name",
            "keystone",
            "--bootstrap-region-id",
            REGION,
            "--bootstrap-public-url",
            self.auth_url,
            "--bootstrap-internal-url",
            self.auth_url,
            "--bootstrap-admin-url",
            self.auth_url,
        )

    def _manage(self, *args: str) -> None:
        cmd = [
            sys.executable,
            "-c",
            "import sys; from keystone.cmd.manage import main; sys.exit(main())",
            "--config-file",
            str(self.workdir / "keystone.conf"),
            *args,
        ]
        result = subprocess.run(
            cmd,
            env=self._env(),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        with open(self.log_path, "a") as log:
            log.write(f"$ keystone-manage {' '.join(args)}\n{result.stdout}{result.stderr}\n")
        if result.returncode:
            raise ServerError(
                f"keystone-manage {args[0]} failed ({result.returncode}):\n{result.stderr[-5000:]}"
            )

    # -- identity API -----------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """Call Keystone's API (path below /v3) and return (status, headers, json)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.auth_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        token = token if token is not None else self._admin_token
        if token:
            req.add_header("X-Auth-Token", token)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
                status, headers = resp.status, dict(resp.headers)
        except urllib.error.HTTPError as ex:
            raw = ex.read()
            status, headers = ex.code, dict(ex.headers)
        return status, headers, (json.loads(raw) if raw else None)

    def _call(self, method: str, path: str, body: Any = None, ok: int = 200) -> Any:
        status, _, payload = self.request(method, path, body)
        if status != ok:
            raise ServerError(f"keystone {method} {path}: {status} {payload}")
        return payload

    def token(self, creds: Credentials) -> str:
        """Issue a project-scoped token for ``creds``."""
        status, headers, payload = self.request(
            "POST",
            "/auth/tokens",
            {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": creds.username,
                                "domain": {"name": creds.domain},
                                "password": creds.password,
                            }
                        },
                    },
                    "scope": {
                        "project": {"name": creds.project_name, "domain": {"name": creds.domain}}
                    },
                }
            },
            token="",
        )
        if status != 201:
            raise ServerError(f"keystone token for {creds.username}: {status} {payload}")
        return headers["X-Subject-Token"]

    def _id_of(self, kind: str, name: str) -> str:
        payload = self._call("GET", f"/{kind}?name={name}")
        return str(payload[kind][0]["id"])

    def _populate(self) -> None:
        admin = Credentials("admin", ADMIN_PASSWORD, "admin", "", "")
        self._admin_token = self.token(admin)
        self.users["admin"] = dataclasses.replace(
            admin,
            user_id=self._id_of("users", "admin"),
            project_id=self._id_of("projects", "admin"),
        )
        roles = {r["name"]: r["id"] for r in self._call("GET", "/roles")["roles"]}
        for key, user, project, role in (
            ("service", "ims", "service", "service"),
            ("demo", "demo", "demo", "member"),
            ("alt", "alt", "alt", "member"),
            ("reader", "demo-reader", "demo", "reader"),
        ):
            self.users[key] = self.add_user(user, project, roles[role])
        if self.image_url:
            self.set_image_endpoint(self.image_url)

    def add_user(self, username: str, project: str, role_id: str) -> Credentials:
        """Create (or reuse) ``project`` and a user holding ``role_id`` on it."""
        found = self._call("GET", f"/projects?name={project}")["projects"]
        if found:
            project_id = found[0]["id"]
        else:
            project_id = self._call(
                "POST",
                "/projects",
                {"project": {"name": project, "domain_id": "default"}},
                ok=201,
            )["project"]["id"]
        password = f"{username}-pw"
        user_id = self._call(
            "POST",
            "/users",
            {"user": {"name": username, "password": password, "domain_id": "default"}},
            ok=201,
        )["user"]["id"]
        self._call("PUT", f"/projects/{project_id}/users/{user_id}/roles/{role_id}", ok=204)
        return Credentials(username, password, project, user_id, project_id)

    def set_image_endpoint(self, url: str) -> None:
        """Point the ``image`` service's three endpoints at ``url``.

        Tokens issued before the change keep the old catalog.
        """
        self.set_endpoint("image", "ims", url)
        self.image_url = url

    def set_endpoint(self, service_type: str, name: str, url: str) -> None:
        """Point the three endpoints of the ``service_type`` service at ``url``."""
        services = self._call("GET", f"/services?type={service_type}")["services"]
        if services:
            service_id = services[0]["id"]
        else:
            service_id = self._call(
                "POST",
                "/services",
                {"service": {"type": service_type, "name": name, "enabled": True}},
                ok=201,
            )["service"]["id"]
        existing = self._call("GET", f"/endpoints?service_id={service_id}")["endpoints"]
        for endpoint in existing:
            self._call("DELETE", f"/endpoints/{endpoint['id']}", ok=204)
        for interface in ("public", "internal", "admin"):
            self._call(
                "POST",
                "/endpoints",
                {
                    "endpoint": {
                        "service_id": service_id,
                        "interface": interface,
                        "url": url,
                        "region_id": REGION,
                        "enabled": True,
                    }
                },
                ok=201,
            )

    def authtoken_conf(self) -> dict[str, dict[str, str]]:
        """The [keystone_authtoken] section IMS needs to validate tokens here."""
        service = self.users["service"]
        return {
            "keystone_authtoken": {
                "www_authenticate_uri": self.auth_url,
                "auth_url": self.auth_url,
                "auth_type": "password",
                "username": service.username,
                "password": service.password,
                "project_name": service.project_name,
                "user_domain_name": service.domain,
                "project_domain_name": service.domain,
                "region_name": REGION,
                "service_token_roles_required": "true",
            }
        }
