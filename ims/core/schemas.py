"""JSON Schemas of the Image API v2 resources, compiled once.

The same documents validate requests, filter responses and are published at
/v2/schemas/*, so clients that validate against them agree with the server.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from typing import Any

import jsonschema

_UUID_PATTERN = (
    "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
)
STATUSES = [
    "queued",
    "saving",
    "active",
    "killed",
    "deleted",
    "uploading",
    "importing",
    "pending_delete",
    "deactivated",
]
VISIBILITIES = ["public", "private", "shared", "community"]
_CUSTOM_FILE = os.path.join(os.path.dirname(__file__), "schema-image.json")


def _base_properties(disk_formats: list[str], container_formats: list[str]) -> dict[str, Any]:
    nullable_str = {"type": ["null", "string"], "maxLength": 255}
    return {
        "id": {
            "type": "string",
            "description": "An identifier for the image",
            "pattern": _UUID_PATTERN,
        },
        "name": {**nullable_str, "description": "Descriptive name for the image"},
        "status": {
            "type": "string",
            "readOnly": True,
            "enum": STATUSES,
            "description": "Status of the image",
        },
        "visibility": {
            "type": "string",
            "enum": VISIBILITIES,
            "description": "Scope of image accessibility",
        },
        "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
        "os_hidden": {
            "type": "boolean",
            "description": "If true, image will not appear in default image list response.",
        },
        "checksum": {
            "type": ["null", "string"],
            "readOnly": True,
            "maxLength": 32,
            "description": "md5 hash of image contents.",
        },
        "os_hash_algo": {
            "type": ["null", "string"],
            "readOnly": True,
            "maxLength": 64,
            "description": "Algorithm to calculate the os_hash_value",
        },
        "os_hash_value": {
            "type": ["null", "string"],
            "readOnly": True,
            "maxLength": 128,
            "description": "Hexdigest of the image contents using the algorithm "
            "specified by the os_hash_algo",
        },
        "owner": {**nullable_str, "description": "Owner of the image"},
        "size": {
            "type": ["null", "integer"],
            "readOnly": True,
            "description": "Size of image file in bytes",
        },
        "virtual_size": {
            "type": ["null", "integer"],
            "readOnly": True,
            "description": "Virtual size of image in bytes",
        },
        "container_format": {
            "type": ["null", "string"],
            "enum": [None, *container_formats],
            "description": "Format of the container",
        },
        "disk_format": {
            "type": ["null", "string"],
            "enum": [None, *disk_formats],
            "description": "Format of the disk",
        },
        "created_at": {
            "type": "string",
            "readOnly": True,
            "description": "Date and time of image registration",
        },
        "updated_at": {
            "type": "string",
            "readOnly": True,
            "description": "Date and time of the last image modification",
        },
        "tags": {
            "type": "array",
            "items": {"type": "string", "maxLength": 255},
            "description": "List of strings related to the image",
        },
        "direct_url": {
            "type": "string",
            "readOnly": True,
            "description": "URL to access the image file kept in external store",
        },
        "min_ram": {
            "type": "integer",
            "minimum": 0,
            # NOTE(ims): the column is a 32-bit INTEGER; larger values were a 500.
            "maximum": 2147483647,
            "description": "Amount of ram (in MB) required to boot image.",
        },
        "min_disk": {
            "type": "integer",
            "minimum": 0,
            # NOTE(ims): the column is a 32-bit INTEGER; larger values were a 500.
            "maximum": 2147483647,
            "description": "Amount of disk space (in GB) required to boot image.",
        },
        "self": {"type": "string", "readOnly": True, "description": "An image self url"},
        "file": {"type": "string", "readOnly": True, "description": "An image file url"},
        "stores": {
            "type": "string",
            "readOnly": True,
            "description": "Store in which image data resides.  Only present when the "
            "operator has enabled multiple stores.  May be a comma-separated list of "
            "store identifiers.",
        },
        "schema": {"type": "string", "readOnly": True, "description": "An image schema url"},
        "locations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "url": {"type": "string", "maxLength": 255},
                    "metadata": {"type": "object"},
                    "validation_data": {"type": "object"},
                },
                "required": ["url", "metadata"],
            },
            "description": "A set of URLs to access the image file kept in external store",
        },
    }


@functools.cache
def _custom_properties() -> dict[str, Any]:
    with open(_CUSTOM_FILE, encoding="utf-8") as f:
        data = json.load(f)
    return data.get("properties", data)


@functools.cache
def image_schema(
    disk_formats: tuple[str, ...], container_formats: tuple[str, ...]
) -> dict[str, Any]:
    """Return the published image schema for the configured formats."""
    properties = _base_properties(list(disk_formats), list(container_formats))
    properties.update(copy.deepcopy(_custom_properties()))
    return {
        "name": "image",
        "properties": properties,
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def images_schema(image: dict[str, Any]) -> dict[str, Any]:
    """Return the schema of an image listing."""
    return {
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": image},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


MEMBER_SCHEMA: dict[str, Any] = {
    "name": "member",
    "properties": {
        "created_at": {"type": "string", "description": "Date and time of image member creation"},
        "image_id": {
            "type": "string",
            "pattern": _UUID_PATTERN,
            "description": "An identifier for the image",
        },
        "member_id": {
            "type": "string",
            "description": "An identifier for the image member (tenantId)",
        },
        "schema": {"type": "string", "readOnly": True},
        "status": {
            "type": "string",
            "enum": ["pending", "accepted", "rejected"],
            "description": "The status of this image member",
        },
        "updated_at": {
            "type": "string",
            "description": "Date and time of last modification of image member",
        },
    },
}

MEMBERS_SCHEMA: dict[str, Any] = {
    "name": "members",
    "properties": {
        "members": {"type": "array", "items": MEMBER_SCHEMA},
        "schema": {"type": "string"},
    },
    "links": [{"rel": "self", "href": "{self}"}, {"rel": "describedby", "href": "{schema}"}],
}

TASK_SCHEMA: dict[str, Any] = {
    "name": "task",
    "properties": {
        "id": {"type": "string", "pattern": _UUID_PATTERN},
        "type": {"type": "string", "enum": ["import", "api_image_import", "location_import"]},
        "status": {"type": "string", "enum": ["pending", "processing", "success", "failure"]},
        "input": {"type": ["null", "object"]},
        "result": {"type": ["null", "object"]},
        "owner": {"type": "string"},
        "message": {"type": "string"},
        "image_id": {"type": "string"},
        "request_id": {"type": "string"},
        "user_id": {"type": "string"},
        "expires_at": {"type": ["null", "string"]},
        "created_at": {"type": "string"},
        "updated_at": {"type": "string"},
        "self": {"type": "string"},
        "schema": {"type": "string"},
    },
    "required": ["type", "input"],
    "links": [{"rel": "self", "href": "{self}"}, {"rel": "describedby", "href": "{schema}"}],
}

TASKS_SCHEMA: dict[str, Any] = {
    "name": "tasks",
    "properties": {
        "tasks": {
            "type": "array",
            "items": {
                "name": "task",
                "properties": {
                    k: v
                    for k, v in TASK_SCHEMA["properties"].items()
                    if k not in ("input", "result", "message")
                },
            },
        },
        "schema": {"type": "string"},
        "first": {"type": "string"},
        "next": {"type": "string"},
    },
    "links": [
        {"rel": "first", "href": "{first}"},
        {"rel": "next", "href": "{next}"},
        {"rel": "describedby", "href": "{schema}"},
    ],
}


@functools.cache
def image_validator(
    disk_formats: tuple[str, ...], container_formats: tuple[str, ...]
) -> jsonschema.Draft4Validator:
    """Return the compiled validator of image documents."""
    return jsonschema.Draft4Validator(image_schema(disk_formats, container_formats))
