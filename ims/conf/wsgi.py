"""[DEFAULT] bind options and [wsgi]: how ims-api serves HTTP (gunicorn)."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "wsgi"

bind_opts = [
    cfg.HostAddressOpt("bind_host", default="127.0.0.1", help="Address ims-api listens on."),
    cfg.PortOpt("bind_port", default=9292, help="Port ims-api listens on."),
]

opts = [
    cfg.IntOpt(
        "workers",
        default=2,
        min=1,
        help="gunicorn worker processes. Related options: threads.",
    ),
    cfg.IntOpt(
        "threads",
        default=8,
        min=1,
        help="Threads per worker (gthread); each serves one request at a time.",
    ),
    cfg.IntOpt(
        "timeout",
        default=0,
        min=0,
        help="Seconds a worker may be silent before gunicorn restarts it; 0 disables "
        "the check so that long uploads are never cut.",
    ),
    cfg.IntOpt("keepalive", default=5, min=0, help="Seconds to keep idle connections."),
    cfg.IntOpt(
        "graceful_timeout", default=30, min=0, help="Seconds to finish requests on restart."
    ),
    cfg.StrOpt("cert_file", help="TLS certificate (PEM); with key_file, serve HTTPS."),
    cfg.StrOpt("key_file", help="TLS private key (PEM). Related options: cert_file."),
    cfg.StrOpt("access_log", help="Access log path, '-' for stderr; unset: no access log."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(bind_opts)
    conf.register_opts(opts, group=GROUP)
