"""Help that names what an option takes the way command-line tools do (TEXT, INTEGER, PATH, [table|json]).

typer 0.29 prints Python type names (``<str>``, ``<int range>``, ``<bool>`` on a
flag), which tell a shell user nothing and are not what man pages and other
click programs show. ``install()`` makes every argument and option of this
CLI describe its value in those words instead, a flag by nothing. One place,
called once by ``main.py``; commands keep declaring their options as usual.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, get_args

from typer.core import TyperArgument, TyperOption

WORDS: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "FLOAT", bool: "BOOLEAN", Path: "PATH", datetime: "DATETIME"}


def _word(annotation: Any) -> str:
    if annotation in WORDS:
        return WORDS[annotation]
    args = [a for a in get_args(annotation) if a is not type(None)]
    if len(args) == 1:  # Optional[X], list[X]
        return _word(args[0])
    return "VALUE"


def value_word(param: Any) -> str:
    """``TEXT``, ``INTEGER``, ``PATH``, ``[table|json]``; empty for a flag."""
    if isinstance(param, TyperOption) and (param.is_flag or param.count):
        return ""
    desc = param.type_descriptor
    if desc.is_choice:
        return "[" + "|".join(str(c.value if isinstance(c, Enum) else c) for c in desc.choices or ()) + "]"
    if desc.is_path:
        return "PATH"
    if desc.is_tuple:
        return " ".join(_word(a) for a in get_args(desc.annotation))
    return _word(desc.annotation)


def _display_type(self: Any, ctx: Any) -> str:
    return value_word(self)


def install() -> None:
    """Patch typer's two parameter classes (idempotent)."""
    TyperArgument.display_type = _display_type  # type: ignore[method-assign]
    TyperOption.display_type = _display_type  # type: ignore[method-assign]
