"""TLS material for the embedded stack, generated at run time with ``openssl``.

One private certificate authority per stack and one server certificate (for the
stack's host, as an IP address and as ``localhost``) that both the broker and
redis-server present. Everything lives under ``<data_dir>/tls``, readable by its
owner only, and is made once: clients trust ``ca.pem`` (``STREAMREC_BROKER__SSL_CAFILE``,
``STREAMREC_REDIS__SSL_CAFILE``). Nothing here is ever committed: ``var/`` is ignored.

Blocking; used by ``streamrec.infra.stack``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from streamrec.infra.errors import StackError

VALID_DAYS = 825  # the longest validity clients accept for a server certificate


@dataclass(frozen=True)
class TlsFiles:
    directory: Path
    keystore_password: str = field(repr=False)

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def key(self) -> Path:
        return self.directory / "server.key"

    @property
    def keystore(self) -> Path:
        """The server's key and chain as PKCS#12 (the broker's keystore)."""
        return self.directory / "server.p12"


def ensure_tls_files(directory: Path, host: str) -> TlsFiles:
    """The stack's CA and server certificate under ``directory``, made on the first call."""
    password_file = directory / "keystore.password"
    if password_file.exists() and all(p.exists() for p in _paths(directory)):
        return TlsFiles(directory, password_file.read_text().strip())
    openssl = shutil.which("openssl")
    if openssl is None:
        raise StackError("TLS for the embedded stack needs `openssl` on PATH (Debian/Ubuntu: `apt-get install openssl`)")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    password = secrets.token_urlsafe(24)
    password_file.write_text(password)
    files = TlsFiles(directory, password)
    _generate(openssl, files, host)
    for path in directory.iterdir():
        os.chmod(path, 0o600)
    return files


def _paths(directory: Path) -> list[Path]:
    files = TlsFiles(directory, "")
    return [files.ca, files.cert, files.key, files.keystore]


def _generate(openssl: str, files: TlsFiles, host: str) -> None:
    d = files.directory
    san = f"IP:{host}" if _is_ip(host) else f"DNS:{host}"
    (d / "server.ext").write_text(
        f"subjectAltName={san},DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    days = str(VALID_DAYS)
    _run(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", days,
         "-keyout", str(d / "ca.key"), "-out", str(files.ca), "-subj", "/CN=streamrec embedded stack CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _run(openssl, "req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", str(files.key),
         "-out", str(d / "server.csr"), "-subj", f"/CN={host}")
    _run(openssl, "x509", "-req", "-sha256", "-days", days, "-in", str(d / "server.csr"), "-CA", str(files.ca),
         "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(files.cert), "-extfile", str(d / "server.ext"))
    _run(openssl, "pkcs12", "-export", "-in", str(files.cert), "-inkey", str(files.key), "-certfile", str(files.ca),
         "-name", "server", "-out", str(files.keystore), "-passout", "env:STREAMREC_KEYSTORE_PASSWORD",
         env={"STREAMREC_KEYSTORE_PASSWORD": files.keystore_password})


def _run(openssl: str, *args: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise StackError(f"openssl {args[0]} failed while making the stack's TLS certificates:\n{result.stderr[-1500:]}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def handshake(host: str, port: int, context: ssl.SSLContext, timeout_s: float = 10.0) -> None:
    """One TLS handshake with host:port, closed at once. Raises ``ssl.SSLCertVerificationError``
    when the server's certificate does not verify, ``OSError`` when no session comes up.
    (A failed handshake inside asyncio leaves its socket to the garbage collector.)"""
    with socket.create_connection((host, port), timeout=timeout_s) as raw, context.wrap_socket(raw, server_hostname=host):
        pass
