"""The image life cycle as one explicit transition table."""

from __future__ import annotations

from ims import errors

QUEUED = "queued"
SAVING = "saving"
UPLOADING = "uploading"
IMPORTING = "importing"
ACTIVE = "active"
DEACTIVATED = "deactivated"
KILLED = "killed"
DELETED = "deleted"
PENDING_DELETE = "pending_delete"

TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({SAVING, UPLOADING, IMPORTING, ACTIVE, DELETED}),
    SAVING: frozenset({ACTIVE, KILLED, DELETED, QUEUED}),
    UPLOADING: frozenset({IMPORTING, QUEUED, DELETED}),
    IMPORTING: frozenset({ACTIVE, DELETED, QUEUED}),
    ACTIVE: frozenset({PENDING_DELETE, DELETED, DEACTIVATED}),
    DEACTIVATED: frozenset({ACTIVE, DELETED}),
    PENDING_DELETE: frozenset({DELETED, ACTIVE}),
    KILLED: frozenset({DELETED}),
    DELETED: frozenset(),
}

#: Leaving these for data-bearing states needs disk and container formats.
NEEDS_FORMATS_FROM = frozenset({QUEUED, UPLOADING})
NEEDS_FORMATS_TO = frozenset({SAVING, ACTIVE, IMPORTING})


def check_transition(
    current: str, target: str, disk_format: str | None, container_format: str | None
) -> None:
    """Raise unless an image may move from ``current`` to ``target``."""
    if target not in TRANSITIONS.get(current, frozenset()):
        raise errors.InvalidStatusTransition(current=current, target=target)
    if current in NEEDS_FORMATS_FROM and target in NEEDS_FORMATS_TO:
        if not disk_format or not container_format:
            raise errors.Invalid(
                "Properties disk_format and container_format must be set prior to saving data."
            )
