"""The hub's user roles, defined once for the API schema, the permission code and the CLI (which must not import
pydantic to show them in --help)."""

from __future__ import annotations

from typing import Literal

ROLES = ("root", "collaboration_admin", "organization_admin", "researcher", "viewer")
Role = Literal[ROLES]  # the same type as Literal["root", ...] spelled out
