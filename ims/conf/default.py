"""[DEFAULT]: where state lives, identity, and per-image quotas."""

from __future__ import annotations

from oslo_config import cfg

opts = [
    cfg.StrOpt(
        "state_path",
        default="./ims-data",
        help="Directory under which the embedded defaults keep their state: the SQLite "
        "database, the filesystem store, staging areas and the local key store. "
        "Possible values: a directory path (created when missing). "
        "Related options: [database] connection, [glance_store] filesystem_store_datadir.",
    ),
    cfg.StrOpt(
        "auth_strategy",
        default="noauth",
        choices=[
            ("keystone", "validate X-Auth-Token with keystonemiddleware auth_token"),
            ("noauth", "trust X-Project-Id/X-User-Id/X-Roles headers (development only)"),
        ],
        help="How requests are authenticated. Related options: [keystone_authtoken], "
        "noauth_allow_remote.",
    ),
    cfg.BoolOpt(
        "noauth_allow_remote",
        default=False,
        help="Allow auth_strategy=noauth on a bind address other than loopback. "
        "Anyone who can reach the port can then act as any project, admin included.",
    ),
    cfg.StrOpt(
        "public_endpoint",
        help="Public URL of this service (e.g. https://images.example.com), used in "
        "version documents and Location headers. Default: taken from each request.",
    ),
    cfg.StrOpt(
        "image_size_cap",
        default="1099511627776",
        help="Largest image upload accepted, in bytes (suffixes B, KB, MB, GB, TB allowed). "
        "Larger uploads fail with 413. Possible values: 0 to 8 EiB.",
    ),
    cfg.StrOpt(
        "user_storage_quota",
        default="0",
        help="Total image data one project may store (suffixes B, KB, MB, GB, TB). "
        "0 means unlimited. Uploads beyond it fail with 413.",
    ),
    cfg.IntOpt(
        "image_member_quota",
        default=128,
        help="Members one image may have; negative means unlimited.",
    ),
    cfg.IntOpt(
        "image_property_quota",
        default=128,
        help="Additional properties one image may have; negative means unlimited.",
    ),
    cfg.IntOpt(
        "image_tag_quota", default=128, help="Tags one image may have; negative means unlimited."
    ),
    cfg.IntOpt(
        "image_location_quota",
        default=10,
        help="Locations one image may have; negative means unlimited.",
    ),
    cfg.StrOpt(
        "hashing_algorithm",
        default="sha512",
        help="hashlib algorithm for os_hash_algo/os_hash_value of uploaded data. "
        "Possible values: any algorithm hashlib offers (sha256, sha512, ...).",
    ),
    cfg.BoolOpt(
        "show_image_direct_url",
        default=False,
        help="Show the direct_url of image data (the best-weighted location) to users.",
    ),
    cfg.BoolOpt(
        "show_multiple_locations",
        default=False,
        help="Show and allow editing the locations of images (exposes store URLs).",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts)
