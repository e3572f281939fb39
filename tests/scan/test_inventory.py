"""Inventory from layers built here out of real package databases (tests/data/scan/SOURCES.md):
each analyzer, whiteouts and opaque directories across layers, gzip/zstd/plain layers, and
hostile archives that end in recorded errors, never in an exception."""

from __future__ import annotations

import asyncio
import io
import subprocess
import tarfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moorage.scan.inventory import analyze_layer, inventory_from_json, inventory_json, merge
from moorage.scan.model import Inventory, OSInfo, Package
from moorage.scan.walker import Limits

from .layers import DATA, layer, metadata, package_json, tar_bytes


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def scan(layers: list[bytes], limits: Limits | None = None, chunk: int = 65536) -> Inventory:
    async def run() -> Inventory:
        records = []
        for i, blob in enumerate(layers):
            records.append((f"sha256:{i:064d}", await analyze_layer(_chunks(blob, chunk), limits)))
        return merge(records)

    return asyncio.run(run())


def D(i: int) -> str:
    return f"sha256:{i:064d}"


def fat_jar() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        z.write(DATA / "accessors-smart-2.5.2.jar", "BOOT-INF/lib/accessors-smart-2.5.2.jar")
        z.write(
            DATA / "animal-sniffer-annotations-1.14.jar",
            "BOOT-INF/lib/animal-sniffer-annotations-1.14.jar",
        )
    return buf.getvalue()


