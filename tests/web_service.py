"""A real `lifecycle serve` process for tests: a seeded store, one user per role, the
process started on a free port and stopped afterwards, its log kept in a file."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from lifecycle.services.cases.users import UserBook
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.processes import env_for, wait_for

SEEDED_AT = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
EMAIL = "Amara.Oyelaran-Whitcombe@example.org"
NAME = "Amara Oyelaran-Whitcombe"
ROLES = ("dpo", "responder", "auditor", "ingest")


def seed_facts() -> list[dict[str, Any]]:
    return [
        collected("m:1", "2025-01-02T10:00:00Z", "signup", {"email": EMAIL, "name": NAME}),
        fact("access-requested", "m:1", "2025-02-01T09:00:00Z", request="SAR-1",
             identity_check=True),
        collected("m:2", "2025-01-03T10:00:00Z", "signup",
                  {"email": "quentin.vasquez-hale@example.org"}),
        fact("shared", "m:2", "2025-01-04T10:00:00Z", recipient="mailhouse",
             role="processor", purpose="direct-marketing", basis="consent",
             categories=["contact"], country="GB"),
        fact("erasure-requested", "m:2", "2025-02-02T09:00:00Z", request="ER-2"),
    ]


@dataclass
class Service:
    settings: Settings
    url: str
    tokens: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes]
    _log: IO[bytes] = field(repr=False)

    def client(self, role: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30,
                            follow_redirects=False, verify=False)

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(settings: Settings, log_dir: Path, seed: bool = True,
                  tls: tuple[Path, Path] | None = None) -> Service:
    """Seeds the store (unless `seed` is false), adds a user per role, starts the service
    (over TLS with `tls` = (certificate, key)) and waits for /healthz."""
    with Ledger(settings) as ledger:
        if seed:
            report = ledger.ingest(lines(seed_facts()), SEEDED_AT)
            assert report.ok, report.as_dict()
        book = UserBook(ledger.vault.engine)
        tokens = {role: book.add(f"{role}-user", role, SEEDED_AT, "test") for role in ROLES}
    port = free_port()
    log_path = log_dir / "serve.log"
    log = log_path.open("wb")
    tls_args = ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []
    process = subprocess.Popen(
        [sys.executable, "-m", "lifecycle", "serve", "--port", str(port), *tls_args],
        env=env_for(settings), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    scheme = "https" if tls else "http"
    service = Service(settings, f"{scheme}://127.0.0.1:{port}", tokens, log_path, process, log)

    def up() -> bool:
        assert process.poll() is None, service.log_text()
        try:
            return httpx.get(f"{service.url}/healthz", timeout=1,
                             verify=False).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 30, "lifecycle serve to answer /healthz")
    return service


def signed_in(service: Service, role: str) -> tuple[httpx.Client, str]:
    """A browser-like client signed in as `role`, and its session's CSRF token."""
    client = httpx.Client(base_url=service.url, timeout=30, verify=False)
    form = client.get("/signin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    answer = client.post("/signin", data={"token": service.tokens[role],
                                          "csrf": csrf.group(1), "next": "/"})
    assert answer.status_code == 303, answer.text
    home = client.get("/").text
    token = re.search(r'name="csrf-token" content="([^"]+)"', home)
    assert token is not None
    return client, token.group(1)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, for a service over TLS in a test."""
    import ipaddress
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
