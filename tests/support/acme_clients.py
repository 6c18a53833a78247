"""Real ACME clients, run as an operator would: certbot (from PyPI, in a virtual
environment of its own at the repository root), lego and uacme (Debian packages).

Each client class knows the flags that work (see shared/design/acme-clients.md), where
its certificate lands, and how to trust one CA file: ``REQUESTS_CA_BUNDLE`` for certbot,
``LEGO_CA_CERTIFICATES`` for lego, and for uacme, whose libcurl reads only the system
bundle, that file bind-mounted over the system bundle in a mount namespace of its own.
Challenges that need DNS go through pebble-challtestsrv (``acme_hook.py``).
"""

from __future__ import annotations

import http.server
import os
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from josepy import b64

ROOT = Path(__file__).resolve().parents[2]
CERTBOT_REQUIREMENT = "certbot>=5,<6"
CLIENT_TIMEOUT = 180
EMAIL = "ops@svc.test"
HOOK = Path(__file__).with_name("acme_hook.py")
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_install_lock = threading.Lock()


def acme_venv() -> Path:
    return Path(os.environ.get("CAUCASE_ACME_VENV", ROOT / ".acme-venv"))


def install_certbot() -> Path:
    """The bin directory of certbot's own venv, created on first use (never the project's
    environment: certbot pins its own dependencies)."""
    venv = acme_venv()
    bin_dir = venv / "bin"
    with _install_lock:
        if not (bin_dir / "certbot").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(bin_dir / "pip"), "install", "-q", CERTBOT_REQUIREMENT], check=True
            )
    return bin_dir


@dataclass(frozen=True)
class EAB:
    """An External Account Binding credential, as every client takes it."""

    kid: str
    hmac_key: str

    @classmethod
    def generate(cls) -> EAB:
        return cls(secrets.token_urlsafe(12), b64.b64encode(secrets.token_bytes(32)).decode())


class ClientError(AssertionError):
    """A client exited non-zero; the message holds its output (and log, if any)."""


def run_client(
    args: Sequence[str | Path], env: dict[str, str], *, log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in args], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=CLIENT_TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0:
        detail = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        if log is not None and log.exists():
            detail += f"\n--- {log} ---\n{log.read_text(errors='replace')[-6000:]}"
        raise ClientError(f"{args[0]} exited {result.returncode}:\n{detail}")
    return result


def hook_command(
    workdir: Path, flavour: str, management_url: str, *, webroot: Path | None = None,
    accept: str = "dns-01",
) -> Path:  # fmt: skip
    """An executable wrapper calling acme_hook.py as `flavour` (lego and uacme run a
    program, certbot a shell command: a path serves all three)."""
    options = f"--management {management_url} --accept {accept}"
    if webroot is not None:
        options += f" --webroot {webroot}"
    wrapper = workdir / f"hook-{flavour}-{accept}.sh"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {HOOK} {options} {flavour} -- "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@contextmanager
