"""Pydantic request and response models: every value crossing the API boundary is validated here.

Requests are strict (no "12" → 12 coercion) and every string is bounded and checked for characters a database
would refuse (NUL, lone surrogates), so hostile input ends as a 422, never as a driver error.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from nordfed.hub.roles import Role

MAX_ID = 2_147_483_647  # PostgreSQL integer
MAX_CIPHERTEXT = 64 * 1024 * 1024  # characters of base64 per run input or result
MAX_LOG = 1024 * 1024  # characters kept per run log (older text is dropped)

RunStatus = Literal["pending", "active", "completed", "failed", "refused", "cancelled"]
TaskStatus = Literal["pending", "active", "completed", "failed", "cancelled"]
FINISHED = frozenset({"completed", "failed", "refused", "cancelled"})
MAX_LISTED_ERRORS = 10  # validation errors spelled out per refusal (1000 bad list items: the first few, a count)
MAX_QUOTED = 64  # characters of a client's own text (a key, an unknown op) quoted in an error message


def clipped(text: str, limit: int = MAX_QUOTED) -> str:
    """``text`` cut to ``limit`` characters: error messages may quote what a client sent, never all of it."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


def validation_errors(errors: Sequence[Mapping[str, Any]], whole: str) -> tuple[str, list[dict[str, Any]]]:
    """Pydantic's errors as one sentence naming each field (``whole`` for the request itself) and as
    ``{loc, msg, type}`` items. Values are never repeated; keys are, cut short: an unknown field's key is the
    client's own (it may be huge)."""
    items = [
        {
            "loc": [clipped(part) if isinstance(part, str) else part for part in e.get("loc", ())],
            "msg": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in errors[:MAX_LISTED_ERRORS]
    ]
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}" for e in items) or "invalid request"
    if len(errors) > len(items):
        detail += f"; and {len(errors) - len(items)} more errors"
    return detail, items


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode (no lone surrogates)") from exc
    return value


def _public_key(value: str) -> str:
    try:
        raw = base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("must be base64") from exc
    if len(raw) != 32:
        raise ValueError(f"must encode a 32-byte public key, got {len(raw)} bytes")
    return value


Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_storable)]
Short = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(_storable)
]
Country = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), AfterValidator(_storable)
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_storable)]
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=1024), AfterValidator(_storable)]
LongText = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(_storable)]
LogText = Annotated[str, StringConstraints(max_length=MAX_LOG), AfterValidator(_storable)]
Ciphertext = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CIPHERTEXT, pattern=r"^[A-Za-z0-9+/_=-]+$")]
# The pattern only documents (in OpenAPI) what _public_key accepts: 32 bytes are 43 base64 digits and one "=".
# _public_key does the checking, with a clearer message than a pattern mismatch would give.
PublicKey = Annotated[
    str,
    StringConstraints(min_length=40, max_length=64),
    AfterValidator(_public_key),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z0-9+/_-]{43}=$"}),
]


class Request(BaseModel):
    model_config = ConfigDict(strict=True)


class Patch(Request):
    """A partial update: absent (or null) fields stay as they are; unknown fields are refused, so a typo such as
    ``{"disable": true}`` is a 422 rather than a silent no-op."""

    model_config = ConfigDict(strict=True, extra="forbid")


# ---------------------------------------------------------------------------------------------------- requests
class TokenRequest(Request):
    username: Name
    password: Password


class NodeTokenRequest(Request):
    # checked like every string: its key id goes into a query, and PostgreSQL refuses NUL (a 500 before)
    api_key: Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_storable)]


class OrganizationCreate(Request):
    name: Name
    country: Country


Roles = Annotated[list[Role], Field(min_length=1, max_length=5)]
OrganizationIds = Annotated[list[Id], Field(min_length=1, max_length=1000)]


class OrganizationPatch(Patch):
    name: Name | None = None
    country: Country | None = None


class UserCreate(Request):
    username: Name
    password: NewPassword
    organization_id: Id
    roles: Roles


class UserPatch(Patch):
    roles: Roles | None = None
    password: NewPassword | None = None
    current_password: Password | None = None  # required when users change their own password
    disabled: bool | None = None


class KeysUpdate(Request):
    encryption_key: PublicKey
    signing_key: PublicKey


class CollaborationCreate(Request):
    name: Name
    organization_ids: OrganizationIds


class CollaborationPatch(Patch):
    name: Name | None = None
    add_organization_ids: OrganizationIds | None = None
    remove_organization_ids: OrganizationIds | None = None


class NodeCreate(Request):
    name: Name
    organization_id: Id
    collaboration_id: Id


