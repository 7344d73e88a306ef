"""Organizations: hospitals, registries, universities. Created by root; readable by every principal; renamed by
root or their own organization admin."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from nordfed.hub.deps import CurrentPrincipal, CurrentUser, Hub, PathId, not_found
from nordfed.hub.models import Organization
from nordfed.hub.permissions import require_org_admin, require_root
from nordfed.hub.schemas import OrganizationCreate, OrganizationOut, OrganizationPatch

router = APIRouter(prefix="/organizations", tags=["organizations"])


def _out(o: Organization) -> OrganizationOut:
    return OrganizationOut(id=o.id, name=o.name, country=o.country)


@router.post("", response_model=OrganizationOut, status_code=201)
def create_organization(body: OrganizationCreate, hub: Hub, user: CurrentUser) -> OrganizationOut:
    require_root(user, "create organizations")
    with hub.tx() as s:
        if s.scalar(select(Organization.id).where(Organization.name == body.name)) is not None:
            raise HTTPException(409, f"an organization named {body.name!r} already exists")
        org = Organization(name=body.name, country=body.country)
        s.add(org)
        s.flush()
        return _out(org)


@router.get("", response_model=list[OrganizationOut])
def list_organizations(hub: Hub, _: CurrentPrincipal) -> list[OrganizationOut]:
    with hub.tx() as s:
        return [_out(o) for o in s.scalars(select(Organization).order_by(Organization.id))]


@router.get("/{organization_id}", response_model=OrganizationOut)
def get_organization(organization_id: PathId, hub: Hub, _: CurrentPrincipal) -> OrganizationOut:
    with hub.tx() as s:
        org = s.get(Organization, organization_id)
        if org is None:
            raise not_found("organization", organization_id)
        return _out(org)


@router.patch("/{organization_id}", response_model=OrganizationOut)
def patch_organization(
    organization_id: PathId, body: OrganizationPatch, hub: Hub, caller: CurrentUser
) -> OrganizationOut:
    require_org_admin(caller, organization_id, "change it")
    with hub.tx() as s:
        org = s.get(Organization, organization_id)
        if org is None:
            raise not_found("organization", organization_id)
        if body.name is not None and body.name != org.name:
            if s.scalar(select(Organization.id).where(Organization.name == body.name)) is not None:
                raise HTTPException(409, f"an organization named {body.name!r} already exists")
            org.name = body.name
        if body.country is not None:
            org.country = body.country
        return _out(org)
