"""[database]: where image records live."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "database"

opts = [
    cfg.StrOpt(
        "connection",
        default="sqlite:///$state_path/ims.sqlite",
        secret=True,
        help="SQLAlchemy URL of the database. Possible values: any SQLAlchemy URL, e.g. "
        "postgresql+psycopg2://user:pw@host/ims or mysql+pymysql://user:pw@host/ims. "
        "The SQLite default is created and migrated on start. "
        "Related options: [DEFAULT] state_path.",
    ),
    cfg.BoolOpt(
        "auto_migrate",
        default=True,
        help="Bring the schema up to date when the API starts. Turn off to require "
        "'ims-manage db sync' to be run by hand.",
    ),
    cfg.IntOpt("max_pool_size", default=10, min=1, help="Connections kept per process."),
    cfg.IntOpt("max_overflow", default=20, min=0, help="Extra connections allowed under load."),
    cfg.IntOpt("pool_timeout", default=30, min=1, help="Seconds to wait for a free connection."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)
