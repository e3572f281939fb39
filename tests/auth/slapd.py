"""A real OpenLDAP ``slapd`` for tests, on free loopback ports, entirely inside a temp directory.

Nothing on the machine is used or changed: the configuration is a cn=config LDIF generated here and
loaded with ``slapadd -n0 -F DIR/slapd.d``; the database (MDB) is ``DIR/db``; the process is
``slapd -d stats -h "ldap://127.0.0.1:P/ [ldaps://127.0.0.1:Q/]" -F DIR/slapd.d``, which stays in
the foreground (``-d``), so the PID we started is the server, and it is stopped by that PID
(SIGTERM, then SIGKILL). A system slapd on port 389, if the package started one, is not touched.
Client tools run with ``LDAPNOINIT=1`` (no ``/etc/ldap/ldap.conf``, no ``~/.ldaprc``).

Usage::

    with Slapd(tls=True) as ldap:            # or Slapd(workdir=path).start() ... .stop()
        alice = ldap.add_user("alice", "pw", mail="alice@example.org")
        ldap.add_group("devs", [alice])                       # groupOfNames / member
        ldap.add_group("ops", ["alice"], kind="posixGroup")   # memberUid
        LDAPConfig(**ldap.config(start_tls=True, ca_file=str(ldap.ca_file)))

The directory, after ``start()``::

    dc=example,dc=org                      (suffix; rootdn cn=admin,dc=example,dc=org)
      ou=people, ou=groups, ou=services
      cn=moorage,ou=services,...           service account (reads everything but passwords)

Access: anonymous may only bind; the service account reads everything except ``userPassword``;
a user reads their own entry. ``allow_unauthenticated_bind=True`` sets ``olcAllows:
bind_anon_dn``, the setting under which a bind with a DN and an empty password *succeeds* (as
anonymous): the trap an authenticator must not fall into.

With ``tls=True`` a throwaway CA and a server certificate (SAN ``IP:127.0.0.1, DNS:localhost``
by default) are made with ``openssl``; slapd serves StartTLS on ``url`` and TLS on ``ldaps_url``,
and ``ca_file`` is the CA to trust. ``make_ca`` makes other CAs (for "wrong CA" tests).

Needs the Debian packages ``slapd``, ``ldap-utils`` and ``openssl``; ``missing_tools()`` says
what is absent (tests skip on it).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.conftest import STARTUP_TIMEOUT, free_port, stop_process

SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
TOOL_ENV = {"LDAPNOINIT": "1"}


def missing_tools() -> str | None:
    """Why a real slapd cannot be run here, or None."""
    for tool in (SLAPD, SLAPADD):
        if not os.access(tool, os.X_OK):
            return f"{tool} not found (apt-get install slapd)"
    for tool in ("ldapadd", "ldapwhoami", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install ldap-utils openssl)"
    if not (MODULE_DIR / "back_mdb.so").exists() and not (MODULE_DIR / "back_mdb.la").exists():
        return f"back_mdb module not found in {MODULE_DIR}"
    return None


# --- LDIF and passwords -----------------------------------------------------------------------


def ssha(password: str) -> str:
    """``{SSHA}`` hash of *password*, as slappasswd makes it."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _safe_ldif_value(value: str) -> bool:
    # RFC 2849 SAFE-STRING: ASCII without NUL/CR/LF, not starting with space, ':' or '<'.
    if not value:
        return True
    if value[0] in " :<" or value[-1] == " ":
        return False
    return all(0x20 <= ord(c) < 0x7F for c in value)


def ldif_line(attr: str, value: str) -> str:
    if _safe_ldif_value(value):
        return f"{attr}: {value}"
    return f"{attr}:: {base64.b64encode(value.encode()).decode()}"


