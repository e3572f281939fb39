"""Manifests, tags, referrers and the catalog."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import catalog_queries as cq
from ..db import queries as q
from ..db import writepath as wp
from ..db.conflicts import retry_conflicts
from ..db.inline import NotInline
from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.manifest import ManifestError, ParsedManifest, parse_manifest
from ..oci.names import namespace_of
from .context import ServiceContext
from .errors import (
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    TooLarge,
)
from .events import ManifestDeleted, ManifestPushed, TagDeleted
from .rules import ManifestRead, ManifestWrite, ReferenceDelete, Requester


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: str
    media_type: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class PutResult:
    digest: str
    subject: str | None
    tags: tuple[str, ...] = ()


def _accepts(accept: list[str], media_type: str) -> bool:
    return not accept or media_type in accept or "*/*" in accept


def parse_accept(values: list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            media = part.split(";", 1)[0].strip().lower()
            if media:
                out.append(media)
    return out


class ManifestService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def get(
        self, repo: str, reference: str, accept: list[str], requester: Requester | None = None
    ) -> Manifest:
        """The manifest a client pulls; with a *requester* (a client's read, not the
        registry's own), the content rules are asked first (ctx.rules)."""
        found = await self._find(repo, reference, accept)
        rules = self.ctx.rules
        if requester is not None and rules.checks_reads:
            await rules.manifest_read(
                ManifestRead(
                    repo, reference, found.digest, found.media_type, ":" in reference, requester
                )
            )
        return found

    async def _find(self, repo: str, reference: str, accept: list[str]) -> Manifest:
        by_digest = ":" in reference
        hot = self.ctx.hot
        if by_digest:
            row = await hot.manifest_by_digest(repo, reference)
        else:
            row = await hot.manifest_by_tag(repo, reference)
        if row is None:
            if by_digest:
                async with self.ctx.engine.connect() as conn:
                    index = await q.index_listing(conn, repo, reference)
                if index is not None:
                    # A sparse index (a platform filter of a replication or cache policy).
                    raise ManifestUnknown(
                        f"manifest {reference} is not held in repository {repo}: index {index} "
                        "lists it, but it was left out when the index was copied (platform "
                        "filter); pull one of the platforms that are here",
                        detail={"digest": reference, "index": index, "sparse": True},
                    )
            raise ManifestUnknown(f"manifest {reference} is not in repository {repo}")
        if by_digest or _accepts(accept, row.media_type):
            # A digest pins the content: it is served whatever the client prefers.
            return Manifest(row.digest, row.media_type, row.payload)
        async with self.ctx.engine.connect() as conn:
            if row.media_type in mt.INDEXES:
                # Like Distribution: a client that cannot read an index gets linux/amd64.
                child = await self._default_platform_child(conn, repo, row.payload, accept)
                if child is not None:
                    return child
        raise ManifestUnknown(
            f"manifest {reference} is {row.media_type}, which the client does not accept",
            detail={"mediaType": row.media_type, "accept": accept[:20]},
        )

    async def _default_platform_child(
        self, conn: AsyncConnection, repo: str, payload: bytes, accept: list[str]
    ) -> Manifest | None:
        try:
            doc = json.loads(payload)
        except ValueError:
            return None
        for entry in doc.get("manifests") or []:
            platform = entry.get("platform") or {}
            if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
                if not _accepts(accept, entry.get("mediaType", "")):
                    continue
                row = await q.manifest_by_digest(conn, repo, entry.get("digest", ""))
                if row is not None:
                    return Manifest(row.digest, row.media_type, row.payload)
        return None

    async def put(
        self,
        repo: str,
        reference: str,
        payload: bytes,
        content_type: str | None,
        requester: Requester | None = None,
        tags: Sequence[str] = (),
    ) -> PutResult:
        """Store a manifest (and point the tag at it), after the content rules agreed, in one
        transaction that also publishes ManifestPushed. Without a *requester* the push is the
        registry's own (replication, restore) and is checked as the system's.

        A push by digest may name *tags* to point at it as well (distribution-spec's
        ``?tag=``); the manifest keeps the digest it was pushed by (sha256 or sha512), and so
        do the tags."""
        limit = self.ctx.config.registry.max_manifest_size
        if len(payload) > limit:
            raise TooLarge(f"manifest is {len(payload)} bytes; the limit is {limit}")
        try:
            parsed = parse_manifest(payload, content_type)
        except ManifestError as exc:
            raise ManifestInvalid(str(exc)) from None
        if ":" in reference:
            wanted = Digest.parse(reference)
            actual = hashlib.new(wanted.algorithm, payload).hexdigest()
            if actual != wanted.hex:
                raise DigestInvalid(
                    f"manifest digest is {wanted.algorithm}:{actual}, not {wanted}",
                    detail={"expected": str(wanted), "actual": f"{wanted.algorithm}:{actual}"},
                )
            digest = str(wanted)
            tag_names = tuple(dict.fromkeys(tags))
        else:
            digest = "sha256:" + hashlib.sha256(payload).hexdigest()
            tag_names = (reference,)

        if not self.ctx.rules.checks_writes and not self.ctx.events.wants(ManifestPushed):
            # Nothing hooks into this change: one unit on the raw driver (db/writepath.py).
            await self._put_raw(repo, digest, tag_names, parsed, payload)
            return PutResult(
                digest, str(parsed.subject.digest) if parsed.subject else None, tag_names
            )
        write_args = (repo, digest, tag_names, parsed, payload, requester)
        if self.ctx.writes.inline_units:
            # One unit of the writer thread's group commit, with no hop per statement
            # (moorage/db/inline.py); on the async engine only if it cannot run there.
            try:
                await self.ctx.writes.run(lambda tx: self._put_in(tx.inline(), *write_args))
            except NotInline:
                async with self.ctx.write_engine.begin() as conn:
                    await self._put_in(conn, *write_args)
        else:

            async def put() -> None:
                async with self.ctx.write_engine.begin() as conn:
                    await self._put_in(conn, *write_args)

            await retry_conflicts(put, f"manifest PUT {repo}@{digest}")
        return PutResult(digest, str(parsed.subject.digest) if parsed.subject else None, tag_names)

    async def _put_in(
        self,
        conn: AsyncConnection,
        repo: str,
        digest: str,
        tag_names: tuple[str, ...],
        parsed: ParsedManifest,
        payload: bytes,
        requester: Requester | None,
    ) -> None:
        """The manifest, its tags, the content rules and the push's subscribers, in the
        transaction of *conn*."""
        repo_id = await q.ensure_repository(conn, repo, namespace_of(repo))
        write = ManifestWrite(
            repo,
            repo_id,
            digest,
            tag_names,
            parsed,
            len(payload),
            requester or Requester.system(),
            bool(await q.manifest_digests_in(conn, repo_id, [digest])),
        )
        await self._check_references(conn, repo_id, parsed, write)
        references = [(str(d), "blob") for d in parsed.required_blobs()] + [
            (str(d), "manifest") for d in parsed.required_manifests()
        ]
        manifest_id = await q.insert_manifest(
            conn,
            repo_id,
            digest=digest,
            media_type=parsed.media_type,
            artifact_type=parsed.referrer_artifact_type(),
            subject_digest=str(parsed.subject.digest) if parsed.subject else None,
            config_digest=str(parsed.config.digest) if parsed.config else None,
            annotations=parsed.annotations,
            payload=payload,
            references=references,
        )
        await self.ctx.rules.manifest_write(conn, write)
        replaced: list[tuple[str, str]] = []
        for name in tag_names:
            previous = await q.set_tag(conn, repo_id, name, manifest_id, digest)
            if previous is not None:
                replaced.append((name, previous))
        if self.ctx.events.wants(ManifestPushed):
            await self.ctx.events.publish(
                conn,
                ManifestPushed(
                    repo,
                    digest,
                    parsed.media_type,
                    parsed.referrer_artifact_type(),
                    str(parsed.subject.digest) if parsed.subject else None,
                    tag_names,
                    tuple(replaced),
                    requester.name if requester else None,
                ),
            )

    async def _put_raw(
        self,
        repo: str,
        digest: str,
        tag_names: tuple[str, ...],
        parsed: ParsedManifest,
        payload: bytes,
    ) -> None:
        blobs = [str(d) for d in parsed.required_blobs()]
        children = [str(d) for d in parsed.required_manifests()]
        insert = wp.ManifestInsert(
            digest=digest,
            media_type=parsed.media_type,
            artifact_type=parsed.referrer_artifact_type(),
            subject_digest=str(parsed.subject.digest) if parsed.subject else None,
            config_digest=str(parsed.config.digest) if parsed.config else None,
            annotations=parsed.annotations,
            payload=payload,
            references=[(d, "blob") for d in blobs] + [(d, "manifest") for d in children],
            blobs=blobs,
            children=children,
            tags=tag_names,
        )
        namespace = namespace_of(repo)

        def validate(sizes: dict[str, int], present: set[str]) -> None:
            _validate_references(parsed, set(sizes), sizes, present)

        await self.ctx.writes.run(lambda tx: wp.put_manifest(tx, repo, namespace, insert, validate))

    async def _check_references(
        self, conn: AsyncConnection, repo_id: int, parsed: ParsedManifest, write: ManifestWrite
    ) -> None:
        """Every blob and child manifest must already be in this repository, at its size (an
        index without some of its children only where a content rule accepts it as sparse)."""
        blobs = [str(d) for d in parsed.required_blobs()]
        linked = await q.linked_digests(conn, repo_id, blobs)
        sizes = await q.blob_sizes(conn, blobs) if linked else {}
        children = [str(d) for d in parsed.required_manifests()]
        present = await q.manifest_digests_in(conn, repo_id, children)
        missing = tuple(d for d in children if d not in present)
        if missing and await self.ctx.rules.sparse_index(conn, write, missing):
            present = present | set(missing)  # a sparse index a content rule accepted
        _validate_references(parsed, linked, sizes, present)

    async def delete(self, repo: str, reference: str, requester: Requester | None = None) -> None:
        """Delete a tag, or a manifest by digest with the tags pointing to it; the content
        rules are asked (an immutable tag stays) and the event is published in the same
        transaction."""
        unknown = ManifestUnknown(f"manifest {reference} is not in repository {repo}")
        by_digest = ":" in reference
        events, rules = self.ctx.events, self.ctx.rules
        who = requester or Requester.system()
        async with self.ctx.write_engine.begin() as conn:
            repo_id = await q.repository_id(conn, repo)
            if repo_id is None:
                raise NameUnknown(f"repository {repo} is not known")
            if rules.rules:
                current = (
                    await q.manifest_by_digest(conn, repo, reference)
                    if by_digest
                    else await q.manifest_by_tag(conn, repo, reference)
                )
                if current is None:
                    raise unknown
                await rules.reference_delete(
                    conn,
                    ReferenceDelete(
                        repo, repo_id, None if by_digest else reference, current.digest, who
                    ),
                )
            if by_digest:
                tags = await q.delete_manifest(conn, repo_id, reference)
                if tags is None:
                    raise unknown
                if events.wants(ManifestDeleted):
                    await events.publish(
                        conn, ManifestDeleted(repo, reference, tuple(tags), who.name)
                    )
            else:
                digest = await q.delete_tag(conn, repo_id, reference)
                if digest is None:
                    raise unknown
                if events.wants(TagDeleted):
                    await events.publish(conn, TagDeleted(repo, reference, digest, who.name))

    async def tags(self, repo: str, last: str | None, limit: int) -> list[str]:
        async with self.ctx.engine.connect() as conn:
            repo_id = await q.repository_id(conn, repo)
            if repo_id is None:
                raise NameUnknown(f"repository {repo} is not known")
            return await q.tag_names(conn, repo_id, last, limit)

    async def catalog(
        self, last: str | None, limit: int, scope: cq.ReadScope | None = None
    ) -> list[str]:
        """Repository names after *last*; only those *scope* may read (None: all)."""
        async with self.ctx.engine.connect() as conn:
            if scope is not None:
                return await cq.registry_catalog(conn, scope, last, limit)
            return await q.catalog(conn, last, limit)

    async def referrers(
        self, repo: str, subject: Digest, artifact_type: str | None
    ) -> list[dict[str, object]]:
        async with self.ctx.engine.connect() as conn:
            repo_id = await q.repository_id(conn, repo)
            if repo_id is None:
                raise NameUnknown(f"repository {repo} is not known")
            rows = await q.referrers(conn, repo_id, str(subject), artifact_type)
        out: list[dict[str, object]] = []
        for r in rows:
            desc: dict[str, object] = {
                "mediaType": r.media_type,
                "digest": r.digest,
                "size": r.size,
            }
            if r.artifact_type:
                desc["artifactType"] = r.artifact_type
            if r.annotations:
                desc["annotations"] = r.annotations
            out.append(desc)
        return out


def _validate_references(
    parsed: ParsedManifest, linked: set[str], sizes: dict[str, int], present: set[str]
) -> None:
    """Refuse a manifest whose blobs are not linked into the repository (or disagree with
    their descriptors' sizes) or whose child manifests are not in it."""
    for d in (str(d) for d in parsed.required_blobs()):
        if d not in linked:
            raise ManifestBlobUnknown(
                f"blob {d} is not in this repository; push it first", detail={"digest": d}
            )
    descriptors = ([parsed.config] if parsed.config else []) + parsed.layers
    for desc in descriptors:
        size = sizes.get(str(desc.digest))
        if size is not None and size != desc.size:
            raise ManifestInvalid(
                f"descriptor {desc.digest} says size {desc.size}, the blob has {size}",
                detail={"digest": str(desc.digest)},
            )
    for d in (str(d) for d in parsed.required_manifests()):
        if d not in present:
            raise ManifestBlobUnknown(
                f"manifest {d} referenced by this index is not in this repository",
                detail={"digest": d},
            )


__all__ = ["ManifestService", "Manifest", "PutResult", "parse_accept"]
