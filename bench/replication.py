"""Replication throughput: Moorage's copy engine beside ``skopeo sync``, on the same set, in the
same run, from one CNCF Distribution to another.

    flock /tmp/moorage-bench.lock python bench/replication.py            # 40 images, 1 GiB case
    flock /tmp/moorage-bench.lock python bench/replication.py --quick    # smaller, no 1 GiB case
    flock /tmp/moorage-bench.lock python bench/replication.py --capability --big-mib 0

``--capability`` measures the replication capability end to end instead: the set is pushed
into a ``moorage serve`` (access control on), and each round a push policy to a Distribution
is run through the REST API — a planning job, then one job per tag on the shared queue — timed
from the run request to the execution's end, beside ``skopeo sync`` from the same Moorage to
another Distribution.

The set (``--images`` tags, spread over ``--repos`` repositories): single-platform images of
2–4 small layers (10–500 KiB) on two base layers: a 2 MiB one shared by the images of a
repository and a 4 MiB one shared by all (what cross-repository mounts are for); a few medium
images (one ``--medium-mib`` layer instead of the small ones), one multi-arch index (linux/amd64 + linux/arm64), cosign
``.sig`` signatures for some images and an SPDX SBOM referrer of the index (as the referrers tag
``sha256-<hex>``, Distribution having no referrers API). Content is random (incompressible).

Each round copies the whole set into a fresh namespace on two Distributions: one with the engine
(tags listed, then every tag with its referrers, ``--tag-concurrency``/``--blob-concurrency``),
one with ``skopeo sync --all`` (one YAML source listing every repository, an empty blob-info
cache through ``unshare --user``, like bench/run.py). The order alternates every round; the
table shows the best round, the JSON file all. Both destinations must end with the same tags at
the same digests, or the run fails.

The 1 GiB section (``--big-mib``): one layer copied Distribution → Distribution by the engine and
by ``skopeo copy``; then by the engine through a proxy that cuts the connection mid-layer, into
Moorage (resumes at the acknowledged offset) and into Distribution (which drops the session: the
engine starts it again).

Figures on a busy 2-core machine are provisional: compare the ratio within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import servers  # noqa: E402

from moorage.replication import (  # noqa: E402
    CopyEngine,
    CopyOptions,
    RegistryClient,
    TransferOptions,
)

MB = 1_000_000
MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
SPDX = "application/spdx+json"
COSIGN = "application/vnd.dev.cosign.simplesigning.v1+json"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _desc(media_type: str, data: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": _sha(data), "size": len(data), **extra}


@dataclass
class Item:
    """One manifest to push: bytes, media type, the ref to push it by, blobs it needs."""

    ref: str
    data: bytes
    media_type: str
    blobs: list[bytes] = field(default_factory=list)
    subject: str | None = None


@dataclass
class BenchSet:
    repos: dict[str, list[Item]]  # repo -> items in push order
    tags: dict[str, list[str]]  # repo -> the image tags (what a policy would select)
    bytes: int  # blob + manifest bytes a full copy moves (each blob once per repository)


def _image(rng: random.Random, label: str, base: list[bytes], layer_sizes: list[int]) -> Item:
    layers = list(base) + [gzip.compress(rng.randbytes(size), 1, mtime=0) for size in layer_sizes]
    config = _json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"bench": label}},
            "rootfs": {"type": "layers", "diff_ids": [_sha(x) for x in layers]},
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _desc(OCI_CONFIG, config),
            "layers": [_desc(OCI_LAYER, x) for x in layers],
        }
    )
    return Item(label, manifest, OCI_MANIFEST, [config, *layers])


def make_set(
    images: int, repos: int, medium: int, medium_mib: int, signatures: int, seed: int
) -> BenchSet:
    rng = random.Random(seed)
    out: dict[str, list[Item]] = {f"bench/repo{i}": [] for i in range(repos)}
    tags: dict[str, list[str]] = {r: [] for r in out}
    names = list(out)
    # A base layer per repository, under one common to all (an OS layer: what cross-repository
    # mounts are for).
    common = gzip.compress(rng.randbytes(4 * MiB), 1, mtime=0)
    bases = {r: gzip.compress(rng.randbytes(2 * MiB), 1, mtime=0) for r in names}
    signed: list[tuple[str, Item]] = []
    for n in range(images - 1):
        repo = names[n % repos]
        if n < medium:
            item = _image(rng, f"v{n}", [common, bases[repo]], [medium_mib * MiB])
        else:
            sizes = [rng.randint(10, 500) * 1024 for _ in range(rng.randint(2, 4))]
            item = _image(rng, f"v{n}", [common, bases[repo]], sizes)
        out[repo].append(item)
        tags[repo].append(item.ref)
        if len(signed) < signatures:
            signed.append((repo, item))
    # One multi-arch index (two platform images) with an SBOM referrer.
    repo = names[0]
    children = []
    for arch in ("amd64", "arm64"):
        child = _image(rng, f"multi-{arch}", [common, bases[repo]], [300 * 1024, 200 * 1024])
        child.ref = _sha(child.data)
        children.append((arch, child))
        out[repo].append(child)
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                _desc(OCI_MANIFEST, c.data, platform={"os": "linux", "architecture": a})
                for a, c in children
            ],
        }
    )
    out[repo].append(Item("multi", index, OCI_INDEX))
    tags[repo].append("multi")
    sbom_layer = _json({"spdxVersion": "SPDX-2.3", "name": "multi", "packages": ["x"] * 200})
    sbom = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SPDX,
            "config": _desc(OCI_EMPTY, b"{}"),
            "layers": [_desc(SPDX, sbom_layer)],
            "subject": _desc(OCI_INDEX, index),
        }
    )
    out[repo].append(Item(_sha(sbom), sbom, OCI_MANIFEST, [b"{}", sbom_layer], subject=_sha(index)))
    # cosign-style signatures (tags sha256-<hex>.sig).
    for repo, item in signed:
        payload = _json(
            {
                "critical": {
                    "identity": {"docker-reference": f"bench/{repo}"},
                    "image": {"docker-manifest-digest": _sha(item.data)},
                    "type": "cosign container image signature",
                },
                "optional": None,
            }
        )
        config = _json(
            {
                "architecture": "",
                "os": "",
                "rootfs": {"type": "layers", "diff_ids": [_sha(payload)]},
            }
        )
        sig = _json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": _desc(OCI_CONFIG, config),
                "layers": [
                    _desc(
                        COSIGN,
                        payload,
                        annotations={"dev.cosignproject.cosign/signature": rng.randbytes(64).hex()},
                    )
                ],
            }
        )
        out[repo].append(
            Item(_sha(item.data).replace(":", "-") + ".sig", sig, OCI_MANIFEST, [config, payload])
        )
    total = 0
    for items in out.values():
        unique = {_sha(b): len(b) for it in items for b in it.blobs}
        total += sum(unique.values()) + sum(len(it.data) for it in items)
    return BenchSet(out, tags, total)


async def push_set(url: str, bench: BenchSet, credentials: Any = None) -> None:
    """Set up the source (untimed): blobs, manifests, and the SBOM's referrers tag."""
    async with RegistryClient(url, credentials, auth_scheme="basic" if credentials else None) as client:
        for repo, items in bench.repos.items():
            pushed: set[str] = set()
            for item in items:
                for blob in item.blobs:
                    if _sha(blob) not in pushed:
                        await client.push_blob(repo, blob)
                        pushed.add(_sha(blob))
                put = await client.put_manifest(repo, item.ref, item.data, item.media_type)
                if item.subject and not put.subject_indexed:
                    index = _json(
                        {
                            "schemaVersion": 2,
                            "mediaType": OCI_INDEX,
                            "manifests": [_desc(item.media_type, item.data, artifactType=SPDX)],
                        }
                    )
                    await client.put_manifest(
                        repo, item.subject.replace(":", "-"), index, OCI_INDEX
                    )


