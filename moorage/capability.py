"""What a capability package (scan/, trust/, replication/, lifecycle/, hooks/, ...) hands to the
rest of Moorage: one :class:`Capability`, defined in the package's ``wiring.py`` and listed in
moorage/capabilities.py. Nothing else in the core names the package.

- ``setup(rt)`` runs once per process that builds a :class:`~moorage.runtime.Runtime` (the
  server's workers, ``moorage worker``, and command-line commands that need services): it builds
  the package's services (kept in ``rt.services[name]``), adds its content rules
  (``rt.ctx.rules``), subscribes to domain events (``rt.ctx.events``) and registers its job
  handlers and schedules (``rt.jobs``).
- ``job_kinds`` names those job kinds, so ``moorage jobs run KIND`` can check a kind without
  building a runner.
- ``api_ops(rt)`` returns its /api/v1 operations (moorage/api/routing.py ``Op``): they join the
  one route table, so they are dispatched, validated and described in the OpenAPI document like
  the core's.
- ``ui_pages(rt, ui)`` returns its web pages (a moorage/ui/pages.py ``PageGroup`` or several, with its
  navigation entry and its own template directory).
- ``cli(tree)`` adds its commands to the ``moorage`` command (moorage/cli: ``tree.top`` for a
  command of its own, ``tree.admin`` for ``moorage admin ...``).
- ``shutdown(rt)`` releases what setup opened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api.routing import Op
    from .runtime import Runtime
    from .ui.app import WebUI
    from .ui.pages import PageGroup


@dataclass(frozen=True)
class Capability:
    name: str
    setup: Callable[[Runtime], Awaitable[None]] | None = None
    job_kinds: tuple[str, ...] = ()
    api_ops: Callable[[Runtime], list[Op]] | None = None
    ui_pages: Callable[[Runtime, WebUI], PageGroup | Sequence[PageGroup]] | None = None
    cli: Callable[[Any], None] | None = None
    shutdown: Callable[[Runtime], Awaitable[None]] | None = None
