"""Content-trust tables, on the shared metadata (migration trust_0001).

- ``trust_namespaces``: one row per namespace with trust settings (``*`` is the system default):
  its configuration ``version`` (bumped on every change of its keys, stores, identities, trust
  root or Notation policy), the operator's Sigstore ``trusted_root.json``, its Notation trust
  policy document and whether key signatures need a Rekor entry.
- ``trust_entries``: named trust entries of a namespace — cosign public keys (``key``), keyless
  identities (``keyless``), private CAs for cosign certificates (``pki``) and Notation trust
  stores (``notation-ca``, ``notation-signingAuthority``, ``notation-tsa``); ``spec`` holds the
  kind's fields (PEM text, identity and issuer, ...).
- ``trust_policies``: signed-only pull policies per target (``*``, an organization, or a
  repository ``org/name``).
- ``trust_artifacts``: each signature artifact found on push — the signature manifest (row of
  ``manifests``: deleting it deletes the artifact), the subject digest it signs and its form.
- ``trust_results``: one row per signature of an artifact and trust-configuration version
  (``"<version of *>.<version of the namespace>"``), i.e. per (subject digest, signature
  digest, trust-config version) — what enforcement and the views read.
- ``trust_state``: one row whose ``generation`` goes up with every change that may change a
  verdict (configuration, policy, a signature found, verified or removed); every node polls it
  to drop its in-process verdict cache (moorage/trust/service.py).
"""

from __future__ import annotations

import sqlalchemy as sa

from ..db.meta import Id, Timestamp, metadata

trust_namespaces = sa.Table(
    "trust_namespaces",
    metadata,
    sa.Column("namespace", sa.String(255), primary_key=True),
    sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("sigstore_trusted_root", sa.Text(), nullable=True),
    sa.Column("notation_policy", sa.Text(), nullable=True),
    # None: inherit the system default's setting (False when that is None too).
    sa.Column("require_tlog_for_keys", sa.Boolean(), nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
)

trust_entries = sa.Table(
    "trust_entries",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("namespace", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("spec", sa.JSON(), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.UniqueConstraint("namespace", "kind", "name"),
)

trust_policies = sa.Table(
    "trust_policies",
    metadata,
    sa.Column("target", sa.String(255), primary_key=True),
    sa.Column("require_signature", sa.Boolean(), nullable=False),
    sa.Column("signers", sa.JSON(), nullable=False),
    sa.Column("require_all", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("docker_reference", sa.String(512), nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=False),
)

trust_artifacts = sa.Table(
    "trust_artifacts",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column(
        "manifest_id", Id, sa.ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("signature_digest", sa.String(200), nullable=False),
    sa.Column("subject_digest", sa.String(200), nullable=False),
    sa.Column("form", sa.String(32), nullable=False),
    sa.Column("tag", sa.String(128), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint(
        "repository_id", "signature_digest", "subject_digest", name="uq_trust_artifacts_signature"
    ),
    sa.Index("ix_trust_artifacts_repository_id_subject_digest", "repository_id", "subject_digest"),
    sa.Index("ix_trust_artifacts_manifest_id", "manifest_id"),
)

trust_results = sa.Table(
    "trust_results",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "artifact_id", Id, sa.ForeignKey("trust_artifacts.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("config_version", sa.String(64), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),  # the signature's place in the artifact
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("verified", sa.Boolean(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("signer", sa.JSON(), nullable=True),
    sa.Column("matched", sa.JSON(), nullable=False),
    sa.Column("warnings", sa.JSON(), nullable=False),
    sa.Column("signed_at", Timestamp, nullable=True),
    sa.Column("docker_reference", sa.String(512), nullable=True),
    sa.Column("verified_at", Timestamp, nullable=False),
    sa.UniqueConstraint("artifact_id", "config_version", "position"),
)

trust_state = sa.Table(
    "trust_state",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("generation", sa.BigInteger(), nullable=False, server_default="0"),
)
