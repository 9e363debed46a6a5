"""The directory provider against a real directory: copies, resumes, verifies and stays inside its base."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hark_fleet.hub.offsite.base import ProviderError, ProviderSpec
from hark_fleet.hub.offsite.local import LocalProvider
from hark_fleet.hub.offsite.registry import open_provider

from tests.hub.offsite.upload_source import MIB, Upload, make_file


def provider(path: Path) -> LocalProvider:
    opened = open_provider(ProviderSpec("p1", "local", {"path": str(path)}, {}, None, 2))
    assert isinstance(opened, LocalProvider)
    return opened


def test_a_copy_lands_under_its_key_whole_and_verified(offsite_dir: Path, tmp_path: Path) -> None:
    size = 3 * MIB + 17
    upload = Upload(tmp_path / "rec.wav", size, make_file(tmp_path / "rec.wav", size))
    result = provider(offsite_dir).upload(**upload.kwargs())
    copy = offsite_dir / "site/node/rec.wav"
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == upload.sha256 == result.sha256
    assert result.verified_by == "read-back sha256" and result.bytes == size
    assert not (offsite_dir / "site/node/rec.wav.part").exists()
    assert upload.throttled == size and upload.progress[-1][0] == size
    assert provider(offsite_dir).exists(upload.key)


def test_an_interrupted_copy_resumes_from_the_reported_offset(offsite_dir: Path, tmp_path: Path) -> None:
    size = 40 * MIB
    upload = Upload(tmp_path / "rec.wav", size, make_file(tmp_path / "rec.wav", size), cancel_after_bytes=16 * MIB)
    with pytest.raises(ProviderError) as failed:
        provider(offsite_dir).upload(**upload.kwargs())
    assert failed.value.retryable
    offset = upload.resume["offset"]
    assert offset >= 16 * MIB and (offsite_dir / "site/node/rec.wav.part").stat().st_size >= offset
    upload.cancel_after_bytes, upload.throttled = None, 0
    result = provider(offsite_dir).upload(**upload.kwargs())
    assert upload.throttled == size - offset  # the first 16 MiB were not written again
    assert hashlib.sha256((offsite_dir / "site/node/rec.wav").read_bytes()).hexdigest() == result.sha256 == upload.sha256


def test_a_copy_that_does_not_hash_to_the_recording_is_refused_and_removed(offsite_dir: Path, tmp_path: Path) -> None:
    size = MIB
    make_file(tmp_path / "rec.wav", size)
    upload = Upload(tmp_path / "rec.wav", size, "0" * 64)
    with pytest.raises(ProviderError) as failed:
        provider(offsite_dir).upload(**upload.kwargs())
    assert failed.value.step == "verify"
    assert not (offsite_dir / "site/node/rec.wav").exists() and not (offsite_dir / "site/node/rec.wav.part").exists()


@pytest.mark.parametrize("key", ["../outside.wav", "/etc/passwd", "a/../../b.wav", "a//b.wav", "a\\b.wav", ""])
def test_keys_that_would_leave_the_base_directory_are_refused(offsite_dir: Path, key: str) -> None:
    with pytest.raises(ProviderError) as failed:
        provider(offsite_dir).path_of(key)
    assert failed.value.step == "config"


def test_a_symlink_out_of_the_base_directory_is_refused(offsite_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (offsite_dir / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ProviderError, match="outside"):
        provider(offsite_dir).path_of("link/rec.wav")


def test_the_test_writes_reads_and_deletes_a_small_object(offsite_dir: Path) -> None:
    report = provider(offsite_dir).test()
    assert report.ok and report.failed_step is None
    assert [s.step for s in report.steps] == ["reach", "authenticate", "write", "read", "delete"]
    assert list(offsite_dir.iterdir()) == []


def test_a_missing_directory_fails_the_reach_step(tmp_path: Path) -> None:
    report = provider(tmp_path / "not-mounted").test()
    assert not report.ok and report.failed_step == "reach"
    assert "not a directory" in report.steps[-1].message


def test_a_relative_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderError) as failed:
        open_provider(ProviderSpec("p1", "local", {"path": "relative/dir"}, {}, None, 2))
    assert failed.value.step == "config"


def test_delete_removes_the_copy(offsite_dir: Path, tmp_path: Path) -> None:
    upload = Upload(tmp_path / "rec.wav", 1000, make_file(tmp_path / "rec.wav", 1000))
    provider(offsite_dir).upload(**upload.kwargs())
    provider(offsite_dir).delete(upload.key)
    assert not provider(offsite_dir).exists(upload.key)
