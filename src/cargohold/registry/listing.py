"""Tag lists and the repository catalog, paginated the distribution-spec way (``n``, ``last``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..oci.errors import NameUnknown
from ..oci.names import validate_name
from .stores import Stores


_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Page:
    items: list[str]
    more: bool  # another page follows; the caller renders the Link header


class ListingService:
    def __init__(self, stores: Stores) -> None:
        self._s = stores

    async def tags(self, repository: str, n: int | None, last: str | None) -> Page:
        validate_name(repository)
        found = await self._s.metadata.list_tags(repository, None if n is None else n + 1, last)
        if found is None:
            raise NameUnknown(detail={"name": repository})
        return page_of(found, n)

    async def catalog(self, n: int | None, last: str | None, visible: Callable[[str], bool] = lambda _: True) -> Page:
        """Repositories after ``last`` that ``visible`` admits; pages are filled across hidden names."""
        wanted = None if n is None else n + 1
        found: list[str] = []
        cursor = last
        while wanted is None or len(found) < wanted:
            batch = await self._s.metadata.catalog(_BATCH, cursor)
            found.extend(name for name in batch if visible(name))
            if len(batch) < _BATCH:
                break
            cursor = batch[-1]
        return page_of(found if wanted is None else found[:wanted], n)


def page_of(found: list[str], n: int | None) -> Page:
    if n is not None and len(found) > n:
        return Page(found[:n], True)
    return Page(found, False)