def serving_webroot(root: Path, port: int) -> Iterator[None]:
    """Plain HTTP on 127.0.0.1:`port` serving files under `root` (uacme's http-01)."""
    root.mkdir(parents=True, exist_ok=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class Certbot:
    bin_dir: Path
    workdir: Path
    directory_url: str
    ca_bundle: Path

    @property
    def log(self) -> Path:
        return self.workdir / "logs" / "letsencrypt.log"

    def run(
        self, *args: str | Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        common = [
            "--config-dir", self.workdir / "config", "--work-dir", self.workdir / "work",
            "--logs-dir", self.workdir / "logs", "--non-interactive",
            "--server", self.directory_url,
        ]  # fmt: skip
        env = {**(env or {}), "REQUESTS_CA_BUNDLE": str(self.ca_bundle)}
        return run_client([self.bin_dir / "certbot", *args, *common], env, log=self.log)

    @staticmethod
    def _registration(eab: EAB | None) -> list[str]:
        flags = ["--agree-tos", "-m", EMAIL, "--no-eff-email"]
        if eab is not None:
            # NAME=VALUE: a value may start with "-" (pebble's test credentials can).
            flags += [f"--eab-kid={eab.kid}", f"--eab-hmac-key={eab.hmac_key}"]
        return flags

    @staticmethod
    def _standalone(port: int) -> list[str]:
        return ["--standalone", "--http-01-address", "127.0.0.1", "--http-01-port", str(port)]

    def certonly_http(self, name: str, port: int, eab: EAB | None = None) -> None:
        self.run("certonly", *self._standalone(port), *self._registration(eab),
                 "--cert-name", name, "-d", name)  # fmt: skip

    def certonly_dns(self, name: str, hook: Path, eab: EAB | None = None) -> None:
        """dns-01 through manual hooks that set the TXT record (``acme_hook.py``)."""
        self.run(
            "certonly", "--manual", "--preferred-challenges", "dns",
            "--manual-auth-hook", f"{hook} auth", "--manual-cleanup-hook", f"{hook} cleanup",
            *self._registration(eab), "--cert-name", name, "-d", name,
        )  # fmt: skip

    def renew(
        self, name: str, port: int, *, force: bool = True, env: dict[str, str] | None = None
    ) -> None:
        """Without `force`, certbot renews only when due: by renewalInfo (ARI) when the
        server has it, else 30 days before expiry."""
        flags = ["--force-renewal"] if force else []
        self.run("renew", "--cert-name", name, *flags, "--no-random-sleep-on-renew",
                 *self._standalone(port), env=env)  # fmt: skip

    def revoke(self, name: str, reason: str = "superseded") -> None:
        """With the account key."""
        self.run("revoke", "--cert-name", name, "--reason", reason, "--no-delete-after-revoke")

    def revoke_with_key(self, certificate: Path, key: Path, reason: str = "keycompromise") -> None:
        """With the certificate's own key (a jwk-signed request)."""
        self.run("revoke", "--cert-path", certificate, "--key-path", key, "--reason", reason,
                 "--no-delete-after-revoke")  # fmt: skip

    def certificate(self, name: str) -> Path:
        return self.workdir / "config" / "live" / name / "fullchain.pem"

    def private_key(self, name: str) -> Path:
        return self.workdir / "config" / "live" / name / "privkey.pem"

    def performed_challenges(self) -> bool:
        return "Performing the following challenges" in self.log.read_text(errors="replace")


@dataclass
class Lego:
    workdir: Path
    directory_url: str
    ca_bundle: Path
    lego: str = shutil.which("lego") or "/usr/bin/lego"

    def run(self, name: str, *args: str, eab: EAB | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        common = [
            "--server", self.directory_url, "--accept-tos", "--email", EMAIL,
            "--path", str(self.workdir), "--key-type", "ec256", "--domains", name,
        ]  # fmt: skip
        if eab is not None:
            common += ["--eab", f"--kid={eab.kid}", f"--hmac={eab.hmac_key}"]
        environment = {"LEGO_CA_CERTIFICATES": str(self.ca_bundle), **(env or {})}
        return run_client([self.lego, *common, *args], environment)

    @staticmethod
    def http(port: int) -> list[str]:
        return ["--http", "--http.port", f"127.0.0.1:{port}"]

    @staticmethod
    def dns(resolver: str) -> list[str]:
        return ["--dns", "exec", "--dns.resolvers", resolver, "--dns.disable-cp"]

    @staticmethod
    def dns_env(hook: Path) -> dict[str, str]:
        return {"EXEC_PATH": str(hook), "EXEC_PROPAGATION_TIMEOUT": "30",
                "EXEC_POLLING_INTERVAL": "1"}  # fmt: skip

    def run_http(self, name: str, port: int, eab: EAB | None = None) -> str:
        return self.run(name, *self.http(port), "run", eab=eab).stderr

    def run_dns(self, name: str, hook: Path, resolver: str, eab: EAB | None = None) -> str:
        return self.run(name, *self.dns(resolver), "run", eab=eab, env=self.dns_env(hook)).stderr

    def renew_http(self, name: str, port: int, eab: EAB | None = None, days: int = 10_000) -> str:
        """`days` above the certificate's remaining life forces the renewal. lego checks
        the directory's externalAccountRequired on every command, so EAB comes again."""
        args = [*self.http(port), "renew", "--days", str(days), "--no-random-sleep"]
        return self.run(name, *args, eab=eab).stderr

    def revoke(self, name: str, eab: EAB | None = None) -> None:
        self.run(name, "revoke", "--keep", eab=eab)

    def certificate(self, name: str) -> Path:
        return self.workdir / "certificates" / f"{name}.crt"

    def private_key(self, name: str) -> Path:
        return self.workdir / "certificates" / f"{name}.key"


@dataclass
class Uacme:
    confdir: Path
    directory_url: str
    ca_bundle: Path
    uacme: str = shutil.which("uacme") or "/usr/bin/uacme"

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        """uacme in a private mount namespace whose system CA bundle is `ca_bundle`."""
        command = [self.uacme, "-a", self.directory_url, "-c", self.confdir, "-y", "-v", "-o",
                   "-t", "EC", *args]  # fmt: skip
        isolated = [
            "unshare", "--mount", "sh", "-c",
            f'mount --bind "$0" {SYSTEM_CA_BUNDLE} && exec "$@"', self.ca_bundle, *command,
        ]  # fmt: skip
        return run_client(isolated, {})

    def new_account(self, eab: EAB | None = None) -> None:
        flags = ["-e", f"{eab.kid}:{eab.hmac_key}"] if eab is not None else []
        self.run(*flags, "new", EMAIL)

    def issue(self, name: str, hook: Path, *, force: bool = False) -> None:
        self.run("-h", hook, *(["-f"] if force else []), "issue", name)

    def revoke(self, name: str, reason: int = 4) -> None:
        """With the account key; 4 is superseded (RFC 5280 5.3.1)."""
        self.run("-r", str(reason), "revoke", self.certificate(name))

    def certificate(self, name: str) -> Path:
        return self.confdir / name / "cert.pem"

    def private_key(self, name: str) -> Path:
        return self.confdir / "private" / name / "key.pem"
