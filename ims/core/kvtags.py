"""IMS key/value tags, stored as the Glance tags of the same image.

Decision: an IMS tag ``{key, value}`` *is* the Glance tag ``"key=value"``
(``"key="`` when the value is empty). There is one list of tags per image,
so the Glance view (``tags``) and the IMS views can never disagree. IMS's
own Glance API forbids ``=`` in Glance tags (ims-api.md §2.1), so a plain
Glance tag never collides with a key/value one; IMS keys cannot hold ``=``
or ``.`` either.

Reading goes the other way for every Glance tag: ``"k=v"`` splits at the
first ``=``; a legacy ``"k.v"`` (IMS's first tag generation, and what a
Glance client may have written) splits at the first ``.``; anything else is
a key with an empty value. Every tag of an image is therefore also an IMS
tag and counts against the IMS tag limit.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from ims import errors
from ims.db import models

KEY_MAX = 36
VALUE_MAX = 43
#: Lengths that tag *queries* (resource_instances, batch delete) accept.
QUERY_KEY_MAX = 127
QUERY_VALUE_MAX = 255

# Letters, digits, '_', '-' and CJK ideographs; values may also hold '.'.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
_KEY = re.compile(rf"^[A-Za-z0-9_\-{_CJK}]+$")
_VALUE = re.compile(rf"^[A-Za-z0-9_.\-{_CJK}]*$")

BAD_TAG = "IMG.0115"
TAG_QUOTA = "IMG.0116"


def parse(tag: str) -> tuple[str, str]:
    """Return the (key, value) an IMS client sees for a stored Glance tag."""
    if "=" in tag:
        key, _, value = tag.partition("=")
        return key, value
    if "." in tag:
        key, _, value = tag.partition(".")
        return key, value
    return tag, ""


def to_glance(key: str, value: str) -> str:
    """Return the Glance tag that stores the IMS tag (key, value)."""
    return f"{key}={value}"


def legacy(tag: str) -> tuple[str, str]:
    """Split a first-generation ``"key.value"`` tag at its first dot."""
    key, _, value = tag.partition(".")
    return key, value


def validate(key: Any, value: Any) -> tuple[str, str]:
    """Check an IMS tag that is about to be written (IMG.0115 if bad)."""
    if not isinstance(key, str) or not 1 <= len(key) <= KEY_MAX or not _KEY.match(key):
        raise errors.Invalid(
            f"Invalid tag key {key!r}: 1 to {KEY_MAX} letters, digits, '_', '-' or "
            "Chinese characters",
            ims_code=BAD_TAG,
        )
    if value is None:
        value = ""
    if not isinstance(value, str) or len(value) > VALUE_MAX or not _VALUE.match(value):
        raise errors.Invalid(
            f"Invalid tag value {value!r}: at most {VALUE_MAX} letters, digits, '_', '-', "
            "'.' or Chinese characters",
            ims_code=BAD_TAG,
        )
    return key, value


def spellings(key: str, value: str) -> list[str]:
    """Every stored Glance tag that reads as exactly (key, value)."""
    found = [to_glance(key, value), f"{key}.{value}"]
    if not value:
        found.append(key)
    return [tag for tag in dict.fromkeys(found) if parse(tag) == (key, value)]


def _tag_value() -> Any:
    return models.ImageTag.value


def has_pair(key: str, value: str) -> Any:
    """SQL: the image has a tag reading as (key, value)."""
    return sa.exists().where(
        models.ImageTag.image_id == models.Image.id, _tag_value().in_(spellings(key, value))
    )


def has_key(key: str) -> Any:
    """SQL: the image has a tag whose key is ``key``, whatever its value."""
    col = _tag_value()
    ways = []
    if parse(key) == (key, ""):
        ways.append(col == key)
    if "=" not in key:
        ways.append(col.startswith(f"{key}=", autoescape=True))
        if "." not in key:
            ways.append(sa.and_(col.startswith(f"{key}.", autoescape=True), ~col.contains("=")))
    if not ways:
        return sa.false()
    return sa.exists().where(models.ImageTag.image_id == models.Image.id, sa.or_(*ways))


def has_any_tag() -> Any:
    return sa.exists().where(models.ImageTag.image_id == models.Image.id)