class NodePatch(Patch):
    name: Name | None = None
    disabled: bool | None = None


class StudyCreate(Request):
    collaboration_id: Id
    name: Name
    description: LongText | None = None
    organization_ids: OrganizationIds | None = None  # default: every organization of the collaboration


class StudyPatch(Patch):
    name: Name | None = None
    description: LongText | None = None
    organization_ids: OrganizationIds | None = None


class RunInput(Request):
    node_id: Id
    input: Ciphertext


class TaskCreate(Request):
    collaboration_id: Id
    algorithm: Name
    version: Short
    code_hash: Name
    description: LongText | None = None
    study_id: Id | None = None
    runs: Annotated[list[RunInput], Field(min_length=1, max_length=10_000)]


class RunPatch(Patch):
    status: Literal["completed", "failed", "refused"] | None = None
    progress: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    log: LogText | None = None
    result: Ciphertext | None = None


# --------------------------------------------------------------------------------------------------- responses
class ErrorOut(BaseModel):
    """Every refusal (4xx, 503): one readable sentence."""

    detail: str


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(ErrorOut):
    """422: the sentence, and the same errors one by one (values are never echoed back; at most
    MAX_LISTED_ERRORS, the sentence counts the rest)."""

    errors: list[ValidationErrorItem]


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    user_id: int
    organization_id: int
    roles: list[str]


class NodeTokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    node_id: int
    name: str
    organization_id: int
    collaboration_id: int


class HealthOut(BaseModel):
    status: str
    version: str


class OrganizationOut(BaseModel):
    id: int
    name: str
    country: str


class UserOut(BaseModel):
    id: int
    username: str
    organization_id: int
    roles: list[str]
    encryption_key: str | None = None
    signing_key: str | None = None
    disabled: bool = False


class KeysOut(BaseModel):
    id: int
    encryption_key: str | None
    signing_key: str | None


class CollaborationOut(BaseModel):
    id: int
    name: str
    organization_ids: list[int]


class NodeOut(BaseModel):
    id: int
    name: str
    organization_id: int
    collaboration_id: int
    encryption_key: str | None
    signing_key: str | None
    status: Literal["online", "offline"]
    last_seen: datetime | None
    disabled: bool = False


class NodeCreated(BaseModel):
    id: int
    name: str
    organization_id: int
    collaboration_id: int
    api_key: str


class RevokedOut(BaseModel):
    revoked: int  # tokens revoked


class SigningKeyOut(BaseModel):
    signing_key: str
    registered_at: datetime  # first registration


class LedgerRestartOut(BaseModel):
    """A closed epoch of a node's hub ledger copy: who closed it, when, and its last entry."""

    node_id: int
    epoch: int  # the epoch closed; the node pushes into epoch + 1 afterwards
    head_seq: int
    head_hash: str
    restarted_by: int | None  # null once that user is deleted; the name stays
    restarted_by_name: str
    restarted_at: datetime


class LedgerCopyOut(BaseModel):
    """GET /nodes/{id}/ledger (documentation: the hub writes this JSON itself, entries as stored)."""

    node_id: int
    epoch: int  # the epoch these entries belong to
    epochs: int  # how many there are (the current one is the last)
    signing_keys: list[SigningKeyOut]  # every key the node has registered: verify the entries with these
    restarts: list[LedgerRestartOut]
    entries: list[dict]


class StudyOut(BaseModel):
    id: int
    collaboration_id: int
    name: str
    description: str | None
    organization_ids: list[int]
    created_by: int | None
    created_at: datetime


class StudyDetail(StudyOut):
    task_count: int
    tasks_by_status: dict[str, int]


class SessionOut(BaseModel):
    requeued: int
    failed: int


class RunOut(BaseModel):
    id: int
    node_id: int
    node_name: str
    status: RunStatus
    progress: float
    log: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    has_result: bool


class TaskOut(BaseModel):
    id: int
    collaboration_id: int
    algorithm: str
    version: str
    code_hash: str
    description: str | None
    owner_id: int
    status: TaskStatus
    created_at: datetime
    runs: list[RunOut]
    study_id: int | None = None


class ResultOut(BaseModel):
    run_id: int
    node_id: int
    node_name: str
    status: RunStatus
    log: str
    result: str | None


class RunAssignment(BaseModel):
    run_id: int
    task_id: int
    collaboration_id: int
    algorithm: str
    version: str
    code_hash: str
    owner_id: int
    input: str


class RunState(BaseModel):
    id: int
    task_id: int
    status: RunStatus
    progress: float
    attempts: int
