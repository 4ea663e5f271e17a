"""Metadata definitions: namespaces, resource types, objects, properties, tags.

Revision ID: 0002
Revises: 0001

Seeds the five resource types Glance ships as protected rows, so that a fresh
service has something to associate namespaces with.
"""

import datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SEEDED_RESOURCE_TYPES = (
    "OS::Glance::Image",
    "OS::Cinder::Volume",
    "OS::Nova::Flavor",
    "OS::Nova::Aggregate",
    "OS::Nova::Server",
)


def _stamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    ]


def _namespace_fk(primary_key: bool = False) -> sa.Column:
    return sa.Column(
        "namespace_id",
        sa.Integer,
        sa.ForeignKey("metadef_namespaces.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "metadef_namespaces",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(80), nullable=False),
        sa.Column("display_name", sa.String(80)),
        sa.Column("description", sa.Text),
        sa.Column("visibility", sa.String(32), nullable=False),
        sa.Column("protected", sa.Boolean, nullable=False),
        sa.Column("owner", sa.String(255)),
        *_stamps(),
        sa.UniqueConstraint("namespace", name="uq_metadef_namespaces_namespace"),
    )
    op.create_index("ix_metadef_namespaces_owner", "metadef_namespaces", ["owner"])

    resource_types = op.create_table(
        "metadef_resource_types",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("protected", sa.Boolean, nullable=False),
        *_stamps(),
        sa.UniqueConstraint("name", name="uq_metadef_resource_types_name"),
    )

    op.create_table(
        "metadef_namespace_resource_types",
        _namespace_fk(primary_key=True),
        sa.Column(
            "resource_type_id",
            sa.Integer,
            sa.ForeignKey("metadef_resource_types.id"),
            nullable=False,
            primary_key=True,
        ),
        sa.Column("prefix", sa.String(80)),
        sa.Column("properties_target", sa.String(80)),
        *_stamps(),
    )
    op.create_index(
        "ix_metadef_namespace_resource_types_resource_type_id",
        "metadef_namespace_resource_types",
        ["resource_type_id"],
    )

    op.create_table(
        "metadef_objects",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _namespace_fk(),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("required", sa.JSON, nullable=False),
        sa.Column("json_schema", sa.JSON, nullable=False),
        *_stamps(),
        sa.UniqueConstraint("namespace_id", "name", name="uq_metadef_objects_namespace_id_name"),
    )

    op.create_table(
        "metadef_properties",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _namespace_fk(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("json_schema", sa.JSON, nullable=False),
        *_stamps(),
        sa.UniqueConstraint(
            "namespace_id", "name", name="uq_metadef_properties_namespace_id_name"
        ),
    )

    op.create_table(
        "metadef_tags",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _namespace_fk(),
        sa.Column("name", sa.String(255), nullable=False),
        *_stamps(),
        sa.UniqueConstraint("namespace_id", "name", name="uq_metadef_tags_namespace_id_name"),
    )

    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)
    op.bulk_insert(
        resource_types,
        [
            {"name": name, "protected": True, "created_at": now, "updated_at": now}
            for name in SEEDED_RESOURCE_TYPES
        ],
    )


def downgrade() -> None:
    for table in (
        "metadef_tags",
        "metadef_properties",
        "metadef_objects",
        "metadef_namespace_resource_types",
        "metadef_resource_types",
        "metadef_namespaces",
    ):
        op.drop_table(table)
