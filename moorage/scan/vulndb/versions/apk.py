"""Alpine (apk-tools) version order.

Written from apk-tools' documented version grammar (its code is GPL): ``digits{.digits}
[letter]{_suffix[number]}[~hash][-rN]``. Tokens are compared in turn: numbers numerically (a
component after a dot that starts with ``0`` compares as a decimal fraction: ``1.01 < 1.1``,
``8.2.0 < 8.2.001``), a letter by its code, suffixes by rank (``_alpha < _beta < _pre < _rc`` <
release < ``_cvs < _svn < _git < _hg < _p``), a commit hash as text, then the revision. When
one version runs out first, the other is greater unless what follows is a pre-release suffix.
A version that stops parsing compares as far as it parsed (then an invalid tail). Tested on
apk-tools' own vectors and osv-scalibr's (tests/data/vulndb/versions/apk*.json).
"""

from __future__ import annotations

_PRE = ("alpha", "beta", "pre", "rc")
_POST = ("cvs", "svn", "git", "hg", "p")

# token kinds, in the order they may appear
INVALID, DIGIT_OR_ZERO, DIGIT, LETTER, SUFFIX, SUFFIX_NO, HASH, REVISION_NO, END = range(-1, 8)

Token = tuple[int, int, str]


def _read(v: str, i: int, kind: int) -> tuple[Token, int]:
    """The token of *kind* at *i*: ((kind, value, text), next index); kind INVALID on error."""
    n = len(v)
    if kind in (DIGIT_OR_ZERO, DIGIT, SUFFIX_NO, REVISION_NO):
        s = i
        while i < n and v[i].isascii() and v[i].isdigit():
            i += 1
        text = v[s:i]
        if not text:
            return (INVALID, 0, ""), i
        return (kind, int(text or "0"), text), i
    if kind == LETTER:
        return (LETTER, ord(v[i]), v[i]), i + 1
    if kind == SUFFIX:
        for rank, name in enumerate(_PRE):
            if v.startswith(name, i):
                return (SUFFIX, rank - len(_PRE), name), i + len(name)
        for rank, name in enumerate(_POST):
            if v.startswith(name, i):
                return (SUFFIX, rank + 1, name), i + len(name)
        return (INVALID, 0, ""), i
    if kind == HASH:
        s = i
        while i < n and v[i] in "0123456789abcdef":
            i += 1
        return ((HASH, 0, v[s:i]) if i > s else (INVALID, 0, "")), i
    return (INVALID, 0, ""), i


def _next_kind(v: str, i: int, prev: int) -> tuple[int, int]:
    """The kind of the token after one of kind *prev*, from the separator at *i*."""
    c = v[i]
    if prev in (DIGIT, DIGIT_OR_ZERO) and c.isascii() and c.islower():
        nxt = LETTER
    elif prev == SUFFIX and c.isdigit():
        nxt = SUFFIX_NO
    else:
        if c == ".":
            nxt = DIGIT_OR_ZERO
        elif c == "_":
            nxt = SUFFIX
        elif c == "~":
            nxt = HASH
        elif c == "-" and v.startswith("-r", i):
            nxt, i = REVISION_NO, i + 1
        else:
            return INVALID, i
        i += 1
    if (nxt < prev or (nxt == prev and nxt in (HASH, REVISION_NO))) and not (
        (nxt == DIGIT_OR_ZERO and prev == DIGIT) or (nxt == SUFFIX and prev == SUFFIX_NO)
    ):
        return INVALID, i
    return nxt, i


def tokens(v: str) -> list[Token]:
    """The version's tokens, ending with an END or an INVALID token."""
    out: list[Token] = []
    if not v or not v[0].isdigit():
        return [(INVALID, 0, "")]
    i, kind = 0, DIGIT
    while True:
        tok, i = _read(v, i, kind)
        out.append(tok)
        if tok[0] == INVALID:
            return out
        if i >= len(v):
            out.append((END, 0, ""))
            return out
        kind, i = _next_kind(v, i, tok[0])
        if kind == INVALID:
            out.append((INVALID, 0, ""))
            return out


def valid(v: str) -> bool:
    return tokens(v)[-1][0] == END


def _value_cmp(a: Token, b: Token) -> int:
    if a[0] == DIGIT_OR_ZERO and (a[2].startswith("0") or b[2].startswith("0")):
        return (a[2] > b[2]) - (a[2] < b[2])  # decimal fractions: compare the digits as text
    if a[0] == HASH:
        return (a[2] > b[2]) - (a[2] < b[2])
    return (a[1] > b[1]) - (a[1] < b[1])


def compare(a: str, b: str) -> int:
    ta, tb = tokens(a), tokens(b)
    k = 0
    while True:
        x, y = ta[k], tb[k]
        if x[0] != y[0]:
            break
        if x[0] in (END, INVALID):
            return 0
        c = _value_cmp(x, y)
        if c:
            return c
        k += 1
    # one version has a component the other has not (or ends there)
    if x[0] == SUFFIX and x[1] < 0:
        return -1
    if y[0] == SUFFIX and y[1] < 0:
        return 1
    return -1 if x[0] > y[0] else 1
