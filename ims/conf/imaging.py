"""[imaging]: creating images from files, exporting and copying them (IMS native API)."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "imaging"

opts = [
    cfg.StrOpt(
        "internal_format",
        default="zvhd2",
        choices=[
            ("zvhd2", "zstd frames with a seek table: compact, any block readable alone"),
            ("zvhd", "deflate stream: compact, read front to back"),
            ("qcow2", "needs a temporary file per conversion"),
            ("raw", "no conversion cost, no compression"),
            ("vhd", "dynamic VHD"),
            ("vmdk", "streamOptimized VMDK"),
        ],
        help="The format images created from files are converted to and stored in "
        "(their disk_format). Quick import keeps raw and zvhd2 files as they are; "
        "ISO files are kept as they are. Related options: internal_format_options.",
    ),
    cfg.DictOpt(
        "internal_format_options",
        default={},
        help="Writer options for internal_format, e.g. level:3,block_size:1M for zvhd2. "
        "Unknown options fail the jobs that convert. Related options: internal_format.",
    ),
    cfg.StrOpt(
        "object_store",
        help="The store whose backend holds users' buckets, for the 'bucket:object' "
        "references of create, register and export. Either the id of a configured image "
        "store ([DEFAULT] enabled_backends, or 'file' in single-store mode), or the name of "
        "a config group with the options of a store of type object_store_type (preferred: "
        "users' buckets then never share a backend account with image data). A store's own "
        "bucket is never a user bucket. Unset: the file-based calls answer IMG.0069. "
        "Related options: object_store_type, bucket_owner_rule, project_buckets.",
    ),
    cfg.StrOpt(
        "object_store_type",
        help="Store type (filesystem, s3, swift) of object_store when it is not one of "
        "the image stores; its options go in the [<object_store>] group. Its own bucket "
        "(s3_store_bucket, swift_store_container) must still be set: it is never handed "
        "to users, and may be created on first use (s3_store_create_bucket_on_put).",
    ),
    cfg.StrOpt(
        "bucket_owner_rule",
        default="prefix",
        choices=[
            (
                "prefix",
                "a bucket belongs to the project whose id is its name up to the first "
                "'-' (e.g. 0a1b...ff-images), plus the buckets of project_buckets",
            ),
            ("listed", "only the buckets listed in project_buckets"),
        ],
        help="Which project may read and write which bucket of object_store. Admins "
        "follow the same rule. Related options: project_buckets.",
    ),
    cfg.ListOpt(
        "project_buckets",
        default=[],
        help="Buckets granted to projects, as project_id:bucket entries (a project may "
        "appear several times).",
    ),
    cfg.ListOpt(
        "regions",
        default=[],
        help="Targets of cross-region copy, as region:store_id entries; the copy goes to "
        "that image store. Unknown regions are refused. Related options: region_name.",
    ),
    cfg.StrOpt(
        "region_name",
        default="RegionOne",
        help="This deployment's own region: cross-region copy to it is refused (IMG.0142).",
    ),
    cfg.IntOpt(
        "max_file_size_gb",
        default=128,
        min=1,
        help="Largest file (GiB) create, data-image creation and register accept (IMS: 128).",
    ),
    cfg.IntOpt(
        "max_quick_import_size_gb",
        default=1024,
        min=1,
        help="Largest file (GiB) quick import accepts (IMS: 1024).",
    ),
    cfg.IntOpt(
        "max_export_size_gb",
        default=128,
        min=1,
        help="Largest image (GiB of virtual size) exported with a file_format; larger "
        "ones can only be quick-exported (IMG.0160). Related options: "
        "max_quick_export_size_gb.",
    ),
    cfg.IntOpt(
        "max_quick_export_size_gb",
        default=1024,
        min=1,
        help="Largest image (GiB of virtual size) quick export accepts.",
    ),
    cfg.IntOpt(
        "max_cross_region_copy_size_gb",
        default=128,
        min=1,
        help="Largest image (GiB of virtual size) cross-region copy accepts (IMG.0146).",
    ),
    cfg.IntOpt(
        "max_running_jobs",
        default=40,
        min=1,
        help="Create, import, export and copy jobs one project may have waiting or "
        "running at once; more are refused with IMG.0060 (IMS: 40).",
    ),
    cfg.IntOpt(
        "max_cross_region_copies",
        default=5,
        min=1,
        help="Cross-region copies one project may have waiting or running (IMG.0149).",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)
