"""Changes made through the REST API and the web UI: each authorized and audited here, once.

Authorization asks AccessService (the registry's rules): repository changes need the role's
action on the repository (delete a tag or manifest: ``delete``; description, visibility,
permissions, delete the repository: ``admin``); an organization's teams, members, robots and
permissions need the admin role on the organization; organizations and users are created by
system administrators; a user manages their own profile, password and personal access tokens.
Validation and the database changes reuse moorage/auth/admin.py (shared with the command line).
Every change is written to the audit log before the call returns (``AuditLog.record_now``).

One module per area (repositories, organizations and teams, users, robots and tokens), each a
subclass of :class:`AdminService` (base.py: caller, audit, transactions, authorization helpers).
A new capability writes its own AdminService subclass in its own package rather than growing
these; ManagementService is the REST API's and the web UI's view of the areas here.
"""

from __future__ import annotations

from .base import AdminService, Caller
from .credentials import CredentialAdmin
from .organizations import OrganizationAdmin
from .repositories import RepositoryAdmin
from .users import UserAdmin


class ManagementService(RepositoryAdmin, OrganizationAdmin, UserAdmin, CredentialAdmin):
    """Every management area behind one object (they share AdminService's state)."""


__all__ = ["AdminService", "Caller", "ManagementService"]