# --- the two copiers --------------------------------------------------------------------------


async def run_engine(
    src: str, dst: str, ns: str, bench: BenchSet, options: CopyOptions
) -> dict[str, Any]:
    t0 = time.perf_counter()
    async with RegistryClient(src) as s, RegistryClient(dst) as d:
        listed = dict(
            zip(bench.repos, await asyncio.gather(*(s.tags(r) for r in bench.repos)), strict=True)
        )
        # What a policy selects: the image tags (signatures and referrers come along).
        requests = [
            (repo, f"{ns}/{repo.rsplit('/', 1)[1]}", tag)
            for repo, tags in listed.items()
            for tag in tags
            if not tag.startswith("sha256-")
        ]
        results = await CopyEngine(s, d, options).copy_tags(requests, src_tags=listed)
    seconds = time.perf_counter() - t0
    failed = [(r.src_repo, r.ref, r.error) for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"engine: {len(failed)} tags failed: {failed[:3]}")
    return {
        "seconds": seconds,
        "tags": len(results),
        "bytes_sent": sum(r.bytes for r in results),
        "blobs_uploaded": sum(r.blobs_uploaded for r in results),
        "blobs_mounted": sum(r.blobs_mounted for r in results),
        "blobs_existing": sum(r.blobs_existing for r in results),
    }


