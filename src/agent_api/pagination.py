"""The one list envelope: `{items, total, page, page_size, total_pages}` with `total` the true count."""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, cast

from fastapi import Depends, Query
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import Select, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

MAX_PAGE_SIZE = 100

T = TypeVar("T")
M = TypeVar("M")


@dataclass(frozen=True)
class PageParams:
    page: int = 1
    page_size: int = 20

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


async def _page_params(  # async: a plain `def` dependency would run on the thread pool
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
) -> PageParams:
    return PageParams(page, page_size)


Pagination = Annotated[PageParams, Depends(_page_params)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int
    total_pages: int

    @classmethod
    def build(cls, items: Sequence[Any], total: int, params: PageParams) -> Page[T]:
        return cls(
            items=list(items),
            total=total,
            page=params.page,
            page_size=params.page_size,
            total_pages=math.ceil(total / params.page_size) if total else 0,
        )


async def fetch_page(session: AsyncSession, stmt: Select[M], params: PageParams) -> tuple[list[M], int]:
    """Rows of one page of `stmt` (already ordered) and the true total count."""
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await session.scalars(stmt.offset(params.offset).limit(params.page_size))).all()
    return list(rows), int(total or 0)


S = TypeVar("S", bound=BaseModel)


async def paged(
    session: AsyncSession,
    stmt: Select[Any],
    params: PageParams,
    read: type[S] | Callable[[list[Any]], Awaitable[list[S]]],
) -> Page[S]:
    """One page of `stmt` as the list envelope: where every list endpoint's page is built from its rows. `read` is
    the read model, or a function that reads a page of rows at once (one query for a whole page's extras)."""
    rows, total = await fetch_page(session, stmt, params)
    if isinstance(read, type):
        schema = cast(type[BaseModel], read)
        items: list[Any] = [schema.model_validate(r) for r in rows]
    else:
        items = list(await read(rows))
    return Page[Any].build(items, total, params)


@functools.cache
def _list_of(read: type[BaseModel]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[read])  # type: ignore[valid-type]


async def paged_rows(session: AsyncSession, stmt: Select[Any], params: PageParams, read: type[S]) -> Page[S]:
    """`paged` for a statement of one ORM entity whose read model takes only its columns: the page is read as plain
    rows (labelled with the entity's attribute names) and validated in one call, with no ORM object built, and the
    total is a `COUNT(*)` over the same conditions. For the busy lists; `paged` remains the general one."""
    columns = _labelled_columns(stmt.column_descriptions[0]["entity"])
    total = await session.scalar(stmt.with_only_columns(func.count(), maintain_column_froms=True).order_by(None))
    rows = (await session.execute(stmt.with_only_columns(*columns).offset(params.offset).limit(params.page_size))).all()
    items = _list_of(read).validate_python(rows, from_attributes=True)
    return Page[read].model_construct(  # type: ignore[valid-type]
        items=items,
        total=int(total or 0),
        page=params.page,
        page_size=params.page_size,
        total_pages=math.ceil(int(total or 0) / params.page_size) if total else 0,
    )


@functools.cache
def _labelled_columns(entity: type[Any]) -> tuple[Any, ...]:
    return tuple(column.label(attr.key) for attr in inspect(entity).column_attrs for column in attr.columns)


def page_of(items: Sequence[S], params: PageParams) -> Page[S]:
    """One page of a list held in memory (a catalogue)."""
    return Page[Any].build(items[params.offset : params.offset + params.page_size], len(items), params)
