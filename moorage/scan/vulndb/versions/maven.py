"""Maven version order (Maven's ComparableVersion, as its documentation describes it).

A version splits into items at ``.`` and ``-`` and at every change between digits and letters
(a ``-`` or such a change opens a nested list); numbers compare numerically, qualifiers by rank
(``alpha`` = ``a1`` < ``beta`` = ``b1`` < ``milestone`` = ``m1`` < ``rc`` = ``cr`` <
``snapshot`` < release (``""``, ``ga``, ``final``, ``release``) < ``sp``, unknown qualifiers
after them, alphabetically), trailing zeros and empty qualifiers are dropped (a release qualifier inside too: ``1-ga-1`` =
``1-1``). Tested on
osv-scalibr's Maven fixtures.
"""

from __future__ import annotations

from functools import cmp_to_key
from typing import Union

_QUALIFIERS = ("alpha", "beta", "milestone", "rc", "snapshot", "", "sp")
_ALIASES = {"ga": "", "final": "", "release": "", "cr": "rc"}
_RELEASE = str(_QUALIFIERS.index(""))

Item = Union[int, "_Str", list["Item"]]


class _Str:
    __slots__ = ("value",)

    def __init__(self, value: str, followed_by_digit: bool) -> None:
        if followed_by_digit and len(value) == 1:
            value = {"a": "alpha", "b": "beta", "m": "milestone"}.get(value, value)
        self.value = _ALIASES.get(value, value)

    def comparable(self) -> str:
        try:
            return str(_QUALIFIERS.index(self.value))
        except ValueError:
            return f"{len(_QUALIFIERS)}-{self.value}"


def _is_null(item: Item) -> bool:
    if isinstance(item, int):
        return item == 0
    if isinstance(item, _Str):
        return item.value == ""
    return not item


def _parse_item(digit: bool, text: str, followed_by_digit: bool = False) -> Item:
    return int(text) if digit else _Str(text, followed_by_digit)


def _normalize(items: list[Item]) -> None:
    i = len(items) - 1
    while i >= 0:
        last = items[i]
        if _is_null(last):
            nxt = items[i + 1] if i + 1 < len(items) else None
            if isinstance(last, _Str) and isinstance(nxt, list):
                items[i : i + 2] = nxt  # "1-ga-1" is "1-1": a release qualifier inside is dropped
            else:
                del items[i]
        elif not isinstance(last, list):
            break
        i -= 1


def parse(version: str) -> list[Item]:
    v = version.strip().lower()
    root: list[Item] = []
    lst = root
    stack = [root]
    digit = False
    start = 0
    for i, c in enumerate(v):
        if c == ".":
            lst.append(0 if i == start else _parse_item(digit, v[start:i]))
            start = i + 1
        elif c == "-":
            lst.append(0 if i == start else _parse_item(digit, v[start:i]))
            start = i + 1
            new: list[Item] = []
            lst.append(new)
            lst = new
            stack.append(lst)
        elif c.isdigit():
            if not digit and i > start:
                lst.append(_Str(v[start:i], True))
                start = i
                new = []
                lst.append(new)
                lst = new
                stack.append(lst)
            digit = True
        else:
            if digit and i > start:
                lst.append(int(v[start:i]))
                start = i
                new = []
                lst.append(new)
                lst = new
                stack.append(lst)
            digit = False
    if len(v) > start:
        lst.append(_parse_item(digit, v[start:]))
    while stack:
        _normalize(stack.pop())
    return root


def _cmp(a: Item | None, b: Item | None) -> int:
    """ComparableVersion's Item.compareTo, *a* never None unless both are."""
    if a is None:
        return 0 if b is None else -_cmp(b, None)
    if isinstance(a, int):
        if b is None:
            return 0 if a == 0 else 1
        if isinstance(b, int):
            return (a > b) - (a < b)
        return 1
    if isinstance(a, _Str):
        if b is None:
            x, y = a.comparable(), _RELEASE
            return (x > y) - (x < y)
        if isinstance(b, int):
            return -1
        if isinstance(b, _Str):
            x, y = a.comparable(), b.comparable()
            return (x > y) - (x < y)
        return -1
    # a is a list
    if b is None:
        return 0 if not a else _cmp(a[0], None)
    if isinstance(b, int):
        return -1
    if isinstance(b, _Str):
        return 1
    for i in range(max(len(a), len(b))):
        left = a[i] if i < len(a) else None
        right = b[i] if i < len(b) else None
        r = -_cmp(right, None) if left is None else _cmp(left, right)
        if r:
            return r
    return 0


def compare(a: str, b: str) -> int:
    return _cmp(parse(a), parse(b))


key = cmp_to_key(compare)
