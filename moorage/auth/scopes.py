"""Docker token scopes (``repository:acme/api:pull,push``, ``registry:catalog:*``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..oci.names import valid_name

PULL, PUSH, DELETE, ADMIN = "pull", "push", "delete", "admin"
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "read": frozenset({PULL}),
    "write": frozenset({PULL, PUSH}),
    "admin": frozenset({PULL, PUSH, DELETE, ADMIN}),
}
ROLES = tuple(ROLE_ACTIONS)
REPOSITORY_ACTIONS = frozenset({PULL, PUSH, DELETE, ADMIN})


def role_rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


@dataclass(frozen=True, slots=True)
class Scope:
    type: str  # "repository" | "registry"
    name: str
    actions: frozenset[str]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"

    def to_claim(self) -> dict[str, object]:
        return {"type": self.type, "name": self.name, "actions": sorted(self.actions)}


def parse_scopes(values: list[str]) -> list[Scope]:
    """Parse scope parameters (each may hold several, space-separated); ignore malformed ones."""
    out: list[Scope] = []
    for value in values:
        for item in value.split():
            scope = _parse_one(item)
            if scope is not None:
                out.append(scope)
    return out[:50]


def _parse_one(item: str) -> Scope | None:
    if len(item) > 600:
        return None
    parts = item.split(":")
    if len(parts) < 3:
        return None
    type_, actions_s = parts[0], parts[-1]
    name = ":".join(parts[1:-1])
    if "(" in type_:  # resource class, e.g. repository(plugin)
        type_ = type_.split("(", 1)[0]
    actions = frozenset(a for a in actions_s.split(",") if a)
    if type_ == "repository":
        if not valid_name(name):
            return None
        if "*" in actions:
            actions = REPOSITORY_ACTIONS
        return Scope("repository", name, actions & REPOSITORY_ACTIONS)
    if type_ == "registry" and name == "catalog":
        return Scope("registry", "catalog", frozenset({"*"}) if actions else frozenset())
    return None
