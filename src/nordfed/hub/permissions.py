"""Who may do what. Scopes: own (a user's own tasks, results and studies), organization (its users and nodes),
collaboration (tasks and studies of collaborations that include the caller's organization). Root may do everything
except read other users' results, which are encrypted for their owner anyway."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from nordfed.hub.auth import Principal
from nordfed.hub.deps import forbidden
from nordfed.hub.models import Task


class Collaboration(Protocol):
    """A collaboration as the checks need it: the ORM row or the hub's cached view of it."""

    id: int

    @property
    def organization_ids(self) -> Collection[int]: ...


# Roles an organization admin may hand out inside its own organization; the rest need root.
ORG_ADMIN_GRANTABLE = frozenset({"organization_admin", "researcher", "viewer"})


def require_root(p: Principal, action: str) -> None:
    if not p.is_root:
        raise forbidden(f"only root may {action}")


def require_org_admin(p: Principal, organization_id: int, action: str) -> None:
    if p.is_root:
        return
    if not p.has("organization_admin") or p.organization_id != organization_id:
        raise forbidden(f"only root or an organization_admin of organization {organization_id} may {action}")


def can_see_collaboration(p: Principal, collab: Collaboration) -> bool:
    if p.kind == "node":
        return p.collaboration_id == collab.id
    return p.has("collaboration_admin") or p.organization_id in collab.organization_ids


def require_collaboration_member(p: Principal, collab: Collaboration) -> None:
    if not can_see_collaboration(p, collab):
        raise forbidden(f"your organization is not a member of collaboration {collab.id}")


def require_task_creator(p: Principal, collab: Collaboration) -> None:
    if not p.has("researcher"):
        raise forbidden("only researchers may create tasks")
    if not p.is_root and p.organization_id not in collab.organization_ids:
        raise forbidden(f"your organization is not a member of collaboration {collab.id}; you cannot create tasks")


def require_task_reader(p: Principal, task: Task, collab: Collaboration) -> None:
    if p.kind == "user" and task.owner_id == p.id:
        return
    require_collaboration_member(p, collab)


def require_results_reader(p: Principal, task: Task) -> None:
    if p.kind != "user" or task.owner_id != p.id:
        raise forbidden(f"only the owner of task {task.id} may read its results")


def require_task_canceller(p: Principal, task: Task, collab: Collaboration) -> None:
    if p.kind == "user" and (task.owner_id == p.id or p.is_root):
        return
    if p.has("collaboration_admin") and can_see_collaboration(p, collab):
        return
    raise forbidden(f"only the owner of task {task.id}, root or a collaboration_admin may cancel it")


def can_manage_user(p: Principal, organization_id: int, roles: Collection[str]) -> bool:
    """Root manages every user; an organization admin the users of its own organization that hold no role it could
    not grant itself (so it can never take over a root or collaboration_admin account)."""
    if p.is_root:
        return True
    return p.has("organization_admin") and p.organization_id == organization_id and set(roles) <= ORG_ADMIN_GRANTABLE


def require_collaboration_admin(p: Principal, collab: Collaboration, action: str) -> None:
    if not (p.has("collaboration_admin") and can_see_collaboration(p, collab)):
        raise forbidden(f"only root or a collaboration_admin may {action} collaboration {collab.id}")


def require_study_creator(p: Principal, collab: Collaboration) -> None:
    if p.has("collaboration_admin") and can_see_collaboration(p, collab):
        return
    if p.has("researcher") and p.organization_id in collab.organization_ids:
        return
    raise forbidden(
        f"only a collaboration_admin or a researcher of a member organization may create studies in collaboration "
        f"{collab.id}"
    )


def require_study_editor(p: Principal, created_by: int | None, study_id: int, collab: Collaboration) -> None:
    if p.kind == "user" and created_by == p.id and p.organization_id in collab.organization_ids:
        return
    if p.has("collaboration_admin") and can_see_collaboration(p, collab):
        return
    raise forbidden(f"only the creator of study {study_id}, root or a collaboration_admin may change it")
