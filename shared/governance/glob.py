"""Glob patterns for tool names and the `matches` operator (API.md §4.2).

`*` matches any run of characters (including none), `?` exactly one character, everything
else (regex metacharacters, `[`, `\\`) is literal, and the whole name must match. Matching
is case-sensitive: MCP tool names are.

Why not `fnmatch` or a translated regex: `fnmatch` gives `[...]` a meaning the contract does
not, and a naive regex translation backtracks catastrophically on patterns such as
`*a*a*a*a*b` against long names, and a policy author (or a tool name chosen by an upstream)
should not be able to stall the proxy. Splitting the pattern on `*` and placing each piece
at its leftmost possible position is exact for this pattern language (a later piece never
benefits from an earlier piece sitting further right) and costs at most O(len(name) x
len(pattern)), with plain `str.find`/`startswith` doing the work for pieces without `?`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

GlobMatcher = Callable[[str], bool]


def _piece_at(piece: str, name: str, start: int) -> bool:
    """Does `piece` (which may hold `?`) match `name` exactly at `start`?"""
    if start < 0 or start + len(piece) > len(name):
        return False
    for offset, char in enumerate(piece):
        if char != "?" and name[start + offset] != char:
            return False
    return True


def _find_piece(piece: str, name: str, start: int, end: int) -> int:
    """Leftmost index i in [start, end - len(piece)] where `piece` matches, or -1."""
    if "?" not in piece:
        return name.find(piece, start, end)
    for index in range(start, end - len(piece) + 1):
        if _piece_at(piece, name, index):
            return index
    return -1


def _compile_general(head: str, middle: tuple[str, ...], tail: str) -> GlobMatcher:
    """`head*m1*m2*...*tail`: head anchored left, tail anchored right, the rest leftmost."""
    fixed = len(head) + len(tail) + sum(len(piece) for piece in middle)

    def match(name: str) -> bool:
        size = len(name)
        if size < fixed:
            return False
        if not _piece_at(head, name, 0) or not _piece_at(tail, name, size - len(tail)):
            return False
        position, end = len(head), size - len(tail)
        for piece in middle:
            found = _find_piece(piece, name, position, end)
            if found < 0:
                return False
            position = found + len(piece)
        return True

    return match


def _compile_star_only(head: str, middle: tuple[str, ...], tail: str) -> GlobMatcher | None:
    """Fast paths for `*`, `prefix*`, `*suffix` and `*infix*` (no `?`): str methods in C."""
    if not middle:
        if not head and not tail:
            return lambda name: True
        if not tail:
            return lambda name: name.startswith(head)
        if not head:
            return lambda name: name.endswith(tail)
    elif len(middle) == 1 and not head and not tail:
        only = middle[0]
        return lambda name: only in name
    return None


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> GlobMatcher:
    """A matcher for `pattern`, specialised for the shapes policies actually use.

    Cached because the same few patterns are matched on every call; bounded so patterns
    from many organizations cannot grow the cache without limit.
    """
    if "*" not in pattern:
        if "?" not in pattern:
            return lambda name: name == pattern
        return lambda name: len(name) == len(pattern) and _piece_at(pattern, name, 0)
    pieces = pattern.split("*")
    head, tail = pieces[0], pieces[-1]
    middle = tuple(piece for piece in pieces[1:-1] if piece)
    fast = None if "?" in pattern else _compile_star_only(head, middle, tail)
    return fast or _compile_general(head, middle, tail)


def glob_match(pattern: str, name: str) -> bool:
    """True when the whole of `name` matches the glob `pattern`."""
    return compile_glob(pattern)(name)