class SkopeoSync:
    """``skopeo sync`` with a private home and blob-info cache (``unshare --user``, so that the
    cache is the one under our XDG_DATA_HOME, not /var/lib/containers/cache)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        for sub in ("data", "config", "run", "tmp"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        self.policy = home / "policy.json"
        self.policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
        self.registries_conf = home / "registries.conf"
        self.registries_conf.write_text("unqualified-search-registries = []\n")
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_RUNTIME_DIR": str(home / "run"),
            "TMPDIR": str(home / "tmp"),
        }

    def reset_cache(self) -> None:
        shutil.rmtree(self.home / "data" / "containers", ignore_errors=True)

    def sync(
        self, src_host: str, repos: list[str], dst: str, src_creds: str | None = None
    ) -> float:
        spec = self.home / "sync.yml"
        lines = [f"{src_host}:", "  tls-verify: false", "  images-by-tag-regex:"]
        lines += [f"    {repo}: '.*'" for repo in repos]
        spec.write_text("\n".join(lines) + "\n")
        argv = [
            "unshare", "--user", "skopeo", "--policy", str(self.policy), "--tmpdir",
            str(self.home / "tmp"), "--registries-conf", str(self.registries_conf), "sync",
            "--all", "--retry-times", "0",
            "--src-tls-verify=false", "--dest-tls-verify=false",
            *(["--src-creds", src_creds] if src_creds else []),
            "--src", "yaml", "--dest", "docker", str(spec), dst,
        ]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"skopeo sync failed:\n{proc.stderr[-3000:]}")
        return seconds


async def snapshot(url: str, repos: list[str]) -> dict[str, dict[str, str]]:
    """repo -> tag -> digest, for comparing destinations."""
    out: dict[str, dict[str, str]] = {}
    async with RegistryClient(url) as c:
        for repo in repos:
            tags = await c.tags(repo)
            infos = await asyncio.gather(*(c.head_manifest(repo, t) for t in tags))
            out[repo] = {t: i.digest for t, i in zip(tags, infos, strict=True) if i is not None}
    return out


# --- the 1 GiB case ---------------------------------------------------------------------------


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            yield chunk


async def push_big(url: str, repo: str, path: Path, digest: str) -> None:
    size = (await asyncio.to_thread(path.stat)).st_size
    config = _json(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest]}}
    )
    async with RegistryClient(url) as c:
        upload = await c.start_upload(repo)
        assert upload is not None
        await c.finish_upload(upload, digest, _file_chunks(path), size)
        await c.push_blob(repo, config)
        manifest = _json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": _desc(OCI_CONFIG, config),
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": digest,
                        "size": size,
                    }
                ],
            }
        )
        await c.put_manifest(repo, "big", manifest, OCI_MANIFEST)


async def engine_big(src: str, dst: str, repo: str, dst_repo: str) -> tuple[float, Any]:
    t0 = time.perf_counter()
    async with RegistryClient(src) as s, RegistryClient(dst) as d:
        result = await CopyEngine(s, d, CopyOptions(referrers=False)).copy_tag(
            repo, dst_repo, "big"
        )
    if not result.ok:
        raise RuntimeError(f"big copy failed: {result.error}")
    return time.perf_counter() - t0, result


async def big_section(
    args: argparse.Namespace, work: Path, src: Any, dst_a: Any, dst_b: Any, skopeo: SkopeoSync
) -> dict[str, Any]:
    from tests.replication.faultproxy import Rule, fault_proxy

    size = args.big_mib * MiB
    path = work / "big.bin"
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(8 * MiB, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    digest = "sha256:" + h.hexdigest()
    await push_big(src.base_url, "bench/big", path, digest)
    path.unlink()
    out: dict[str, Any] = {"size_mib": args.big_mib}
    await _sync()
    t, _ = await engine_big(src.base_url, dst_a.base_url, "bench/big", "big/engine")
    out["engine_s"], out["engine_MBps"] = t, size / MB / t
    await _sync()
    skopeo.reset_cache()
    t0 = time.perf_counter()
    proc = await asyncio.to_thread(
        subprocess.run,
        ["unshare", "--user", "skopeo", "--policy", str(skopeo.policy), "--tmpdir", str(skopeo.home / "tmp"),
         "copy", "--quiet", "--preserve-digests", "--retry-times", "0",
         "--src-tls-verify=false", "--dest-tls-verify=false",
         f"docker://{src.registry}/bench/big:big", f"docker://{dst_b.registry}/big/skopeo:big"],
        env=skopeo.env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo copy failed: {proc.stderr[-2000:]}")
    t = time.perf_counter() - t0
    out["skopeo_s"], out["skopeo_MBps"] = t, size / MB / t
    moorage = servers.moorage_spec(
        f"{sys.executable} -m moorage.cli",
        1,
        None,
        "moorage",
        {"MOORAGE_AUTH_ENABLED": "false", "MOORAGE_LOG_LEVEL": "error"},
    )
    with servers.running(moorage, work / "moorage") as m:
        for name, peer in (("moorage", m), ("distribution", dst_a)):
            with fault_proxy(peer.port) as proxy:
                proxy.rules.append(
                    Rule(
                        "PATCH",
                        r"/blobs/uploads/",
                        cut_request_after=size * 2 // 5 % (64 * MiB) or 1,
                        skip=(size * 2 // 5) // (64 * MiB),
                    )
                )
                await _sync()
                t, result = await engine_big(
                    src.base_url, proxy.url, "bench/big", f"big/cut-{name}"
                )
                fired = proxy.rules[0].fired
            out[f"cut_{name}"] = {
                "seconds": t, "MBps": size / MB / t, "cuts": fired, "resumes": result.resumes,
                "restarts": result.restarts, "bytes_sent": result.bytes,
            }  # fmt: skip
    return out


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="2 rounds, no 1 GiB case")
    p.add_argument(
        "--capability",
        action="store_true",
        help="the replication capability (policy runs as jobs, Moorage → Distribution) vs skopeo sync",
    )
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--repos", type=int, default=8)
    p.add_argument("--medium", type=int, default=4, help="images with one --medium-mib layer")
    p.add_argument("--medium-mib", type=int, default=24)
    p.add_argument("--signatures", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--big-mib", type=int, default=1024, help="0: skip the big-layer section")
    p.add_argument("--tag-concurrency", type=int, default=4)
    p.add_argument("--blob-concurrency", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default=str(HERE / "results" / "replication.json"))
    p.add_argument("--workdir", help="keep everything here (default: a temp dir, removed)")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.big_mib = 2, 0
    binary = shutil.which("docker-registry")
    if not binary or not shutil.which("skopeo"):
        sys.exit("needs docker-registry (Distribution 2.8.2) and skopeo")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-repl-"))
    try:
        results = asyncio.run(
            capability_run(args, work, binary) if args.capability else run(args, work, binary)
        )
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nresults: {args.json}", file=sys.stderr)


async def run(args: argparse.Namespace, work: Path, binary: str) -> dict[str, Any]:
    bench = make_set(
        args.images, args.repos, args.medium, args.medium_mib, args.signatures, args.seed
    )
    repos = list(bench.repos)
    n_tags = sum(len(t) for t in bench.tags.values())
    options = CopyOptions(
        tag_concurrency=args.tag_concurrency,
        blob_concurrency=args.blob_concurrency,
        transfer=TransferOptions(),
    )
    spec = servers.distribution_spec(binary)
    with (
        servers.running(spec, work / "src") as src,
        servers.running(spec, work / "dst-engine") as dst_a,
        servers.running(spec, work / "dst-skopeo") as dst_b,
    ):
        await push_set(src.base_url, bench)
        source = await snapshot(src.base_url, repos)
        print(f"set: {n_tags} image tags in {len(repos)} repositories, "
              f"{sum(len(t) for t in source.values())} tags in all, {bench.bytes / MB:.1f} MB", file=sys.stderr)  # fmt: skip
        skopeo = SkopeoSync(work / "skopeo-home")
        rounds: list[dict[str, Any]] = []
        busy_before = _busy()
        for i in range(args.rounds):
            ns = f"r{i}"
            row: dict[str, Any] = {}
            order = ["engine", "skopeo"] if i % 2 == 0 else ["skopeo", "engine"]
            for who in order:
                await _sync()
                if who == "engine":
                    row["engine"] = await run_engine(
                        src.base_url, dst_a.base_url, ns, bench, options
                    )
                else:
                    skopeo.reset_cache()
                    seconds = await asyncio.to_thread(
                        skopeo.sync, src.registry, repos, f"{dst_b.registry}/{ns}"
                    )
                    row["skopeo"] = {"seconds": seconds}
            dst_repos = [f"{ns}/{r.rsplit('/', 1)[1]}" for r in repos]
            a, b = (
                await snapshot(dst_a.base_url, dst_repos),
                await snapshot(dst_b.base_url, dst_repos),
            )
            diffs = _differences(
                source,
                {r: a[f"{ns}/{r.rsplit('/', 1)[1]}"] for r in repos},
                {r: b[f"{ns}/{r.rsplit('/', 1)[1]}"] for r in repos},
            )
            # skopeo 1.9.3 cannot keep the referrers-tag index as it is: without
            # --preserve-digests it converts it (new digest), with it the sync fails. Noted, not
            # fatal; everything else must match the source exactly, for both copiers.
            rewritten = [d for d in diffs if d[1].startswith("sha256-") and d[2] == d[3]]
            if len(rewritten) != len(diffs):
                raise RuntimeError(f"round {i}: destinations differ from the source: {diffs[:5]}")
            row["skopeo_rewrote"] = [f"{d[0]}:{d[1]}" for d in rewritten]
            for who in ("engine", "skopeo"):
                row[who]["MBps"] = bench.bytes / MB / row[who]["seconds"]
                row[who]["images_per_s"] = n_tags / row[who]["seconds"]
            rounds.append(row)
            print(f"round {i}: engine {row['engine']['seconds']:.2f}s, skopeo sync "
                  f"{row['skopeo']['seconds']:.2f}s", file=sys.stderr)  # fmt: skip
        big = await big_section(args, work, src, dst_a, dst_b, skopeo) if args.big_mib else None
        busy_after = _busy()
    best = {w: min(rounds, key=lambda r: r[w]["seconds"])[w] for w in ("engine", "skopeo")}
    ratio = best["skopeo"]["seconds"] / best["engine"]["seconds"]
    med = {w: statistics.median(r[w]["seconds"] for r in rounds) for w in ("engine", "skopeo")}
    print(f"\n{'':28}{'engine':>10}{'skopeo sync':>13}{'engine/skopeo':>15}")
    print(
        f"{'seconds (best)':28}{best['engine']['seconds']:>10.2f}{best['skopeo']['seconds']:>13.2f}{ratio:>14.2f}x"
    )
    print(
        f"{'seconds (median)':28}{med['engine']:>10.2f}{med['skopeo']:>13.2f}{med['skopeo'] / med['engine']:>14.2f}x"
    )
    print(
        f"{'MB/s (best)':28}{best['engine']['MBps']:>10.1f}{best['skopeo']['MBps']:>13.1f}{ratio:>14.2f}x"
    )
    print(
        f"{'images/s (best)':28}{best['engine']['images_per_s']:>10.1f}{best['skopeo']['images_per_s']:>13.1f}{ratio:>14.2f}x"
    )
    if big:
        print(
            f"\n{args.big_mib} MiB layer: engine {big['engine_MBps']:.0f} MB/s, skopeo copy "
            f"{big['skopeo_MBps']:.0f} MB/s ({big['skopeo_s'] / big['engine_s']:.2f}x)"
        )
        for name in ("moorage", "distribution"):
            c = big[f"cut_{name}"]
            print(
                f"  cut mid-layer into {name}: {c['seconds']:.1f}s, {c['cuts']} cut, "
                f"{c['resumes']} resumed, {c['restarts']} restarted, {c['bytes_sent'] / MB:.0f} MB sent"
            )
    print(
        f"busy CPU before/after: {busy_before:.0f}% / {busy_after:.0f}% (other work on the machine)"
    )
    return {
        "settings": vars(args),
        "set": {"image_tags": n_tags, "repos": len(repos), "bytes": bench.bytes},
        "rounds": rounds,
        "best": best,
        "ratio_engine_over_skopeo": ratio,
        "big": big,
        "busy_cpu_before": busy_before,
        "busy_cpu_after": busy_after,
    }


ADMIN_PASSWORD = "bench-admin-password-1"


async def capability_run(args: argparse.Namespace, work: Path, binary: str) -> dict[str, Any]:
    """The replication capability end to end: a push policy from a Moorage to a Distribution,
    run through the REST API (a planning job, one job per tag), beside ``skopeo sync``."""
    import httpx

    from moorage.replication import Credentials

    bench = make_set(
        args.images, args.repos, args.medium, args.medium_mib, args.signatures, args.seed
    )
    repos = list(bench.repos)
    n_tags = sum(len(t) for t in bench.tags.values())
    env = {
        "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET": "bench-key-encryption-secret",
        "MOORAGE_LOG_LEVEL": "warning",
        "MOORAGE_LOG_ACCESS_LOG": "false",
    }
    moorage = servers.moorage_spec(f"{sys.executable} -m moorage.cli", 1, None, "moorage", env)
    spec = servers.distribution_spec(binary)
    auth = ("admin", ADMIN_PASSWORD)
    with (
        servers.running(moorage, work / "moorage") as src,
        servers.running(spec, work / "dst-capability") as dst_a,
        servers.running(spec, work / "dst-skopeo") as dst_b,
        httpx.Client(base_url=src.base_url + "/api/v1", auth=auth, timeout=120) as api,
    ):
        await push_set(src.base_url, bench, Credentials(*auth))
        source = await snapshot_auth(src.base_url, repos, Credentials(*auth))
        print(f"set: {n_tags} image tags in {len(repos)} repositories, "
              f"{sum(len(t) for t in source.values())} tags in all, {bench.bytes / MB:.1f} MB", file=sys.stderr)  # fmt: skip
        remote = {"name": "dist", "url": dst_a.base_url}
        await asyncio.to_thread(lambda: api.post("/replication/remotes", json=remote).raise_for_status())
        skopeo = SkopeoSync(work / "skopeo-home")
        rounds: list[dict[str, Any]] = []
        busy_before = _busy()
        for i in range(args.rounds):
            ns = f"r{i}"
            body = {
                "name": f"bench-{ns}", "remote": "dist", "direction": "push",
                "source": "bench/**", "dest_namespace": ns,
            }  # fmt: skip
            await asyncio.to_thread(
                lambda b=body: api.post("/replication/policies", json=b).raise_for_status()
            )
            row: dict[str, Any] = {}
            order = ["capability", "skopeo"] if i % 2 == 0 else ["skopeo", "capability"]
            for who in order:
                await _sync()
                if who == "capability":
                    row["capability"] = await asyncio.to_thread(_run_policy, api, f"bench-{ns}")
                else:
                    skopeo.reset_cache()
                    seconds = await asyncio.to_thread(
                        skopeo.sync, src.registry, repos, f"{dst_b.registry}/{ns}",
                        f"admin:{ADMIN_PASSWORD}",
                    )  # fmt: skip
                    row["skopeo"] = {"seconds": seconds}
            dst_repos = [f"{ns}/{r.rsplit('/', 1)[1]}" for r in repos]
            a = await snapshot(dst_a.base_url, dst_repos)
            b = await snapshot(dst_b.base_url, dst_repos)
            diffs = _differences(
                source,
                {r: a[f"{ns}/{r.rsplit('/', 1)[1]}"] for r in repos},
                {r: b[f"{ns}/{r.rsplit('/', 1)[1]}"] for r in repos},
            )
            # The source (Moorage) indexes the SBOM through the OCI 1.1 referrers API: the
            # capability writes the referrers tag Distribution needs; skopeo 1.9 does not copy
            # referrers at all. Everything else must match the source exactly.
            extra = [d for d in diffs if d[1].startswith("sha256-") and d[2] is None and d[4] is None]
            if len(extra) != len(diffs):
                raise RuntimeError(f"round {i}: destinations differ from the source: {diffs[:5]}")
            row["capability_referrers_tags"] = [f"{d[0]}:{d[1]}" for d in extra]
            for who in ("capability", "skopeo"):
                row[who]["MBps"] = bench.bytes / MB / row[who]["seconds"]
                row[who]["images_per_s"] = n_tags / row[who]["seconds"]
            rounds.append(row)
            print(f"round {i}: capability {row['capability']['seconds']:.2f}s, skopeo sync "
                  f"{row['skopeo']['seconds']:.2f}s", file=sys.stderr)  # fmt: skip
        busy_after = _busy()
    best = {w: min(rounds, key=lambda r: r[w]["seconds"])[w] for w in ("capability", "skopeo")}
    ratio = best["skopeo"]["seconds"] / best["capability"]["seconds"]
    med = {w: statistics.median(r[w]["seconds"] for r in rounds) for w in ("capability", "skopeo")}
    print(f"\n{'':28}{'capability':>12}{'skopeo sync':>13}{'ratio':>10}")
    print(f"{'seconds (best)':28}{best['capability']['seconds']:>12.2f}{best['skopeo']['seconds']:>13.2f}{ratio:>9.2f}x")  # fmt: skip
    print(f"{'seconds (median)':28}{med['capability']:>12.2f}{med['skopeo']:>13.2f}{med['skopeo'] / med['capability']:>9.2f}x")  # fmt: skip
    print(f"{'MB/s (best)':28}{best['capability']['MBps']:>12.1f}{best['skopeo']['MBps']:>13.1f}{ratio:>9.2f}x")  # fmt: skip
    print(f"{'images/s (best)':28}{best['capability']['images_per_s']:>12.1f}{best['skopeo']['images_per_s']:>13.1f}{ratio:>9.2f}x")  # fmt: skip
    print(f"busy CPU before/after: {busy_before:.0f}% / {busy_after:.0f}% (other work on the machine)")  # fmt: skip
    return {
        "mode": "capability",
        "settings": vars(args),
        "set": {"image_tags": n_tags, "repos": len(repos), "bytes": bench.bytes},
        "rounds": rounds,
        "best": best,
        "ratio_capability_over_skopeo": ratio,
        "busy_cpu_before": busy_before,
        "busy_cpu_after": busy_after,
    }


def _run_policy(api: Any, policy: str) -> dict[str, Any]:
    """POST run, then poll the execution until it ends; the time between the two."""
    t0 = time.perf_counter()
    r = api.post(f"/replication/policies/{policy}/run")
    r.raise_for_status()
    execution = r.json()["execution"]
    while True:
        doc = api.get(f"/replication/executions/{execution}").json()
        if doc["state"] not in ("planning", "running"):
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    if doc["state"] != "succeeded":
        failed = [(t["src_repo"], t["ref"], t["error"]) for t in doc["tasks"] if t["error"]]
        raise RuntimeError(f"execution {execution} {doc['state']}: {failed[:3]}")
    tasks = doc["tasks"]
    return {
        "seconds": seconds,
        "tags": len(tasks),
        "bytes_sent": doc["bytes"],
        "blobs_uploaded": sum(t["detail"]["blobs_uploaded"] for t in tasks),
        "blobs_mounted": sum(t["detail"]["blobs_mounted"] for t in tasks),
        "nodes": sorted({t["node"] for t in tasks}),
    }


async def snapshot_auth(url: str, repos: list[str], credentials: Any) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    async with RegistryClient(url, credentials, auth_scheme="basic") as c:
        for repo in repos:
            tags = await c.tags(repo)
            infos = await asyncio.gather(*(c.head_manifest(repo, t) for t in tags))
            out[repo] = {t: i.digest for t, i in zip(tags, infos, strict=True) if i is not None}
    return out


async def _sync() -> None:
    """Flush dirty pages (untimed) so that one copy's writeback does not land on the next."""
    await asyncio.to_thread(subprocess.run, ["sync"], check=False)


def _differences(
    source: dict[str, dict[str, str]],
    engine: dict[str, dict[str, str]],
    skopeo: dict[str, dict[str, str]],
) -> list[tuple[str, str, str | None, str | None, str | None]]:
    """(repo, tag, source digest, engine's, skopeo's) wherever the copies disagree."""
    out = []
    for repo, tags in source.items():
        for tag in sorted(set(tags) | set(engine[repo]) | set(skopeo[repo])):
            want = tags.get(tag)
            if engine[repo].get(tag) != want or skopeo[repo].get(tag) != want:
                out.append((repo, tag, want, engine[repo].get(tag), skopeo[repo].get(tag)))
    return out


def _busy(seconds: float = 2.0) -> float:
    def snap() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]

    t1, i1 = snap()
    time.sleep(seconds)
    t2, i2 = snap()
    return 100.0 * (1 - (i2 - i1) / max(1, t2 - t1))


if __name__ == "__main__":
    main()
