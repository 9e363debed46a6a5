"""Real off-site servers for tests (issue 20): moto's S3 server, OpenSSH's sshd, a plain directory.

Load with `pytest_plugins = ["tests.offsite_servers"]` (tests/conftest.py does), then ask for:

- `moto_s3` (session): a standalone moto S3 server on a free loopback port that checks signatures:
  only `moto_s3.access_key` / `moto_s3.secret_key` (an IAM user made at start, allowed s3:*) get
  in, so a wrong secret is refused as it would be by AWS. `moto_s3.create_bucket()` makes a fresh
  bucket, `moto_s3.client()` a boto3 client, `moto_s3.stop()` / `start()` take it down and up again
  on the same port (its state is lost: moto keeps it in memory).
- `s3_bucket`: a fresh bucket on `moto_s3` for one test.
- `sshd` (session): OpenSSH's sshd on a free loopback port, its own host key and config in a temporary
  directory, key auth for the current user (`sshd.user`, `sshd.client_key` the private key in
  OpenSSH format, `sshd.host_key` "ssh-ed25519 AAAA..." and `sshd.known_host` the known_hosts line
  to pin). `sshd_sftp_only` is another with `ForceCommand internal-sftp` (no exec: no remote sha256sum).
  As root, sshd uses its privilege separation directory (/run/sshd, made if missing); as another user it runs
  unprivileged and lets in only that user, whose account must not be locked (sshd refuses locked accounts
  such as `nobody`) and needs a shell for the remote `sha256sum`.
- `offsite_dir`: an empty directory for the local provider.

Servers are started with `tests.harness.spawn`, so the leak check sees them, and stopped at the end.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hark_fleet.hub.processes import free_port

from tests.harness import port_open, spawn, terminate

REGION = "us-east-1"
SSHD = "/usr/sbin/sshd"

# --- S3: moto's standalone server ------------------------------------------------------------

# Requests moto lets through before it checks signatures: exactly the three IAM calls that make the user.
_SETUP_CALLS = 3
_ALLOW_S3 = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'


@dataclass
class MotoS3:
    """moto's S3 server, signature-checking, on `port`; `endpoint` is its URL."""

    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    region: str = REGION
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_CALLS), "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
        command = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        self.proc = spawn(command, env=env, log_path=self.workdir / "moto.log")
        deadline = time.monotonic() + 60
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto did not start: {(self.workdir / 'moto.log').read_text()[-2000:]}")
            time.sleep(0.05)
        iam = self._client("iam", "setup", "setup")
        iam.create_user(UserName="hark")
        key = iam.create_access_key(UserName="hark")["AccessKey"]
        iam.put_user_policy(UserName="hark", PolicyName="s3", PolicyDocument=_ALLOW_S3)
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def _client(self, service: str, access_key: str, secret_key: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def client(self) -> Any:
        """A boto3 S3 client with the server's good credentials (path-style)."""
        return self._client("s3", self.access_key, self.secret_key)

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket (a random name unless given)."""
        bucket = name or f"hark-{secrets.token_hex(5)}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def provider_config(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """An `s3` provider's config for `bucket` on this server (secrets apart: `provider_secrets()`)."""
        return {
            "endpoint_url": self.endpoint,
            "region": self.region,
            "bucket": bucket,
            "path_style": True,
            "access_key_id": self.access_key,
            **extra,
        }

    def provider_secrets(self) -> dict[str, str]:
        return {"secret_access_key": self.secret_key}


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """One signature-checking moto S3 server for the session."""
    server = MotoS3(tmp_path_factory.mktemp("moto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(moto_s3: MotoS3) -> str:
    """A fresh bucket on the session's moto server."""
    return moto_s3.create_bucket()


# --- SFTP: OpenSSH's sshd --------------------------------------------------------------------


@dataclass
class Sshd:
    """OpenSSH's sshd on loopback with key auth for the current user; everything it needs is in `workdir`."""

    workdir: Path
    sftp_only: bool = False
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    user: str = field(default_factory=getpass.getuser)
    client_key: str = field(default="", repr=False)  # the user's private key, OpenSSH format
    client_public_key: str = ""
    host_key: str = ""  # "ssh-ed25519 AAAA..."
    proc: subprocess.Popen[bytes] | None = None

    @property
    def known_host(self) -> str:
        """The known_hosts line that pins this server's host key."""
        return f"[{self.host}]:{self.port} {self.host_key}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        host_key = self.workdir / "ssh_host_ed25519_key"
        client_key = self.workdir / "client_ed25519"
        if not host_key.exists():
            _keygen(host_key)
            _keygen(client_key)
        self.host_key = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
        self.client_key = client_key.read_text()
        self.client_public_key = client_key.with_suffix(".pub").read_text().strip()
        (self.workdir / "authorized_keys").write_text(self.client_public_key + "\n")
        os.chmod(self.workdir / "authorized_keys", 0o600)
        config = self.workdir / "sshd_config"
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {host_key}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "AllowUsers " + self.user,
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
        ]
        if self.sftp_only:
            lines.append("ForceCommand internal-sftp")
        config.write_text("\n".join(lines) + "\n")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.proc = spawn([SSHD, "-D", "-e", "-f", str(config)], log_path=self.workdir / "sshd.log")
        deadline = time.monotonic() + 30
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(self.workdir / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def provider_config(self, base_path: str, **extra: Any) -> dict[str, Any]:
        """An `sftp` provider's config for `base_path` on this server (secrets apart: `provider_secrets()`)."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.user,
            "known_host_key": self.host_key,
            "base_path": base_path,
            **extra,
        }

    def provider_secrets(self) -> dict[str, str]:
        return {"private_key": self.client_key}


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hark-test", "-f", str(path)], check=True)


def sshd_available() -> bool:
    return os.access(SSHD, os.X_OK) and shutil.which("ssh-keygen") is not None


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One sshd for the session (exec allowed: the provider can run sha256sum)."""
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sshd_sftp_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """An sshd that allows SFTP and nothing else (no remote commands)."""
    server = Sshd(tmp_path_factory.mktemp("sshd-sftp-only"), sftp_only=True)
    server.start()
    yield server
    server.stop()


# --- a directory -----------------------------------------------------------------------------


@pytest.fixture
def offsite_dir(tmp_path: Path) -> Path:
    """An empty directory standing for a mounted share."""
    path = tmp_path / "archive"
    path.mkdir()
    return path
