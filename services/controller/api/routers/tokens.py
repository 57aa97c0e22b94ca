"""``/api/v1/tokens``: API tokens of the caller's subtree, for admins. ``POST`` issues one (the
answer is the only time the token is shown), ``GET`` lists them (never the token or its hash),
``DELETE /tokens/{id}`` revokes one at once, on every controller."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Response
from sqlmodel import Session

from services.controller.api.auth import Principal, require_admin
from services.controller.api.deps import Paging, get_now, get_paging, get_session, get_settings, load_scope
from services.controller.api.schemas.common import Page
from services.controller.api.schemas.tokens import TokenCreate, TokenCreated, TokenPublic
from services.controller.crud import tokens as crud
from shared.enums import Role
from shared.models import ApiToken
from shared.settings import Settings

router = APIRouter(prefix="/tokens", tags=["tokens"], dependencies=[Depends(require_admin)])


def public(token: ApiToken, *, now: datetime) -> TokenPublic:
    return TokenPublic(id=token.id, name=token.name, role=Role(token.role), domain_id=token.domain_id,
                       created_at=token.created_at, expires_at=token.expires_at, revoked_at=token.revoked_at,
                       last_used_at=token.last_used_at, state=crud.state_of(token, now=now))


@router.post("", response_model=TokenCreated, status_code=201)
def create_token(body: TokenCreate, response: Response, session: Session = Depends(get_session),
                 settings: Settings = Depends(get_settings), principal: Principal = Depends(require_admin),
                 now: datetime = Depends(get_now)):
    """A token for ``domain_id`` (default: the caller's home domain) and its subdomains, with a role
    no higher than the caller's. Keep the answer's ``token``: it is not shown again."""
    reach = load_scope(session, principal.domain_id)
    home = load_scope(session, body.domain_id or principal.domain_id, within=principal.domain_id)
    days = body.lifetime_days or settings.token_lifetime_days
    token, row = crud.issue_token(session, role=body.role, name=body.name, home=home,
                                  lifetime=timedelta(days=days), now=now,
                                  issuer=crud.Issuer(reach=reach, role=principal.role))
    session.commit()
    response.headers["Cache-Control"] = "no-store"
    return TokenCreated(**public(row, now=now).model_dump(), token=token)


@router.get("", response_model=Page[TokenPublic])
def list_tokens(session: Session = Depends(get_session), paging: Paging = Depends(get_paging),
                principal: Principal = Depends(require_admin), now: datetime = Depends(get_now)):
    """The tokens homed in the caller's subtree, newest first, revoked and expired ones included."""
    rows, total = crud.list_tokens(session, reach=load_scope(session, principal.domain_id), offset=paging.offset,
                                   limit=paging.limit)
    return Page[TokenPublic](items=[public(t, now=now) for t in rows], total=total, offset=paging.offset,
                             limit=paging.limit)


@router.delete("/{token_id}", status_code=204, response_class=Response)
def revoke_token(token_id: uuid.UUID, session: Session = Depends(get_session),
                 principal: Principal = Depends(require_admin), now: datetime = Depends(get_now)):
    """Revoke the token: its next request gets 401 token_revoked, on every controller."""
    crud.revoke_token(session, token_id=token_id, reach=load_scope(session, principal.domain_id), now=now)
    session.commit()
    return Response(status_code=204)
