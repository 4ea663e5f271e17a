"""ims-api: serve the API under gunicorn (gthread workers) from ims.conf.

    ims-api [--config-file FILE] [--config-dir DIR]

With no configuration it runs on the embedded defaults: SQLite and a
filesystem store under ./ims-data, on http://127.0.0.1:9292, noauth.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from typing import Any

from gunicorn.app.base import BaseApplication
from oslo_config import cfg

from ims import conf as ims_conf
from ims import errors
from ims.cmd import single_malloc_arena
from ims.db import migration
from ims.db.session import create_engine

LOG = logging.getLogger("ims.api")


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_startup(conf: cfg.ConfigOpts) -> None:
    """Refuse configurations that must not serve (raises ConfigError)."""
    if (
        conf.auth_strategy == "noauth"
        and not _is_loopback(conf.bind_host)
        and not conf.noauth_allow_remote
    ):
        raise errors.ConfigError(
            reason=f"auth_strategy=noauth on non-loopback address {conf.bind_host}: anyone "
            "could act as admin. Use keystone, bind to 127.0.0.1, or set "
            "noauth_allow_remote=true if you really mean it."
        )
    if bool(conf.wsgi.cert_file) != bool(conf.wsgi.key_file):
        raise errors.ConfigError(reason="[wsgi] cert_file and key_file go together")


class IMSServer(BaseApplication):
    """gunicorn configured from oslo.config instead of its own files."""

    def __init__(self, conf: cfg.ConfigOpts, argv: list[str]) -> None:
        self.conf = conf
        self.argv = argv
        super().__init__()

    def load_config(self) -> None:
        conf = self.conf
        wsgi = conf.wsgi
        host = conf.bind_host
        bind = f"[{host}]:{conf.bind_port}" if ":" in host else f"{host}:{conf.bind_port}"
        settings: dict[str, Any] = {
            "bind": [bind],
            "workers": wsgi.workers,
            "threads": wsgi.threads,
            "worker_class": "gthread",
            "timeout": wsgi.timeout,
            "graceful_timeout": wsgi.graceful_timeout,
            "keepalive": wsgi.keepalive,
            "limit_request_field_size": conf.api.max_header_line,
            "limit_request_line": 8190,
            "proc_name": "ims-api",
            "accesslog": wsgi.access_log,
            "errorlog": "-",
            "loglevel": "info",
            "preload_app": False,
        }
        if wsgi.cert_file:
            settings["certfile"] = wsgi.cert_file
            settings["keyfile"] = wsgi.key_file
        # NOTE(ims): gunicorn >= 26 opens a control socket at one fixed path per
        # user; several ims-api on one host would share it. IMS needs none.
        if "control_socket_disable" in self.cfg.settings:
            settings["control_socket_disable"] = True
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from ims.api.app import create_app

        conf = ims_conf.load(self.argv)
        # The master migrated already; workers must not race each other.
        conf.set_override("auto_migrate", False, group="database")
        return create_app(conf)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    single_malloc_arena()  # inherited by the workers gunicorn forks
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        conf = ims_conf.load(argv)
        check_startup(conf)
        if conf.database.auto_migrate:
            migration.upgrade(create_engine(conf.database.connection))
        # Build the stores once here so a bad store config stops start-up.
        from ims.core.stores import StoreRegistry
        from ims.disk import registry

        StoreRegistry(conf)
        registry.formats()
    except (errors.IMSError, cfg.Error) as ex:
        print(f"ims-api: {ex}", file=sys.stderr)
        return 2
    LOG.info(
        "IMS API on %s:%s (auth: %s, database: %s)",
        conf.bind_host,
        conf.bind_port,
        conf.auth_strategy,
        _safe_url(conf.database.connection),
    )
    IMSServer(conf, argv).run()
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