def escape_dn_value(value: str) -> str:
    """Escape an attribute value for use in a DN (RFC 4514 §2.4)."""
    out = "".join("\\" + c if c in '\\,+"<>;=' else c for c in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def ldif_entry(dn: str, attrs: Iterable[tuple[str, str]]) -> str:
    return "\n".join([ldif_line("dn", dn), *(ldif_line(a, v) for a, v in attrs)]) + "\n\n"


# --- certificates -----------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A self-signed CA (P-256): returns (certificate PEM, key PEM)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2",
        "-subj", f"/O=Moorage tests/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def issue_cert(
    directory: Path, ca: tuple[Path, Path], name: str, sans: Sequence[str]
) -> tuple[Path, Path]:
    """A server certificate signed by *ca* for *sans* (``IP:…``/``DNS:…``): (cert, key)."""
    cert, key, csr = (directory / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
    ext = directory / f"{name}.ext"
    ext.write_text(
        f"subjectAltName={','.join(sans)}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/O=Moorage tests/CN={name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2",
        "-extfile", str(ext), "-out", str(cert),
        cwd=directory,
    )  # fmt: skip
    return cert, key


# --- the server -------------------------------------------------------------------------------


class Slapd:
    def __init__(
        self,
        workdir: Path | None = None,
        *,
        suffix: str = "dc=example,dc=org",
        tls: bool = False,
        tls_sans: Sequence[str] = ("IP:127.0.0.1", "DNS:localhost"),
        allow_unauthenticated_bind: bool = False,
        root_password: str = "root-secret",
        service_password: str = "service-secret",
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="moorage-slapd-"))
        self.suffix = suffix
        self.tls = tls
        self.tls_sans = tuple(tls_sans)
        self.allow_unauthenticated_bind = allow_unauthenticated_bind
        self.root_dn = f"cn=admin,{suffix}"
        self.root_password = root_password
        self.people_dn = f"ou=people,{suffix}"
        self.groups_dn = f"ou=groups,{suffix}"
        self.service_dn = f"cn=moorage,ou=services,{suffix}"
        self.service_password = service_password
        self.port = 0
        self.ldaps_port = 0
        self.ca_file: Path | None = None
        self.cert_file: Path | None = None
        self.key_file: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "slapd.log"
        self._gid = 10000

    # --- addresses ---

    @property
    def url(self) -> str:
        """``ldap://127.0.0.1:PORT`` (offers StartTLS when started with tls=True)."""
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        if not self.tls:
            raise RuntimeError("this slapd was started without tls=True")
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def config(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``LDAPConfig`` (or the ``auth.ldap`` YAML section)."""
        cfg: dict[str, Any] = {
            "enabled": True,
            "url": self.url,
            "bind_dn": self.service_dn,
            "bind_password": self.service_password,
            "user_base_dn": self.suffix,
            "group_base_dn": self.groups_dn,
            "timeout": 5.0,
        }
        cfg.update(overrides)
        return cfg

    # --- lifecycle ---

    def start(self, timeout: float = STARTUP_TIMEOUT) -> Slapd:
        if self.proc is not None:
            raise RuntimeError("slapd already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.tls and self.ca_file is None:
            tls_dir = self.workdir / "tls"
            ca = make_ca(tls_dir, "ca")
            self.ca_file = ca[0]
            self.cert_file, self.key_file = issue_cert(tls_dir, ca, "server", self.tls_sans)
        self._write_config()
        last_error = ""
        for _ in range(5):  # a free port can be taken between picking it and slapd binding it
            self.port = free_port()
            self.ldaps_port = free_port() if self.tls else 0
            try:
                self._spawn(timeout)
                return self
            except _PortTaken as exc:
                last_error = str(exc)
        raise RuntimeError(f"slapd could not bind a port:\n{last_error}")

    def _write_config(self) -> None:
        conf_dir, db_dir = self.workdir / "slapd.d", self.workdir / "db"
        for d in (conf_dir, db_dir):
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        global_attrs = [
            ("objectClass", "olcGlobal"),
            ("cn", "config"),
            ("olcPidFile", str(self.workdir / "slapd.pid")),
            ("olcArgsFile", str(self.workdir / "slapd.args")),
        ]
        if self.allow_unauthenticated_bind:
            global_attrs.append(("olcAllows", "bind_anon_dn"))
        if self.tls:
            assert self.ca_file and self.cert_file and self.key_file
            global_attrs += [
                ("olcTLSCACertificateFile", str(self.ca_file)),
                ("olcTLSCertificateFile", str(self.cert_file)),
                ("olcTLSCertificateKeyFile", str(self.key_file)),
            ]
        text = ldif_entry("cn=config", global_attrs)
        text += ldif_entry(
            "cn=module{0},cn=config",
            [
                ("objectClass", "olcModuleList"),
                ("cn", "module{0}"),
                ("olcModulePath", str(MODULE_DIR)),
                ("olcModuleLoad", "back_mdb"),
            ],
        )
        text += ldif_entry(
            "cn=schema,cn=config", [("objectClass", "olcSchemaConfig"), ("cn", "schema")]
        )
        for schema in ("core", "cosine", "inetorgperson", "nis"):
            text += f"include: file://{SCHEMA_DIR / schema}.ldif\n\n"
        text += ldif_entry(
            "olcDatabase={-1}frontend,cn=config",
            [
                ("objectClass", "olcDatabaseConfig"),
                ("objectClass", "olcFrontendConfig"),
                ("olcDatabase", "{-1}frontend"),
                ("olcSizeLimit", "500"),
            ],
        )
        text += ldif_entry(
            "olcDatabase={0}config,cn=config",
            [
                ("objectClass", "olcDatabaseConfig"),
                ("olcDatabase", "{0}config"),
                ("olcAccess", "{0}to * by * none"),
            ],
        )
        text += ldif_entry(
            "olcDatabase={1}mdb,cn=config",
            [
                ("objectClass", "olcDatabaseConfig"),
                ("objectClass", "olcMdbConfig"),
                ("olcDatabase", "{1}mdb"),
                ("olcSuffix", self.suffix),
                ("olcRootDN", self.root_dn),
                ("olcRootPW", ssha(self.root_password)),
                ("olcDbDirectory", str(db_dir)),
                ("olcDbMaxSize", str(256 * 1024 * 1024)),
                ("olcDbIndex", "objectClass eq"),
                ("olcDbIndex", "uid,cn,mail eq"),
                ("olcDbIndex", "member,uniqueMember,memberUid eq"),
                (
                    "olcAccess",
                    "{0}to attrs=userPassword by self write by anonymous auth by * none",
                ),
                (
                    "olcAccess",
                    f'{{1}}to * by dn.exact="{self.service_dn}" read by self read by * none',
                ),
            ],
        )
        (self.workdir / "config.ldif").write_text(text)
        self._run([SLAPADD, "-n0", "-F", str(conf_dir), "-l", str(self.workdir / "config.ldif")])
        # The tree's top, loaded offline into the database before the server starts.
        base = ldif_entry(
            self.suffix,
            [
                ("objectClass", "dcObject"),
                ("objectClass", "organization"),
                ("dc", self.suffix.split(",")[0].split("=", 1)[1]),
                ("o", "Moorage tests"),
            ],
        )
        for ou in ("people", "groups", "services"):
            base += ldif_entry(
                f"ou={ou},{self.suffix}", [("objectClass", "organizationalUnit"), ("ou", ou)]
            )
        base += ldif_entry(
            self.service_dn,
            [
                ("objectClass", "organizationalRole"),
                ("objectClass", "simpleSecurityObject"),
                ("cn", "moorage"),
                ("userPassword", ssha(self.service_password)),
            ],
        )
        (self.workdir / "base.ldif").write_text(base)
        self._run([SLAPADD, "-n1", "-F", str(conf_dir), "-l", str(self.workdir / "base.ldif")])

    def _spawn(self, timeout: float) -> None:
        urls = [f"ldap://127.0.0.1:{self.port}/"]
        if self.tls:
            urls.append(f"ldaps://127.0.0.1:{self.ldaps_port}/")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    SLAPD, "-d", "stats", "-s", "0",
                    "-h", " ".join(urls), "-F", str(self.workdir / "slapd.d"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **TOOL_ENV},
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                text = self.log()
                if "Address already in use" in text:
                    raise _PortTaken(text[-2000:])
                raise RuntimeError(f"slapd exited at start:\n{text}")
            probe = subprocess.run(
                [
                    "ldapwhoami", "-x", "-H", self.url, "-o", "nettimeout=2",
                    "-D", self.root_dn, "-w", self.root_password,
                ],
                capture_output=True,
                env={**os.environ, **TOOL_ENV},
                timeout=10,
                check=False,
            )  # fmt: skip
            if probe.returncode == 0:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"slapd did not answer within {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 10) -> int | None:
        """Stop the slapd we started (by its PID). Returns its exit status."""
        code: int | None = None
        if self.proc is not None:
            code = stop_process(self.proc, timeout=timeout)
            self.proc = None
        return code

    def cleanup(self) -> None:
        """Stop, and remove the work directory if this object created it."""
        self.stop()
        if self._own_workdir and not os.environ.get("MOORAGE_TEST_KEEP_TMP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Slapd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-20000:]
        return ""

    # --- directory content (online, as the root DN) ---

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, **TOOL_ENV},
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[:1])} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}"
            )
        return proc.stdout

    def _tool(self, tool: str, *args: str, stdin: str | None = None) -> str:
        if not self.running:
            raise RuntimeError("slapd is not running")
        return self._run(
            [tool, "-x", "-H", self.url, "-D", self.root_dn, "-w", self.root_password, *args],
            stdin,
        )

    def ldapadd(self, ldif: str) -> None:
        self._tool("ldapadd", stdin=ldif)

    def ldapmodify(self, ldif: str) -> None:
        self._tool("ldapmodify", stdin=ldif)

    def ldapdelete(self, *dns: str) -> None:
        self._tool("ldapdelete", *dns)

    def add_ou(self, name: str, parent: str | None = None) -> str:
        dn = f"ou={escape_dn_value(name)},{parent or self.suffix}"
        self.ldapadd(ldif_entry(dn, [("objectClass", "organizationalUnit"), ("ou", name)]))
        return dn

    def add_user(
        self,
        uid: str,
        password: str | None,
        *,
        cn: str | None = None,
        sn: str | None = None,
        mail: str | None = None,
        display_name: str | None = None,
        rdn: str | None = None,
        parent: str | None = None,
        extra_uids: Sequence[str] = (),
    ) -> str:
        """Add an inetOrgPerson (``uid=UID,ou=people,SUFFIX`` unless *rdn*/*parent*); its DN."""
        dn = f"{rdn or 'uid=' + escape_dn_value(uid)},{parent or self.people_dn}"
        attrs = [("objectClass", "inetOrgPerson"), ("uid", uid)]
        attrs += [("uid", u) for u in extra_uids]
        attrs += [("cn", cn or uid), ("sn", sn or uid)]
        if mail:
            attrs.append(("mail", mail))
        if display_name:
            attrs.append(("displayName", display_name))
        if password is not None:
            attrs.append(("userPassword", ssha(password)))
        self.ldapadd(ldif_entry(dn, attrs))
        return dn

    def add_group(
        self,
        name: str,
        members: Sequence[str],
        *,
        kind: str = "groupOfNames",
        parent: str | None = None,
    ) -> str:
        """Add a group: ``groupOfNames`` (member DNs), ``groupOfUniqueNames`` (uniqueMember DNs)
        or ``posixGroup`` (memberUid usernames). Returns its DN."""
        dn = f"cn={escape_dn_value(name)},{parent or self.groups_dn}"
        attrs: list[tuple[str, str]] = [("objectClass", kind), ("cn", name)]
        if kind == "groupOfNames":
            attrs += [("member", m) for m in members] or [("member", "")]
        elif kind == "groupOfUniqueNames":
            attrs += [("uniqueMember", m) for m in members] or [("uniqueMember", "")]
        elif kind == "posixGroup":
            self._gid += 1
            attrs += [("gidNumber", str(self._gid)), *(("memberUid", m) for m in members)]
        else:
            raise ValueError(f"unknown group kind {kind!r}")
        self.ldapadd(ldif_entry(dn, attrs))
        return dn

    def set_password(self, dn: str, password: str) -> None:
        self.ldapmodify(
            ldif_line("dn", dn)
            + "\nchangetype: modify\nreplace: userPassword\n"
            + ldif_line("userPassword", ssha(password))
            + "\n-\n"
        )


class _PortTaken(RuntimeError):
    pass
