"""The one exception hierarchy of IMS.

Core code and drivers raise these; each API dialect maps them to an HTTP status
and body in exactly one error handler. Nothing here knows about HTTP.

    IMSError
    ├── NotFound ── ImageNotFound, MemberNotFound, TagNotFound, TaskNotFound,
    │               StoreNotFound, DataNotFound
    ├── Forbidden ── ReadOnlyProperty, ReservedProperty, ProtectedImage
    ├── Conflict ── Duplicate, InvalidStatusTransition, ImageLocked
    ├── Invalid ── BadRequest-like input errors
    │   └── ImageFormatError ── UnsafeImage, FormatMismatch
    ├── InvalidRange
    ├── UnsupportedMediaType
    ├── TooLarge ── QuotaExceeded, StorageFull
    ├── Gone
    └── Unavailable ── StoreUnavailable
"""

from __future__ import annotations

import os

# NOTE(ims): tests set IMS_STRICT_ERRORS so a template/kwargs mismatch fails
# loudly instead of producing a half-formatted message.
_STRICT = os.environ.get("IMS_STRICT_ERRORS", "") not in ("", "0")


class IMSError(Exception):
    """Root of every error IMS raises on purpose."""

    _msg_fmt = "An unknown error occurred."

    def __init__(self, message: str | None = None, **kwargs: object) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self._msg_fmt % kwargs if kwargs else self._msg_fmt
            except (KeyError, TypeError, ValueError):
                if _STRICT:
                    raise
                message = self._msg_fmt
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class NotFound(IMSError):
    _msg_fmt = "Not found."


class ImageNotFound(NotFound):
    _msg_fmt = "No image found with ID %(image_id)s"


class MemberNotFound(NotFound):
    _msg_fmt = "Member %(member_id)s not found for image %(image_id)s"


class TagNotFound(NotFound):
    _msg_fmt = "Tag %(tag)s not found on image %(image_id)s"


class TaskNotFound(NotFound):
    _msg_fmt = "No task found with ID %(task_id)s"


class StoreNotFound(NotFound):
    _msg_fmt = "Unknown store %(store)s"


class DataNotFound(NotFound):
    _msg_fmt = "Image data not found at %(location)s"


class Forbidden(IMSError):
    _msg_fmt = "You are not authorized to complete this action."


class ReadOnlyProperty(Forbidden):
    _msg_fmt = "Attribute '%(name)s' is read-only."


class ReservedProperty(Forbidden):
    _msg_fmt = "Attribute '%(name)s' is reserved."


class ProtectedImage(Forbidden):
    _msg_fmt = "Image %(image_id)s is protected and cannot be deleted."


class Conflict(IMSError):
    _msg_fmt = "The request conflicts with the current state."


class Duplicate(Conflict):
    _msg_fmt = "%(what)s already exists."


class InvalidStatusTransition(Conflict):
    _msg_fmt = "Image status transition from %(current)s to %(target)s is not allowed"


class ImageLocked(Conflict):
    _msg_fmt = "Image %(image_id)s is busy with another operation."


class Invalid(IMSError):
    _msg_fmt = "Invalid input."


class ImageFormatError(Invalid):
    """Image data that does not parse as the format it claims to be."""

    _msg_fmt = "Invalid %(format)s image: %(reason)s"


class UnsafeImage(ImageFormatError):
    """Image data that parses but uses a feature IMS refuses."""

    _msg_fmt = "Refused %(format)s image: %(reason)s"


class FormatMismatch(ImageFormatError):
    _msg_fmt = "Image content is %(detected)s, not the declared %(declared)s"


class InvalidRange(IMSError):
    _msg_fmt = "Requested range %(range)s not satisfiable for %(size)s bytes"


class UnsupportedMediaType(IMSError):
    _msg_fmt = "Unsupported Content-Type %(content_type)s"


class TooLarge(IMSError):
    _msg_fmt = "Request entity is too large."


class QuotaExceeded(TooLarge):
    _msg_fmt = "Quota exceeded: %(what)s (limit %(limit)s)"


class StorageFull(TooLarge):
    _msg_fmt = "There is not enough space in store %(store)s"


class Gone(IMSError):
    _msg_fmt = "The resource is gone."


class Unavailable(IMSError):
    _msg_fmt = "The service is temporarily unavailable."


class StoreUnavailable(Unavailable):
    _msg_fmt = "Store %(store)s is unavailable: %(reason)s"


class ConfigError(IMSError):
    """Configuration that prevents the service from starting."""

    _msg_fmt = "Invalid configuration: %(reason)s"
