"""[api]: request limits and listing defaults of the HTTP API."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "api"

opts = [
    cfg.IntOpt(
        "limit_param_default",
        default=25,
        min=1,
        help="Page size of listings when the request gives no limit. "
        "Related options: api_limit_max.",
    ),
    cfg.IntOpt(
        "api_limit_max",
        default=1000,
        min=1,
        help="Largest page size; larger limits are clipped to it.",
    ),
    cfg.IntOpt(
        "max_request_body_size",
        default=1024 * 1024,
        min=1024,
        help="Largest JSON request body in bytes; larger bodies fail with 413. "
        "Image data uploads are bounded by [DEFAULT] image_size_cap instead.",
    ),
    cfg.IntOpt(
        "max_header_line",
        default=16384,
        min=1024,
        help="Longest HTTP header line accepted (Keystone tokens can be long).",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)
