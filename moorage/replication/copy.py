"""The copy engine: one tag (or digest) from a source repository to a destination repository.

What a copy does, in order (distribution-spec: content must exist before what references it):

1. resolve the reference on the source (the manifest's bytes, verified); with ``skip_unchanged``
   a destination tag already at that digest is left alone (only its referrers are synced);
2. an image manifest: its config and layers (see :mod:`.transfer`: HEAD, mount, streamed
   resumable upload), concurrently under one per-engine bound; an index: its children
   recursively, keeping only the platforms asked for — the index itself is pushed byte for byte,
   so it becomes a *sparse index* and the result names the children left out;
3. the manifest itself, by tag (the top) or by digest (children, referrers);
4. referrers of the top and of every child copied (signatures, SBOMs), found through the
   referrers API or the ``sha256-<hex>`` referrers tag, and cosign's attached tags
   (``sha256-<hex>.sig``, ``.att``, ``.sbom``); a destination without the referrers API gets its
   referrers tag updated (kept byte-identical to the source's when it holds the same set).

Every tag gets its own :class:`TagResult` (status, bytes, duration, error): one failing tag never
stops the others. Blob copies are shared between the tags of one engine: a blob two tags need is
copied once, and a blob the engine put into one destination repository is mounted into the next.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.manifest import Descriptor, ManifestError, ParsedManifest, parse_manifest
from .client import Manifest, Referrers, referrers_tag
from .errors import PeerProtocolError, RegistryError, ReplicationError
from .models import Upload
from .peer import Registry
from .transfer import BlobOutcome, TransferOptions, copy_blob

# buildx keeps provenance/SBOM attestations as index children with platform unknown/unknown,
# tied to the image they describe by these annotations.
_REF_TYPE = "vnd.docker.reference.type"
_REF_DIGEST = "vnd.docker.reference.digest"


@dataclass(frozen=True, slots=True)
class CopyOptions:
    """How to copy.

    ``platforms``: ``os/arch[/variant]`` strings (``linux/amd64``, ``linux/arm64``); None copies
    every child of an index. A wanted platform without a variant matches every variant.
    ``referrers``: also copy referrers (API or tag schema) ``referrer_depth`` levels deep
    (a signature of an SBOM is level 2), and cosign attached tags with ``attached_tag_suffixes``.
    ``blob_concurrency`` bounds blob copies across all tags of the engine, ``tag_concurrency``
    the tags :meth:`CopyEngine.copy_tags` runs at once; ``tag_attempts`` retries a tag whose
    failure was transient (each retry skips what already arrived).
    """

    platforms: Sequence[str] | None = None
    referrers: bool = True
    referrer_depth: int = 2
    attached_tag_suffixes: tuple[str, ...] = (".sig", ".att", ".sbom")
    skip_unchanged: bool = True
    mount: bool = True
    blob_concurrency: int = 8
    tag_concurrency: int = 4
    tag_attempts: int = 2
    tag_backoff: float = 1.0
    max_index_children: int = 1024
    max_index_depth: int = 4
    transfer: TransferOptions = field(default_factory=TransferOptions)


@dataclass(frozen=True, slots=True)
class SkippedChild:
    """An index child the platform filter left out (the index still references it)."""

    digest: str
    platform: str | None


@dataclass(slots=True)
class TagResult:
    """The outcome of one tag. ``status``: ``copied``, ``unchanged`` (the destination tag was
    already at the source digest) or ``failed`` (``error`` says why; nothing else was rolled
    back, and a later run continues from what arrived)."""

    src_repo: str
    dst_repo: str
    ref: str
    status: Literal["copied", "unchanged", "failed"] = "failed"
    digest: str | None = None
    bytes: int = 0
    duration: float = 0.0
    error: str | None = None
    attempts: int = 0
    manifests: int = 0
    referrers: int = 0
    blobs_uploaded: int = 0
    blobs_existing: int = 0
    blobs_mounted: int = 0
    resumes: int = 0
    restarts: int = 0
    skipped: list[SkippedChild] = field(default_factory=list)
    # A failure worth retrying later as it is (the peer was away, 5xx, 429); False for a
    # refusal or bad content, which a retry would meet again.
    transient: bool = False

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """``bytes``: *bytes* more were sent for blob *digest*; ``blob``/``manifest``: one arrived;
    ``upload``: the upload session of blob *digest* (``location``) acknowledged *bytes* (what a
    checkpoint records, for :meth:`CopyEngine.copy_tag`'s ``resume``); ``tag``: the tag is done
    (``result`` set). Called synchronously: keep the callback cheap."""

    kind: Literal["bytes", "blob", "manifest", "upload", "tag"]
    src_repo: str
    ref: str
    digest: str | None = None
    bytes: int = 0
    result: TagResult | None = None
    location: str | None = None


Progress = Callable[[ProgressEvent], None]


@dataclass(frozen=True, slots=True)
class _Platform:
    os: str
    architecture: str
    variant: str | None

    @classmethod
    def parse(cls, value: str) -> _Platform:
        parts = value.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {value!r} is not os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, platform: dict[str, Any]) -> bool:
        return (
            platform.get("os") == self.os
            and platform.get("architecture") == self.architecture
            and (self.variant is None or platform.get("variant") == self.variant)
        )


def _platform_text(platform: dict[str, Any] | None) -> str | None:
    if not platform:
        return None
    parts = [str(platform.get("os")), str(platform.get("architecture"))]
    if platform.get("variant"):
        parts.append(str(platform["variant"]))
    return "/".join(parts)


def select_children(
    children: Sequence[Descriptor], platforms: Sequence[str] | None
) -> tuple[list[Descriptor], list[Descriptor]]:
    """Split an index's children into (copied, skipped) by platform. Children without a
    platform are kept, except buildx attestations, which follow the image they describe."""
    if platforms is None:
        return list(children), []
    wanted = [_Platform.parse(p) for p in platforms]
    keep: list[Descriptor] = []
    skip: list[Descriptor] = []
    attestations: list[Descriptor] = []
    for child in children:
        annotations = child.annotations or {}
        if annotations.get(_REF_TYPE) == "attestation-manifest":
            attestations.append(child)
        elif child.platform is None or any(w.matches(child.platform) for w in wanted):
            keep.append(child)
        else:
            skip.append(child)
    kept = {str(c.digest) for c in keep}
    for child in attestations:
        (keep if (child.annotations or {}).get(_REF_DIGEST) in kept else skip).append(child)
    order = {str(c.digest): i for i, c in enumerate(children)}
    keep.sort(key=lambda c: order[str(c.digest)])
    return keep, skip


@dataclass(slots=True)
class _Run:
    """One attempt at one tag: what it moved, and what the referrers pass must visit."""

    result: TagResult
    subjects: list[str] = field(default_factory=list)
    pending_tag_index: dict[str, list[Descriptor]] = field(default_factory=dict)


def transient_failure(exc: BaseException) -> bool:
    """Worth retrying as it is: the peer was away, answered 5xx or 429, the network broke."""
    import httpx

    if isinstance(exc, ReplicationError):
        return bool(exc.transient)
    return isinstance(exc, httpx.HTTPError | OSError)


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, ReplicationError | ValueError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


class CopyEngine:
    """Copies tags from *src* to *dst*. One engine per execution: it shares blob copies,
    mounts and the blob concurrency bound between all the tags it copies."""

    def __init__(
        self,
        src: Registry,
        dst: Registry,
        options: CopyOptions | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.src, self.dst = src, dst
        self.options = options or CopyOptions()
        self.progress = progress
        for p in self.options.platforms or ():
            _Platform.parse(p)  # fail now on a typo, not on the first index
        self._blob_slots = asyncio.Semaphore(max(1, self.options.blob_concurrency))
        self._blobs: dict[tuple[str, str], asyncio.Task[BlobOutcome]] = {}
        self._where: dict[str, list[str]] = {}  # blob digest -> destination repos holding it
        self._manifests: set[tuple[str, str]] = set()  # (dst repo, digest) known present
        self._resume: dict[tuple[str, str], str] = {}  # (dst repo, blob) -> upload location

    # --- public -------------------------------------------------------------------------------

    async def copy_tags(
        self,
        requests: Iterable[tuple[str, str, str]],
        src_tags: Mapping[str, Collection[str]] | None = None,
    ) -> list[TagResult]:
        """Copy (src_repo, dst_repo, ref) triples, ``tag_concurrency`` at a time; results in the
        same order. ``src_tags`` (source repo → its tags), when the caller listed them, saves
        probing the source for cosign attached tags."""
        slots = asyncio.Semaphore(max(1, self.options.tag_concurrency))

        async def one(src_repo: str, dst_repo: str, ref: str) -> TagResult:
            async with slots:
                tags = src_tags.get(src_repo) if src_tags is not None else None
                return await self.copy_tag(src_repo, dst_repo, ref, src_tags=tags)

        return list(await asyncio.gather(*(one(*r) for r in requests)))

    async def copy_tag(
        self,
        src_repo: str,
        dst_repo: str,
        ref: str,
        *,
        src_tags: Collection[str] | None = None,
        resume: dict[str, str] | None = None,
    ) -> TagResult:
        """Copy one tag or digest; never raises for a failure of the copy (see the result).
        ``resume``: blob digest → upload location that an earlier attempt (its ``upload``
        progress events) left open; those blobs continue where the destination stands."""
        for digest, location in (resume or {}).items():
            self._resume[(dst_repo, digest)] = location
        result = TagResult(src_repo, dst_repo, ref)
        started = time.monotonic()
        opts = self.options
        for attempt in range(max(1, opts.tag_attempts)):
            result.attempts = attempt + 1
            run = _Run(result)
            try:
                await self._copy_ref(run, src_repo, dst_repo, ref, src_tags)
                result.error, result.transient = None, False
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure becomes this tag's result, never a crash
                result.status, result.error = "failed", describe_failure(exc)
                result.transient = transient_failure(exc)
                if not result.transient or attempt + 1 >= opts.tag_attempts:
                    break
                await asyncio.sleep(opts.tag_backoff * (2**attempt) * (0.5 + random.random() / 2))
        result.duration = time.monotonic() - started
        self._emit("tag", src_repo, ref, result.digest, 0, result)
        return result

    # --- one reference ------------------------------------------------------------------------

    def _emit(
        self,
        kind: Literal["bytes", "blob", "manifest", "upload", "tag"],
        src_repo: str,
        ref: str,
        digest: str | None,
        n: int = 0,
        result: TagResult | None = None,
        location: str | None = None,
    ) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(kind, src_repo, ref, digest, n, result, location))

    async def _copy_ref(
        self,
        run: _Run,
        src_repo: str,
        dst_repo: str,
        ref: str,
        src_tags: Collection[str] | None,
    ) -> None:
        result = run.result
        top = await self.src.get_manifest(src_repo, ref)
        result.digest = top.digest
        parsed = self._parse(top, f"{src_repo}:{ref}")
        is_tag = ":" not in ref
        if self.options.skip_unchanged:
            there = await self.dst.head_manifest(dst_repo, ref if is_tag else top.digest)
            if there is not None and there.digest == top.digest:
                result.status = "unchanged"
                self._manifests.add((dst_repo, top.digest))
                run.subjects.append(top.digest)
                if parsed.is_index:
                    kept, skipped = select_children(parsed.manifests, self.options.platforms)
                    result.skipped = [_skipped(c) for c in skipped]
                    run.subjects += [str(c.digest) for c in kept]
                await self._referrers_pass(run, src_repo, dst_repo, src_tags)
                return
        await self._copy_manifest(run, src_repo, dst_repo, top, parsed, ref, depth=0)
        await self._referrers_pass(run, src_repo, dst_repo, src_tags)
        result.status = "copied"

    def _parse(self, manifest: Manifest, what: str) -> ParsedManifest:
        try:
            parsed = parse_manifest(manifest.data, manifest.media_type)
        except ManifestError as exc:
            raise PeerProtocolError(f"source manifest {what}: {exc}") from None
        if len(parsed.manifests) > self.options.max_index_children:
            raise PeerProtocolError(
                f"source index {what} has {len(parsed.manifests)} children; the limit is "
                f"{self.options.max_index_children}"
            )
        return parsed

    async def _copy_manifest(
        self,
        run: _Run,
        src_repo: str,
        dst_repo: str,
        manifest: Manifest,
        parsed: ParsedManifest,
        put_ref: str,
        *,
        depth: int,
    ) -> None:
        """Copy what *manifest* references, then the manifest (by *put_ref*)."""
        skipped: list[Descriptor] = []
        if parsed.is_index:
            if depth >= self.options.max_index_depth:
                raise PeerProtocolError(f"indexes nested deeper than {depth} levels")
            kept, skipped = select_children(parsed.manifests, self.options.platforms)
            run.result.skipped += [_skipped(c) for c in skipped]
            await _gather(
                self._copy_child(run, src_repo, dst_repo, child, depth + 1) for child in kept
            )
        else:
            blobs = [parsed.config] if parsed.config is not None else []
            required = {str(d) for d in parsed.required_blobs()}
            blobs += [layer for layer in parsed.layers if str(layer.digest) in required]
            unique = {str(b.digest): b for b in blobs}
            await _gather(
                self._blob(run, src_repo, dst_repo, str(b.digest), b.size) for b in unique.values()
            )
        media_type = (
            manifest.media_type if manifest.media_type in mt.MANIFEST_TYPES else parsed.media_type
        )
        try:
            put = await self.dst.put_manifest(dst_repo, put_ref, manifest.data, media_type)
        except RegistryError as exc:
            if skipped:
                raise RegistryError(
                    exc.status,
                    f"the destination refused the sparse index {manifest.digest} "
                    f"({len(skipped)} children left out by the platform filter): {exc}",
                    exc.code,
                ) from None
            raise
        self._manifests.add((dst_repo, manifest.digest))
        run.result.manifests += 1
        run.subjects.append(manifest.digest)
        self._emit("manifest", run.result.src_repo, run.result.ref, manifest.digest)
        if parsed.subject is not None and not put.subject_indexed:
            entry = Descriptor(
                media_type=media_type,
                digest=Digest.parse(manifest.digest),
                size=len(manifest.data),
                artifact_type=parsed.referrer_artifact_type(),
                annotations=parsed.annotations,
            )
            run.pending_tag_index.setdefault(str(parsed.subject.digest), []).append(entry)

    async def _copy_child(
        self, run: _Run, src_repo: str, dst_repo: str, child: Descriptor, depth: int
    ) -> None:
        digest = str(child.digest)
        if await self._present(dst_repo, digest):
            run.subjects.append(digest)
            return
        manifest = await self.src.get_manifest(src_repo, digest)
        if len(manifest.data) != child.size:
            raise PeerProtocolError(
                f"manifest {digest} is {len(manifest.data)} bytes; its descriptor says {child.size}"
            )
        parsed = self._parse(manifest, f"{src_repo}@{digest}")
        await self._copy_manifest(run, src_repo, dst_repo, manifest, parsed, digest, depth=depth)

    async def _present(self, dst_repo: str, digest: str) -> bool:
        if (dst_repo, digest) in self._manifests:
            return True
        if await self.dst.head_manifest(dst_repo, digest) is not None:
            self._manifests.add((dst_repo, digest))
            return True
        return False

    # --- blobs --------------------------------------------------------------------------------

    async def _blob(self, run: _Run, src_repo: str, dst_repo: str, digest: str, size: int) -> None:
        key = (dst_repo, digest)
        task = self._blobs.get(key)
        owner = task is None or (task.done() and (task.cancelled() or task.exception() is not None))
        if owner:
            task = asyncio.ensure_future(self._blob_task(run, src_repo, dst_repo, digest, size))
            self._blobs[key] = task
        assert task is not None
        outcome = await asyncio.shield(task)
        result = run.result
        if not owner:
            result.blobs_existing += 1  # another tag of this engine brought it
            return
        result.bytes += outcome.bytes_sent
        result.resumes += outcome.resumes
        result.restarts += outcome.restarts
        if outcome.how == "uploaded":
            result.blobs_uploaded += 1
        elif outcome.how == "mounted":
            result.blobs_mounted += 1
        else:
            result.blobs_existing += 1

    async def _blob_task(
        self, run: _Run, src_repo: str, dst_repo: str, digest: str, size: int
    ) -> BlobOutcome:
        src_name, ref = run.result.src_repo, run.result.ref

        def on_bytes(n: int) -> None:
            self._emit("bytes", src_name, ref, digest, n)

        def on_upload(upload: Upload) -> None:
            self._emit("upload", src_name, ref, digest, upload.offset, location=str(upload.location))

        if self.options.mount:
            # The same blob on its way into another destination repository (a base layer that
            # several repositories share): wait for it and mount it instead of sending it again.
            # Only copies registered before this one are waited for (an order, so no two wait on
            # each other), and outside the blob slots.
            others = []
            for (r, d), t in self._blobs.items():
                if (r, d) == (dst_repo, digest):
                    break
                if d == digest and not t.done():
                    others.append(t)
            if others:
                await asyncio.wait(others)
        async with self._blob_slots:
            outcome = await copy_blob(
                self.src,
                src_repo,
                self.dst,
                dst_repo,
                digest,
                size,
                mount_from=self._where.get(digest, ()) if self.options.mount else (),
                options=self.options.transfer,
                on_bytes=on_bytes,
                resume_location=self._resume.pop((dst_repo, digest), None),
                on_upload=on_upload,
            )
        where = self._where.setdefault(digest, [])
        if dst_repo not in where and len(where) < 8:
            where.append(dst_repo)
        self._emit("blob", src_name, ref, digest, 0)
        return outcome

    # --- referrers ----------------------------------------------------------------------------

    async def _referrers_pass(
        self, run: _Run, src_repo: str, dst_repo: str, src_tags: Collection[str] | None
    ) -> None:
        if not self.options.referrers:
            return
        subjects = list(dict.fromkeys(run.subjects))
        await _gather(self._referrers_of(run, src_repo, dst_repo, s, 1, src_tags) for s in subjects)

    async def _referrers_of(
        self,
        run: _Run,
        src_repo: str,
        dst_repo: str,
        subject: str,
        level: int,
        src_tags: Collection[str] | None,
    ) -> None:
        """Copy the referrers of *subject* (and theirs, up to ``referrer_depth``), its cosign
        attached tags, then bring the destination's referrers tag up to date if it needs one."""
        found = await self.src.referrers(src_repo, subject)
        descriptors = found.descriptors[: self.options.max_index_children]

        async def one(desc: Descriptor) -> None:
            digest = str(desc.digest)
            if not await self._present(dst_repo, digest):
                manifest = await self.src.get_manifest(src_repo, digest)
                parsed = self._parse(manifest, f"{src_repo}@{digest}")
                await self._copy_manifest(
                    run, src_repo, dst_repo, manifest, parsed, digest, depth=0
                )
                run.result.referrers += 1
            if level < self.options.referrer_depth:
                await self._referrers_of(run, src_repo, dst_repo, digest, level + 1, src_tags)

        await _gather(one(d) for d in descriptors)
        await _gather(
            self._attached_tag(run, src_repo, dst_repo, subject, suffix, src_tags)
            for suffix in self.options.attached_tag_suffixes
        )
        if descriptors or subject in run.pending_tag_index:
            await self._update_referrers_tag(run, dst_repo, subject, descriptors, found)

    async def _attached_tag(
        self,
        run: _Run,
        src_repo: str,
        dst_repo: str,
        subject: str,
        suffix: str,
        src_tags: Collection[str] | None,
    ) -> None:
        tag = referrers_tag(subject) + suffix
        if src_tags is not None and tag not in src_tags:
            return
        if src_tags is None and await self.src.head_manifest(src_repo, tag) is None:
            return
        manifest = await self.src.get_manifest(src_repo, tag)
        there = await self.dst.head_manifest(dst_repo, tag)
        if there is not None and there.digest == manifest.digest:
            return
        parsed = self._parse(manifest, f"{src_repo}:{tag}")
        await self._copy_manifest(run, src_repo, dst_repo, manifest, parsed, tag, depth=0)
        run.result.referrers += 1

    async def _update_referrers_tag(
        self,
        run: _Run,
        dst_repo: str,
        subject: str,
        wanted: list[Descriptor],
        found: Referrers,
    ) -> None:
        """Make the destination's ``sha256-<hex>`` tag list every referrer we copied, unless the
        destination has the referrers API (it then indexes them itself)."""
        current = await self.dst.referrers(dst_repo, subject)
        if current.source == "api":
            return
        have = {str(d.digest) for d in current.descriptors}
        wanted = wanted + run.pending_tag_index.get(subject, [])
        unique = {str(d.digest): d for d in wanted}
        missing = [d for digest, d in unique.items() if digest not in have]
        if not missing:
            return
        tag = referrers_tag(subject)
        if (
            found.index is not None
            and current.source == "none"
            and set(unique) == {str(d.digest) for d in found.descriptors}
        ):
            # The destination has no referrers tag yet and gets exactly the source's set:
            # keep the source's index byte for byte (same digest on both sides).
            data, media_type = found.index.data, found.index.media_type
        else:
            index = {
                "schemaVersion": 2,
                "mediaType": mt.OCI_INDEX,
                "manifests": [d.to_json() for d in current.descriptors]
                + [d.to_json() for d in missing],
            }
            data, media_type = json.dumps(index, separators=(",", ":")).encode(), mt.OCI_INDEX
        await self.dst.put_manifest(dst_repo, tag, data, media_type)
        run.result.manifests += 1


def _skipped(child: Descriptor) -> SkippedChild:
    return SkippedChild(str(child.digest), _platform_text(child.platform))


async def _gather(coros: Iterable[Any]) -> None:
    """Run *coros* concurrently; if one fails, cancel the rest and raise the first error."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def copy_tag(
    src: Registry,
    src_repo: str,
    dst: Registry,
    dst_repo: str,
    ref: str,
    options: CopyOptions | None = None,
    progress: Progress | None = None,
) -> TagResult:
    """Copy one tag or digest with a fresh :class:`CopyEngine` (see there)."""
    return await CopyEngine(src, dst, options, progress).copy_tag(src_repo, dst_repo, ref)
