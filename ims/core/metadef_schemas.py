"""JSON Schemas of the metadata definitions API, compiled once.

The documents have the shapes Glance publishes at /v2/schemas/metadefs/*;
glanceclient builds warlock models from them and validates both what it sends
and what it receives, so every body IMS returns must validate against them.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

MAX_NAMESPACE = 80
MAX_DISPLAY_NAME = 80
MAX_DESCRIPTION = 500
MAX_OWNER = 255
MAX_OBJECT_NAME = 80
MAX_PROPERTY_NAME = 255
MAX_TAG_NAME = 255
MAX_RESOURCE_TYPE = 80
MAX_PREFIX = 80
MAX_PROPERTIES_TARGET = 80

VISIBILITIES = ("public", "private")
_MAX_MESSAGE = 300
PROPERTY_TYPES = ["array", "boolean", "integer", "number", "object", "string", None]

_STAMPS = {
    "created_at": {
        "type": "string",
        "readOnly": True,
        "description": "Date and time of creation",
        "format": "date-time",
    },
    "updated_at": {
        "type": "string",
        "readOnly": True,
        "description": "Date and time of the last modification",
        "format": "date-time",
    },
}
_LINKS = {
    "schema": {"type": "string", "readOnly": True},
    "self": {"type": "string", "readOnly": True},
}


def _property_fields() -> dict[str, Any]:
    """The keys one property definition may have (itself a JSON Schema)."""
    return {
        "name": {"type": "string", "maxLength": MAX_PROPERTY_NAME},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "operators": {"type": "array", "items": {"type": "string"}},
        "type": {"type": "string", "enum": PROPERTY_TYPES},
        "required": {"$ref": "#/definitions/stringArray"},
        "minimum": {"type": "number"},
        "maximum": {"type": "number"},
        "maxLength": {"$ref": "#/definitions/positiveInteger"},
        "minLength": {"$ref": "#/definitions/positiveIntegerDefault0"},
        "pattern": {"type": "string", "format": "regex"},
        "enum": {"type": "array"},
        "readonly": {"type": "boolean"},
        "default": {},
        "items": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": PROPERTY_TYPES},
                "enum": {"type": "array"},
            },
        },
        "maxItems": {"$ref": "#/definitions/positiveInteger"},
        "minItems": {"$ref": "#/definitions/positiveIntegerDefault0"},
        "uniqueItems": {"type": "boolean", "default": False},
        "additionalItems": {"type": "boolean"},
    }


def definitions() -> dict[str, Any]:
    """Shared definitions; every document that uses ``$ref`` carries them."""
    return {
        "positiveInteger": {"type": "integer", "minimum": 0},
        "positiveIntegerDefault0": {
            "allOf": [{"$ref": "#/definitions/positiveInteger"}, {"default": 0}]
        },
        "stringArray": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "property": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["title", "type"],
                # NOTE(ims): stricter than Glance on purpose: a key IMS stored
                # but the standalone property schema forbids would make
                # glanceclient reject our own responses.
                "additionalProperties": False,
                "properties": _property_fields(),
            },
        },
    }


def _document(
    name: str,
    properties: dict[str, Any],
    required: list[str] | None = None,
    with_definitions: bool = False,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "properties": properties,
        "additionalProperties": False,
    }
    if with_definitions:
        doc["definitions"] = definitions()
    if required:
        doc["required"] = required
    return doc


def _collection(name: str, item: dict[str, Any], as_dict: bool = False) -> dict[str, Any]:
    """A listing of ``item``; definitions move to the top so refs resolve."""
    item = copy.deepcopy(item)
    defs = item.pop("definitions", None)
    container = (
        {"type": "object", "additionalProperties": item}
        if as_dict
        else {"type": "array", "items": item}
    )
    doc: dict[str, Any] = {
        "name": name,
        "properties": {
            name: container,
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }
    if defs:
        doc["definitions"] = defs
    return doc


def namespace_schema() -> dict[str, Any]:
    properties = {
        "namespace": {
            "type": "string",
            "maxLength": MAX_NAMESPACE,
            "description": "The unique namespace text.",
        },
        "display_name": {
            "type": "string",
            "maxLength": MAX_DISPLAY_NAME,
            "description": "The user friendly name for the namespace.",
        },
        "description": {
            "type": "string",
            "maxLength": MAX_DESCRIPTION,
            "description": "Provides a user friendly description of the namespace.",
        },
        "visibility": {
            "type": "string",
            "enum": list(VISIBILITIES),
            "description": "Scope of namespace accessibility.",
        },
        "protected": {
            "type": "boolean",
            "description": "If true, namespace will not be deletable.",
        },
        "owner": {
            "type": "string",
            "maxLength": MAX_OWNER,
            "description": "Owner of the namespace.",
        },
        **_STAMPS,
        **_LINKS,
        "resource_type_associations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "prefix": {"type": "string"},
                    "properties_target": {"type": "string"},
                },
            },
        },
        "properties": {"$ref": "#/definitions/property"},
        "objects": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "required": {"$ref": "#/definitions/stringArray"},
                    "properties": {"$ref": "#/definitions/property"},
                },
            },
        },
        "tags": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    }
    return _document("namespace", properties, ["namespace"], with_definitions=True)


def object_schema() -> dict[str, Any]:
    properties = {
        "name": {"type": "string", "maxLength": MAX_OBJECT_NAME},
        "description": {"type": "string"},
        "required": {"$ref": "#/definitions/stringArray"},
        "properties": {"$ref": "#/definitions/property"},
        **_LINKS,
        **_STAMPS,
    }
    return _document("object", properties, ["name"], with_definitions=True)


def property_schema() -> dict[str, Any]:
    return _document(
        "property", _property_fields(), ["name", "title", "type"], with_definitions=True
    )


def tag_schema() -> dict[str, Any]:
    properties = {"name": {"type": "string", "maxLength": MAX_TAG_NAME}, **_STAMPS}
    return _document("tag", properties, ["name"])


def resource_type_association_schema() -> dict[str, Any]:
    properties = {
        "name": {
            "type": "string",
            "maxLength": MAX_RESOURCE_TYPE,
            "description": "Resource type names should be aligned with Heat resource "
            "types whenever possible: "
            "https://docs.openstack.org/heat/latest/template_guide/openstack.html",
        },
        "prefix": {
            "type": "string",
            "maxLength": MAX_PREFIX,
            "description": "Specifies the prefix to use for the given resource type. "
            "Any properties in the namespace should be prefixed with this prefix when "
            "being applied to the specified resource type.",
        },
        "properties_target": {
            "type": "string",
            "maxLength": MAX_PROPERTIES_TARGET,
            "description": "Some resource types allow more than one key / value pair "
            "per instance, for example Cinder allows user and image metadata on "
            "volumes. This specifies which sub-resource the properties apply to.",
        },
        **_STAMPS,
    }
    return _document("resource_type_association", properties, ["name"])


def documents() -> dict[str, dict[str, Any]]:
    """The documents published under /v2/schemas/metadefs/, by short name."""
    namespace = namespace_schema()
    obj = object_schema()
    prop = property_schema()
    tag = tag_schema()
    association = resource_type_association_schema()
    return {
        "namespace": namespace,
        "namespaces": _collection("namespaces", namespace),
        "object": obj,
        "objects": _collection("objects", obj),
        "property": prop,
        "properties": _collection("properties", prop, as_dict=True),
        "tag": tag,
        "tags": _collection("tags", tag),
        "resource_type": association,
        "resource_types": _collection("resource_type_associations", association),
    }


def _validator(doc: dict[str, Any]) -> jsonschema.Draft4Validator:
    jsonschema.Draft4Validator.check_schema(doc)
    return jsonschema.Draft4Validator(
        doc, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )


NAMESPACE = _validator(namespace_schema())
OBJECT = _validator(object_schema())
PROPERTY = _validator(property_schema())
TAG = _validator(tag_schema())
RESOURCE_TYPE_ASSOCIATION = _validator(resource_type_association_schema())


def validate(validator: jsonschema.Draft4Validator, name: str, doc: Any) -> str | None:
    """Return why ``doc`` does not match, or None when it does."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)[:_MAX_MESSAGE]
    # NOTE(ims): jsonschema quotes the offending value; a huge value would
    # otherwise come back whole in the error body.
    message = error.message
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    return (
        f"Provided object does not match schema '{name}': "
        f"{message}{f' (at {where})' if where else ''}"
    )
