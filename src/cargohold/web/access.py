"""What the current request may do, whichever way its caller proved who they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..auth.scopes import READ, METADATA, Principal, token_allows, token_allows_catalog


@dataclass(frozen=True, slots=True)
class Access:
    """Either a principal's live rights (Basic auth, robot token, anonymous) or a bearer token's claims."""

    principal: Principal | None
    claims: dict[str, Any] | None = None

    @property
    def subject(self) -> str:
        if self.claims is not None:
            return str(self.claims.get("sub", "-"))
        return self.principal.name if self.principal else "-"

    @property
    def authenticated(self) -> bool:
        return self.claims is not None or (self.principal is not None and self.principal.authenticated)

    def may(self, repository: str, action: str) -> bool:
        if self.claims is not None:
            return token_allows(self.claims.get("access") or [], repository, action)
        return self.principal is not None and self.principal.may(repository, action)

    def may_list(self, repository: str) -> bool:
        return self.may(repository, METADATA) or self.may(repository, READ)

    def may_catalog(self) -> bool:
        if self.claims is not None:
            return token_allows_catalog(self.claims.get("access") or [])
        return self.authenticated


UNRESTRICTED = Access(Principal("user", "-", admin=True))
