"""[image_format]: which formats images may declare, and how strictly."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "image_format"

opts = [
    cfg.ListOpt(
        "container_formats",
        default=["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"],
        help="Container formats images may declare.",
    ),
    cfg.ListOpt(
        "disk_formats",
        default=[
            "ami",
            "ari",
            "aki",
            "vhd",
            "vhdx",
            "vmdk",
            "raw",
            "qcow2",
            "vdi",
            "iso",
            "ploop",
            "qed",
            "qcow",
            "zvhd",
            "zvhd2",
        ],
        help="Disk formats images may declare.",
    ),
    cfg.BoolOpt(
        "require_image_format_match",
        default=True,
        help="Refuse (415) uploads whose content is not the declared disk_format, or "
        "that fail the format's safety checks. Related options: disk_formats.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)