def host_dpkg() -> list[tuple[str, str, str, str, str]]:
    """This machine's installed packages as dpkg-query reports them (not our parser)."""
    out = subprocess.run(
        [
            "dpkg-query",
            "-W",
            "-f",
            "${db:Status-Status}\\t${Package}\\t${Version}\\t${source:Package}\\t"
            "${source:Version}\\t${Architecture}\\n",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        status, *fields = line.split("\t")
        if status == "installed":
            rows.append((fields[0], fields[1], fields[2], fields[3], fields[4]))
    return sorted(rows)


def test_debian_image_with_language_packages() -> None:
    status = Path("/var/lib/dpkg/status").read_bytes()
    os_release = Path("/etc/os-release").read_bytes()
    hello = (DATA / "hello-go").read_bytes()
    base = layer(
        {
            "etc/os-release": os_release,
            "var/lib/dpkg/status": status,
            "usr/lib/python3/dist-packages/requests-2.31.0.dist-info/METADATA": metadata(
                "requests", "2.31.0", "Apache 2.0"
            ),
            "usr/lib/python3/dist-packages/gone-1.0.dist-info/METADATA": metadata("gone", "1.0"),
            "opt/app/node_modules/old/package.json": package_json("old", "0.1.0"),
        },
        "gzip",
    )
    app = layer(
        {
            # the python package removed, the node_modules directory replaced wholesale
            "usr/lib/python3/dist-packages/.wh.gone-1.0.dist-info": b"",
            "opt/app/node_modules/.wh..wh..opq": b"",
            "opt/app/node_modules/lodash/package.json": package_json("lodash", "4.17.20"),
            "opt/app/node_modules/lodash/fp/package.json": b'{"name": "not-a-package"}',
            "opt/app/node_modules/@babel/core/package.json": package_json("@babel/core", "7.0.0"),
            "opt/app/node_modules/@babel/core/node_modules/semver/package.json": package_json(
                "semver", "5.7.1", "ISC"
            ),
            "usr/local/lib/python3.11/site-packages/Django.egg-info/PKG-INFO": metadata(
                "Django", "3.2.1", "BSD"
            ),
            "usr/local/bin/hello": ("x", hello),
            "srv/app.jar": fat_jar(),
        },
        "zstd",
    )
    inv = scan([base, app])
    assert inv.os == OSInfo("debian", "12", "Debian GNU/Linux 12 (bookworm)", (), "bookworm"), (
        "this machine is Debian 12"
    )
    assert inv.errors == ()
    assert inv.layers == (D(0), D(1))
    debs = sorted(
        (p.name, p.version, p.source_name, p.source_version, p.arch)
        for p in inv.packages
        if p.ecosystem == "deb"
    )
    assert debs == host_dpkg()
    libc = next(p for p in inv.packages if p.name == "libc6")
    assert libc.purl.startswith("pkg:deb/debian/libc6@")
    assert libc.purl.endswith("?arch=amd64&distro=debian-12")
    assert libc.layer_digest == D(0) and libc.path == "var/lib/dpkg/status"

    others = [p for p in inv.packages if p.ecosystem != "deb"]
    go_extra = (("go_version", "go1.27.3"),)
    assert others == [
        Package(
            "golang",
            "example.com/greet",
            "v1.4.2",
            purl="pkg:golang/example.com/greet@v1.4.2",
            layer_digest=D(1),
            path="usr/local/bin/hello",
            extra=go_extra + (("replaced_by", "../greet"),),
        ),
        Package(
            "golang",
            "example.com/hello",
            "(devel)",
            purl="pkg:golang/example.com/hello@%28devel%29",
            layer_digest=D(1),
            path="usr/local/bin/hello",
            extra=go_extra,
        ),
        Package(
            "golang",
            "stdlib",
            "1.27.3",
            purl="pkg:golang/stdlib@1.27.3",
            layer_digest=D(1),
            path="usr/local/bin/hello",
            extra=go_extra,
        ),
        Package(
            "maven",
            "net.minidev:accessors-smart",
            "2.5.2",
            purl="pkg:maven/net.minidev/accessors-smart@2.5.2",
            layer_digest=D(1),
            path="srv/app.jar!/BOOT-INF/lib/accessors-smart-2.5.2.jar!/"
            "META-INF/maven/net.minidev/accessors-smart/pom.properties",
        ),
        Package(
            "maven",
            "org.codehaus.mojo:animal-sniffer-annotations",
            "1.14",
            purl="pkg:maven/org.codehaus.mojo/animal-sniffer-annotations@1.14",
            layer_digest=D(1),
            path="srv/app.jar!/BOOT-INF/lib/animal-sniffer-annotations-1.14.jar!/"
            "META-INF/maven/org.codehaus.mojo/animal-sniffer-annotations/pom.properties",
        ),
        Package(
            "npm",
            "@babel/core",
            "7.0.0",
            purl="pkg:npm/%40babel/core@7.0.0",
            layer_digest=D(1),
            path="opt/app/node_modules/@babel/core/package.json",
            licenses=("MIT",),
        ),
        Package(
            "npm",
            "lodash",
            "4.17.20",
            purl="pkg:npm/lodash@4.17.20",
            layer_digest=D(1),
            path="opt/app/node_modules/lodash/package.json",
            licenses=("MIT",),
        ),
        Package(
            "npm",
            "semver",
            "5.7.1",
            purl="pkg:npm/semver@5.7.1",
            layer_digest=D(1),
            path="opt/app/node_modules/@babel/core/node_modules/semver/package.json",
            licenses=("ISC",),
        ),
        Package(
            "pypi",
            "Django",
            "3.2.1",
            purl="pkg:pypi/django@3.2.1",
            layer_digest=D(1),
            path="usr/local/lib/python3.11/site-packages/Django.egg-info/PKG-INFO",
            licenses=("BSD",),
        ),
        Package(
            "pypi",
            "requests",
            "2.31.0",
            purl="pkg:pypi/requests@2.31.0",
            layer_digest=D(0),
            path="usr/lib/python3/dist-packages/requests-2.31.0.dist-info/METADATA",
            licenses=("Apache 2.0",),
        ),
    ]
    # the inventory survives its JSON form (what the results table keeps)
    assert inventory_from_json(inventory_json(inv)) == inv


def test_alpine_apk_database() -> None:
    inv = scan(
        [
            layer(
                {
                    "etc/alpine-release": b"3.14.2\n",
                    "lib/apk/db/installed": (DATA / "apk-installed").read_bytes(),
                },
                "none",
            )
        ]
    )
    assert inv.os == OSInfo("alpine", "3.14.2", "Alpine Linux v3.14.2")
    assert [
        (p.name, p.version, p.source_name, p.source_version, p.arch, p.licenses, p.purl)
        for p in inv.packages
    ] == [
        ("ca-certificates-bundle", "20191127-r5", "ca-certificates", "20191127-r5", "armv7",
         ("MPL-2.0 AND MIT",),
         "pkg:apk/alpine/ca-certificates-bundle@20191127-r5?arch=armv7&distro=alpine-3.14.2"),
        ("libc-utils", "0.7.2-r3", "libc-dev", "0.7.2-r3", "armv7",
         ("BSD-2-Clause AND BSD-3-Clause",),
         "pkg:apk/alpine/libc-utils@0.7.2-r3?arch=armv7&distro=alpine-3.14.2"),
        ("libcrypto1.1", "1.1.1k-r0", "openssl", "1.1.1k-r0", "armv7", ("OpenSSL",),
         "pkg:apk/alpine/libcrypto1.1@1.1.1k-r0?arch=armv7&distro=alpine-3.14.2"),
        ("libssl1.1", "1.1.1k-r0", "openssl", "1.1.1k-r0", "armv7", ("OpenSSL",),
         "pkg:apk/alpine/libssl1.1@1.1.1k-r0?arch=armv7&distro=alpine-3.14.2"),
        ("musl", "1.2.2-r3", "musl", "1.2.2-r3", "armv7", ("MIT",),
         "pkg:apk/alpine/musl@1.2.2-r3?arch=armv7&distro=alpine-3.14.2"),
        ("scanelf", "1.3.2-r0", "pax-utils", "1.3.2-r0", "armv7", ("GPL-2.0-only",),
         "pkg:apk/alpine/scanelf@1.3.2-r0?arch=armv7&distro=alpine-3.14.2"),
        ("zlib", "1.2.11-r3", "zlib", "1.2.11-r3", "armv7", ("Zlib",),
         "pkg:apk/alpine/zlib@1.2.11-r3?arch=armv7&distro=alpine-3.14.2"),
    ]  # fmt: skip


def test_rpm_sqlite_database() -> None:
    inv = scan(
        [
            layer(
                {
                    "etc/redhat-release": b"Rocky Linux release 9.4 (Blue Onyx)\n",
                    "var/lib/rpm/rpmdb.sqlite": (DATA / "rpmdb.sqlite").read_bytes(),
                }
            )
        ]
    )
    assert inv.os == OSInfo("rocky", "9.4", "Rocky Linux release 9.4 (Blue Onyx)")
    assert inv.errors == ()
    assert [
        (p.name, p.version, p.source_name, p.source_version, p.arch, p.licenses, p.purl)
        for p in inv.packages
    ] == [
        ("hello", "2.12.1-3.el9", "hello", "2.12.1-3.el9", "x86_64", ("GPL-3.0-or-later",),
         "pkg:rpm/rocky/hello@2.12.1-3.el9?arch=x86_64&distro=rocky-9.4"),
        ("libfoo", "2:1.0-1.el9", "libfoo", "2:1.0-1.el9", "x86_64", ("MIT",),
         "pkg:rpm/rocky/libfoo@1.0-1.el9?arch=x86_64&distro=rocky-9.4&epoch=2"),
    ]  # fmt: skip


def test_distroless_status_d_and_later_layer_rewrites() -> None:
    para = (
        "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\n"
        "Source: openssl (3.0.11-1~deb12u2)\nVersion: 3.0.11-1~deb12u2+b1\n"
    )
    base = layer(
        {
            "etc/debian_version": b"12.5\n",
            "var/lib/dpkg/status.d/libssl3": para.encode(),
            "var/lib/dpkg/status.d/libssl3.md5sums": b"x  usr/lib/libssl.so.3\n",
            "var/lib/dpkg/status.d/tzdata": b"Package: tzdata\nVersion: 2024a-0+deb12u1\n"
            b"Architecture: all\n",
        }
    )
    # the upper layer replaces tzdata's record by a symlink: the record is gone
    upper = layer({"var/lib/dpkg/status.d/tzdata": ("sym", "/dev/null")})
    inv = scan([base, upper])
    assert inv.os == OSInfo("debian", "12", "Debian 12.5")
    assert [(p.name, p.version, p.source_name, p.source_version) for p in inv.packages] == [
        ("libssl3", "3.0.11-1~deb12u2+b1", "openssl", "3.0.11-1~deb12u2")
    ]


def _bomb() -> bytes:
    import zstandard

    zeros = tar_bytes({"var/lib/dpkg/status": b"\0" * (256 << 20)})
    return zstandard.ZstdCompressor(level=19).compress(zeros)


@pytest.mark.parametrize(
    "case",
    [
        "traversal",
        "bomb",
        "huge-member",
        "garbage",
        "truncated",
        "bad-zip",
        "bad-elf",
        "hardlink",
        "jar-bomb",
    ],
)
def test_hostile_layers_end_in_errors(case: str) -> None:
    limits = Limits(max_member=1 << 20)
    ok = layer({"etc/alpine-release": b"3.20.0\n"})
    if case == "traversal":
        blob = layer(
            {
                "../../../../etc/os-release": b'ID=evil\nVERSION_ID="1"\n',
                "/abs/../lib/apk/db/installed": b"P:x\nV:1\n",
            }
        )
        inv = scan([ok, blob], limits)
        # kept inside the image root: the paths are the image's own
        assert inv.os is not None and inv.os.id == "evil"
        assert [(p.name, p.path) for p in inv.packages] == [("x", "lib/apk/db/installed")]
        return
    if case == "bomb":
        blob = _bomb()
        expect = "compression ratio over"
    elif case == "huge-member":
        blob = layer({"var/lib/dpkg/status": b"Package: a\n" * 200_000})
        expect = "over the 1048576 limit"
    elif case == "garbage":
        blob = b"\x00\x01not a tar archive at all" * 100
        expect = "not a tar archive"
    elif case == "truncated":
        blob = tar_bytes({"var/lib/dpkg/status": b"Package: a\n" * 1000})[:1500]
        expect = "truncated tar archive"
    elif case == "bad-zip":
        blob = layer({"srv/x.jar": b"PK\x03\x04 not really"})
        expect = "not a zip archive"
    elif case == "jar-bomb":
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w", zipfile.ZIP_STORED) as z:  # 60 MiB, deflated below
            z.writestr("x.bin", b"\0" * (60 << 20))
        outer = io.BytesIO()
        with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as z:
            for i in range(6):
                z.writestr(f"lib/{i}.jar", inner.getvalue())
        blob = layer({"srv/bomb.jar": outer.getvalue()})
        expect = "over the inflate budget"
    elif case == "bad-elf":
        blob = layer({"usr/bin/x": ("x", b"\x7fELF\x02\x01\x01" + b"\xff" * 100)})
        expect = "usr/bin/x: BinaryError"
    else:  # a hard link to a host path is never followed
        blob = layer({"etc/os-release": ("link", "/etc/shadow")})
        inv = scan([ok, blob], limits)
        assert inv.os == OSInfo("alpine", "3.20.0", "Alpine Linux v3.20.0")
        return
    inv = scan([ok, blob], limits)
    assert inv.os == OSInfo("alpine", "3.20.0", "Alpine Linux v3.20.0")
    assert len(inv.errors) == 1 and expect in inv.errors[0], inv.errors


def test_chunking_does_not_change_the_result() -> None:
    blob = layer({"lib/apk/db/installed": (DATA / "apk-installed").read_bytes()}, "gzip")
    blob += layer({"etc/alpine-release": b"3.14.2\n"}, "gzip")  # a second gzip member
    one = scan([blob], chunk=1 << 20)
    tiny = scan([blob], chunk=7)
    assert one == tiny and len(one.packages) == 7


def test_long_names_and_pax() -> None:
    deep = "opt/" + "/".join(["d" * 60] * 4) + "/node_modules/x/package.json"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        data = package_json("x", "1.0.0")
        info = tarfile.TarInfo(deep)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    inv = scan([buf.getvalue()])
    assert [(p.name, p.path) for p in inv.packages] == [("x", deep)]


def test_hard_link_to_a_file_of_the_same_layer() -> None:
    hello = (DATA / "hello-go").read_bytes()
    inv = scan(
        [layer({"usr/bin/hello": ("x", hello), "usr/local/bin/hi": ("link", "usr/bin/hello")})]
    )
    stdlib = [p.path for p in inv.packages if p.name == "stdlib"]
    assert stdlib == ["usr/bin/hello", "usr/local/bin/hi"]
