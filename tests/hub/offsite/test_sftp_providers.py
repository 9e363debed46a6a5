"""The SFTP provider against OpenSSH's real sshd: uploads verified remotely or by reading back, resume, pinning, test steps."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hark_fleet.hub.offsite.base import ProviderError, ProviderSpec
from hark_fleet.hub.offsite.registry import open_provider
from hark_fleet.hub.offsite.sftp import SFTPProvider, parse_host_key
from hark_fleet.hub.processes import free_port

from tests.hub.offsite.upload_source import MIB, Upload, make_file
from tests.offsite_servers import Sshd


def provider(server: Sshd, base: Path, secrets: dict[str, str] | None = None, **config: Any) -> SFTPProvider:
    spec = ProviderSpec("p1", "sftp", server.provider_config(str(base), **config), secrets or server.provider_secrets(), None, 2)
    opened = open_provider(spec)
    assert isinstance(opened, SFTPProvider)
    return opened


def other_key(tmp_path: Path) -> tuple[str, str]:
    """(private key text, public "type base64") of a key the server does not know."""
    path = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text(), " ".join(path.with_suffix(".pub").read_text().split()[:2])


def test_an_upload_is_verified_by_sha256sum_on_the_server(sshd: Sshd, offsite_dir: Path, tmp_path: Path) -> None:
    size = 20 * MIB + 3
    upload = Upload(tmp_path / "rec.wav", size, make_file(tmp_path / "rec.wav", size))
    sftp = provider(sshd, offsite_dir)
    try:
        result = sftp.upload(**upload.kwargs())
        assert sftp.exists(upload.key)
    finally:
        sftp.close()
    assert result.verified_by == "remote sha256sum" and result.sha256 == upload.sha256 and result.bytes == size
    assert hashlib.sha256((offsite_dir / upload.key).read_bytes()).hexdigest() == upload.sha256
    assert not (offsite_dir / f"{upload.key}.part").exists()
    assert upload.throttled == size and upload.progress[-1] == (size, {"offset": size})


def test_a_server_that_runs_no_commands_is_verified_by_reading_back(
    sshd_sftp_only: Sshd, offsite_dir: Path, tmp_path: Path
) -> None:
    upload = Upload(tmp_path / "rec.wav", 3 * MIB, make_file(tmp_path / "rec.wav", 3 * MIB))
    sftp = provider(sshd_sftp_only, offsite_dir)
    try:
        result = sftp.upload(**upload.kwargs())
    finally:
        sftp.close()
    assert result.verified_by == "read-back sha256" and result.sha256 == upload.sha256


def test_an_interrupted_upload_appends_from_the_reported_offset(sshd: Sshd, offsite_dir: Path, tmp_path: Path) -> None:
    size = 40 * MIB
    upload = Upload(tmp_path / "rec.wav", size, make_file(tmp_path / "rec.wav", size), cancel_after_bytes=16 * MIB)
    first = provider(sshd, offsite_dir)
    with pytest.raises(ProviderError) as failed:
        first.upload(**upload.kwargs())
    first.close()
    assert failed.value.retryable
    offset = upload.resume["offset"]
    assert 16 * MIB <= offset < size and (offsite_dir / f"{upload.key}.part").stat().st_size >= offset

    upload.cancel_after_bytes, upload.throttled = None, 0
    second = provider(sshd, offsite_dir)  # a new connection, as after a hub restart
    try:
        result = second.upload(**upload.kwargs())
    finally:
        second.close()
    assert upload.throttled == size - offset  # what was on the server was not sent again
    assert result.sha256 == upload.sha256
    assert hashlib.sha256((offsite_dir / upload.key).read_bytes()).hexdigest() == upload.sha256


def test_a_copy_that_does_not_hash_to_the_recording_is_removed(sshd: Sshd, offsite_dir: Path, tmp_path: Path) -> None:
    make_file(tmp_path / "rec.wav", MIB)
    upload = Upload(tmp_path / "rec.wav", MIB, "0" * 64)
    sftp = provider(sshd, offsite_dir)
    try:
        with pytest.raises(ProviderError) as failed:
            sftp.upload(**upload.kwargs())
    finally:
        sftp.close()
    assert failed.value.step == "verify" and not failed.value.retryable
    assert not (offsite_dir / upload.key).exists() and not (offsite_dir / f"{upload.key}.part").exists()


def test_the_test_writes_reads_and_deletes_a_small_file(sshd: Sshd, offsite_dir: Path) -> None:
    sftp = provider(sshd, offsite_dir)
    try:
        report = sftp.test()
    finally:
        sftp.close()
    assert report.ok, report
    assert [s.step for s in report.steps] == ["reach", "authenticate", "write", "read", "delete"]
    assert list(offsite_dir.iterdir()) == []


def test_a_key_the_server_does_not_accept_fails_the_authenticate_step(sshd: Sshd, offsite_dir: Path, tmp_path: Path) -> None:
    private, _ = other_key(tmp_path)
    sftp = provider(sshd, offsite_dir, secrets={"private_key": private})
    try:
        report = sftp.test()
    finally:
        sftp.close()
    assert (report.ok, report.failed_step) == (False, "authenticate")
    assert "refused user" in report.steps[-1].message


def test_a_different_host_key_fails_the_reach_step_and_says_so(sshd: Sshd, offsite_dir: Path, tmp_path: Path) -> None:
    _, public = other_key(tmp_path)
    sftp = provider(sshd, offsite_dir, known_host_key=public)
    try:
        report = sftp.test()
        assert report.failed_step == "reach" and "differs from the pinned one" in report.steps[-1].message
        with pytest.raises(ProviderError) as failed:  # an upload refuses the server too, before sending a credential
            sftp.upload(**Upload(offsite_dir / "none", 1, "0" * 64).kwargs())
    finally:
        sftp.close()
    assert failed.value.step == "reach" and "differs from the pinned one" in failed.value.message


def test_an_unreachable_port_fails_the_reach_step(sshd: Sshd, offsite_dir: Path) -> None:
    sftp = provider(sshd, offsite_dir, port=free_port())
    try:
        report = sftp.test()
    finally:
        sftp.close()
    assert report.failed_step == "reach" and [s.step for s in report.steps] == ["reach"]


def test_the_pinned_key_may_be_a_known_hosts_line(sshd: Sshd) -> None:
    assert parse_host_key(sshd.known_host) == sshd.host_key
    with pytest.raises(ValueError):
        parse_host_key("ssh-ed25519 not-base64!")
    with pytest.raises(ValueError):
        parse_host_key("nothing here")


def test_a_malformed_host_key_or_private_key_is_a_config_error(sshd: Sshd, offsite_dir: Path) -> None:
    with pytest.raises(ProviderError) as bad_host:
        provider(sshd, offsite_dir, known_host_key="ssh-ed25519 AAAA")
    with pytest.raises(ProviderError) as bad_key:
        provider(sshd, offsite_dir, secrets={"private_key": "-----BEGIN NOTHING-----"})
    assert bad_host.value.step == bad_key.value.step == "config"


def test_exists_and_delete(sshd: Sshd, offsite_dir: Path, tmp_path: Path) -> None:
    upload = Upload(tmp_path / "rec.wav", 100, make_file(tmp_path / "rec.wav", 100))
    sftp = provider(sshd, offsite_dir)
    try:
        assert not sftp.exists(upload.key)
        sftp.upload(**upload.kwargs())
        assert sftp.exists(upload.key)
        sftp.delete(upload.key)
        assert not sftp.exists(upload.key)
    finally:
        sftp.close()
