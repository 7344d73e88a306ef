"""Studies (as in Vantage6): a named subset of a collaboration's organizations that tasks can belong to.

A task tagged with a study runs only at nodes of the study's organizations. Collaboration admins and researchers of
member organizations create studies; everyone who can read the collaboration reads them; the creator, root or a
collaboration admin changes them; a study with tasks is never deleted (its tasks are the record).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.orm import Session

from nordfed.hub.auth import Principal
from nordfed.hub.deps import CollabInfo, CurrentPrincipal, CurrentUser, Hub, HubState, PathId, not_found
from nordfed.hub.models import Organization, Study, Task, as_utc, collaboration_organization, study_organization
from nordfed.hub.permissions import require_collaboration_member, require_study_creator, require_study_editor
from nordfed.hub.schemas import MAX_ID, StudyCreate, StudyDetail, StudyOut, StudyPatch

router = APIRouter(prefix="/studies", tags=["studies"])

# Built once (POST /tasks runs it): constructing a SQLAlchemy statement costs more CPU than running it.
_STUDY_MEMBERS = (
    select(Study.collaboration_id, study_organization.c.organization_id)
    .outerjoin(study_organization, study_organization.c.study_id == Study.id)
    .where(Study.id == bindparam("study_id"))
)


def _out(study: Study) -> StudyOut:
    return StudyOut(
        id=study.id,
        collaboration_id=study.collaboration_id,
        name=study.name,
        description=study.description,
        organization_ids=study.organization_ids,
        created_by=study.created_by,
        created_at=as_utc(study.created_at),
    )


def _members(s: Session, collab: CollabInfo, ids: list[int] | None) -> list[Organization]:
    """The study's organizations: ``ids`` (all of the collaboration's when None), which must be members."""
    wanted = set(collab.organization_ids) if ids is None else set(ids)
    outside = sorted(wanted - collab.organization_ids)
    if outside:
        raise HTTPException(400, f"organizations {outside} are not members of collaboration {collab.id}")
    return list(s.scalars(select(Organization).where(Organization.id.in_(sorted(wanted)))))


def _refuse_taken_name(s: Session, collaboration_id: int, name: str) -> None:
    taken = select(Study.id).where(Study.collaboration_id == collaboration_id, Study.name == name)
    if s.scalar(taken) is not None:
        raise HTTPException(409, f"collaboration {collaboration_id} already has a study named {name!r}")


def _load(hub: HubState, s: Session, study_id: int, caller: Principal) -> tuple[Study, CollabInfo]:
    study = s.get(Study, study_id)
    if study is None:
        raise not_found("study", study_id)
    collab = hub.collaboration(s, study.collaboration_id)
    require_collaboration_member(caller, collab)
    return study, collab


def check_task_targets(
    con: Connection, collaboration_id: int, nodes: dict[int, tuple[int, bool]], study_id: int | None
) -> None:
    """A new task's nodes (id → (organization id, disabled)) must be enabled and, for a task of a study, belong to
    the study's organizations; the study must be one of the task's collaboration. Called by POST /tasks after its
    own node checks."""
    off = sorted(n for n, (_, disabled) in nodes.items() if disabled)
    if off:
        raise HTTPException(400, f"nodes {off} are disabled")
    if study_id is None:
        return
    rows = con.execute(_STUDY_MEMBERS, {"study_id": study_id}).all()
    if not rows:
        raise not_found("study", study_id)
    if rows[0][0] != collaboration_id:
        raise HTTPException(400, f"study {study_id} belongs to collaboration {rows[0][0]}, not {collaboration_id}")
    allowed = {org for _, org in rows}
    outside = sorted(n for n, (org, _) in nodes.items() if org not in allowed)
    if outside:
        raise HTTPException(400, f"nodes {outside} belong to organizations outside study {study_id}")


@router.post("", response_model=StudyOut, status_code=201)
def create_study(body: StudyCreate, hub: Hub, caller: CurrentUser) -> StudyOut:
    with hub.tx() as s:
        collab = hub.collaboration(s, body.collaboration_id)
        require_study_creator(caller, collab)
        orgs = _members(s, collab, body.organization_ids)
        _refuse_taken_name(s, collab.id, body.name)
        study = Study(
            collaboration_id=collab.id,
            name=body.name,
            description=body.description,
            created_by=caller.id,
            organizations=orgs,
        )
        s.add(study)
        s.flush()
        return _out(study)


@router.get("", response_model=list[StudyOut])
def list_studies(
    hub: Hub, caller: CurrentPrincipal, collaboration_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None
) -> list[StudyOut]:
    """The studies of the collaborations the caller can read."""
    with hub.tx() as s:
        query = select(Study).order_by(Study.id)
        if collaboration_id is not None:
            query = query.where(Study.collaboration_id == collaboration_id)
        if caller.kind == "node":
            query = query.where(Study.collaboration_id == caller.collaboration_id)
        elif not caller.has("collaboration_admin"):
            member_of = select(collaboration_organization.c.collaboration_id).where(
                collaboration_organization.c.organization_id == caller.organization_id
            )
            query = query.where(Study.collaboration_id.in_(member_of))
        return [_out(study) for study in s.scalars(query)]


@router.get("/{study_id}", response_model=StudyDetail)
def get_study(study_id: PathId, hub: Hub, caller: CurrentPrincipal) -> StudyDetail:
    """The study with its number of tasks, in total and by status."""
    with hub.tx() as s:
        study, _ = _load(hub, s, study_id, caller)
        counts = s.execute(select(Task.status, func.count()).where(Task.study_id == study_id).group_by(Task.status))
        by_status = {status: n for status, n in counts}
        return StudyDetail(**_out(study).model_dump(), task_count=sum(by_status.values()), tasks_by_status=by_status)


@router.patch("/{study_id}", response_model=StudyOut)
def patch_study(study_id: PathId, body: StudyPatch, hub: Hub, caller: CurrentUser) -> StudyOut:
    """Rename, describe or change the organizations (a subset of the collaboration's; later tasks are checked
    against it, earlier ones stay as they ran)."""
    with hub.tx() as s:
        study, collab = _load(hub, s, study_id, caller)
        require_study_editor(caller, study.created_by, study_id, collab)
        if body.name is not None and body.name != study.name:
            _refuse_taken_name(s, collab.id, body.name)
            study.name = body.name
        if body.description is not None:
            study.description = body.description
        if body.organization_ids is not None:
            study.organizations = _members(s, collab, body.organization_ids)
        s.flush()
        return _out(study)


@router.delete("/{study_id}", response_model=StudyOut)
def delete_study(study_id: PathId, hub: Hub, caller: CurrentUser) -> StudyOut:
    with hub.tx() as s:
        study, collab = _load(hub, s, study_id, caller)
        require_study_editor(caller, study.created_by, study_id, collab)
        if s.scalar(select(Task.id).where(Task.study_id == study_id).limit(1)) is not None:
            raise HTTPException(409, f"study {study_id} has tasks and cannot be deleted")
        out = _out(study)
        s.delete(study)
        return out
