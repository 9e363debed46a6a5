"""The direct-upload worker (issue 20): this node sends its recordings from its cache straight to S3.

It claims the node's direct uploads from the hub every `POLL_S`, and several times in the minute after
a recording ends (the hub queues a direct upload when capture ends). For one upload it reads the
recording's own cache file part by part: each part's SHA-256 (and the whole file's, on the way) is
computed first, the hub signs a PUT with that digest in it, and the part is streamed to S3 with plain
HTTP, checked again as it is read. Parts S3 already holds (`parts_done`, after a restart) are only
hashed. Then the hub completes the upload and verifies it. A cache that no longer holds the file, or
holds another one, fails the upload for good; S3 or the network failing fails it for a retry (the
hub's backoff), and the next claim resumes it. One upload at a time, never more than one part in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hark_fleet.node.errors import HubRejected, HubUnreachable, NodeError
from hark_fleet.node.offsite.client import (
    DirectUpload,
    DirectUploadClient,
    FileChanged,
    PartRefused,
    PartUnreachable,
    file_size,
    hash_range,
)
from hark_fleet.node.recorder.cache import RECORDING_ID
from hark_fleet.node.recorder.const import FAILED, RECORDING
from hark_fleet.node.recorder.errors import CorruptRecording
from hark_fleet.node.recorder.manifest import Manifest
from hark_fleet.node.recording_client import StaleLease
from hark_fleet.node.worker import wait_any
from hark_fleet.protocol.backoff import backoff_delay

log = logging.getLogger(__name__)

POLL_S = 30.0  # claim this often when nothing else says there may be work
AFTER_RECORDING_S = (2.0, 4.0, 8.0, 15.0, 30.0)  # claims after a recording ends (the hub queues its uploads then)
WATCH_S = 1.0  # how often the worker looks whether a recording has just ended
PART_TRIES = 4  # a part that does not reach S3 is sent this many times before the attempt fails
COMPLETE_TRIES = 4
RETRY_BASE_S = 1.0
RETRY_CAP_S = 30.0

Activity = Callable[[], Any]  # what the node is recording now (None when nothing)


class GiveUp(NodeError):
    """This attempt cannot go on: reported to the hub as failed (`retryable`: the hub tries again after its backoff)."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Dropped(NodeError):
    """The hub ended the upload itself (it failed verification, or was claimed again): nothing to report."""


def cached_file(cache_root: Path, upload: DirectUpload) -> Path:
    """The recording's own file in this node's cache, checked against what the hub expects; GiveUp (for good) when not there."""
    rid = upload.recording_id
    if not RECORDING_ID.match(rid) or rid in (".", ".."):
        raise GiveUp(f"{rid!r} cannot name a recording in the cache", retryable=False)
    directory = cache_root / rid
    try:
        manifest = Manifest.load(directory)
    except (CorruptRecording, OSError) as err:
        raise GiveUp(f"the cache no longer holds recording {rid} ({err})", retryable=False) from err
    name = manifest.final_file
    if manifest.state == RECORDING or not name or "/" in name or "\\" in name or name.startswith("."):
        raise GiveUp(f"the cache holds no finished file for recording {rid} (it is {manifest.state})", retryable=False)
    path = directory / name
    size = file_size(path)
    if size is None:
        raise GiveUp(f"the cache no longer holds the file of recording {rid}", retryable=False)
    if manifest.state == FAILED and manifest.sha256 is None:
        raise GiveUp(f"recording {rid} failed on this node before its file was finished", retryable=False)
    if size != upload.size or (manifest.sha256 and manifest.sha256.lower() != upload.sha256):
        raise GiveUp(
            f"the cache holds another file for recording {rid} ({size} bytes, SHA-256 {manifest.sha256}); "
            f"the recording is {upload.size} bytes, SHA-256 {upload.sha256}",
            retryable=False,
        )
    return path


class DirectUploadWorker:
    """Uploads this node's direct-route recordings, one at a time; `nudge` makes it claim at once."""

    def __init__(self, cache_root: Path, client: DirectUploadClient, activity: Activity | None = None) -> None:
        self.cache_root = cache_root
        self.client = client
        self.activity = activity or (lambda: None)
        self.nudge = asyncio.Event()
        self.current: DirectUpload | None = None

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_claim = loop.time()  # at start: resume what a restart cut short
        soon: list[float] = []
        was_recording = False
        attempt = 0
        try:
            while not stop.is_set():
                recording = self.activity() is not None
                if was_recording and not recording:
                    soon = [loop.time() + s for s in AFTER_RECORDING_S]
                was_recording = recording
                due = min([next_claim, *soon])
                if not self.nudge.is_set() and loop.time() < due:
                    await wait_any(min(WATCH_S, due - loop.time()), stop, self.nudge)
                    continue
                self.nudge.clear()
                soon = [t for t in soon if t > loop.time()]
                try:
                    worked = await self.claim_and_upload(stop)
                    attempt = 0
                except NodeError as err:  # the hub away, refusing or answering nonsense: never the agent's end
                    delay = backoff_delay(attempt, RETRY_BASE_S, POLL_S)
                    attempt += 1
                    log.warning("cannot claim a direct upload (%s); trying again in %.0f s", err, delay)
                    next_claim = loop.time() + delay
                    continue
                next_claim = loop.time() + (0.0 if worked else POLL_S)
                if worked:
                    soon = []
        finally:
            self.client.close()

    async def claim_and_upload(self, stop: asyncio.Event) -> bool:
        """Claim one upload and carry it through; False when there was none."""
        upload = await self.client.claim()
        if upload is None:
            return False
        self.current = upload
        try:
            await self.upload(upload, stop)
        except StaleLease:
            log.warning("direct upload %s was claimed again elsewhere: dropping it", upload.item_id)
        except Dropped as err:
            log.warning("direct upload %s: %s", upload.item_id, err)
        except GiveUp as err:
            log.error("direct upload %s of %s failed: %s", upload.item_id, upload.recording_id, err)
            await self._report_failed(upload, str(err), err.retryable)
        except HubUnreachable as err:
            log.warning("direct upload %s: the hub cannot be reached (%s); it is resumed at the next claim", upload.item_id, err)
            await self._report_failed(upload, f"the node lost the hub: {err}", True)
        except HubRejected as err:
            if err.status in (403, 404):
                log.warning("direct upload %s: the hub no longer knows it (%s)", upload.item_id, err)
            else:
                log.error("direct upload %s: the hub refused a call (%s)", upload.item_id, err)
                await self._report_failed(upload, f"the hub refused a call: {err}", True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("direct upload %s failed on the node", upload.item_id)
            await self._report_failed(upload, "the node hit an unexpected error", True)
        finally:
            self.current = None
        return True

    async def _report_failed(self, upload: DirectUpload, error: str, retryable: bool) -> None:
        try:
            await self.client.failed(upload, error, retryable)
        except (NodeError, HubUnreachable) as err:  # the lease runs on: the next claim after a restart takes it back
            log.warning("could not report direct upload %s failed: %s", upload.item_id, err)

    # -- one upload -----------------------------------------------------------------------------------------

    async def upload(self, upload: DirectUpload, stop: asyncio.Event) -> None:
        """Send every part S3 does not hold yet, then complete; GiveUp, Dropped or StaleLease when it cannot."""
        loop = asyncio.get_running_loop()
        path = cached_file(self.cache_root, upload)
        log.info(
            "direct upload %s: recording %s, %d bytes in %d parts (%d on S3 already)",
            upload.item_id,
            upload.recording_id,
            upload.size,
            upload.part_count,
            len(upload.parts_done),
        )
        whole = hashlib.sha256()
        sent = sum(upload.part_range(n)[1] for n in upload.parts_done)
        for number in range(1, upload.part_count + 1):
            if stop.is_set():
                raise GiveUp("the node is stopping", retryable=True)
            offset, length = upload.part_range(number)
            try:
                digest = await loop.run_in_executor(None, hash_range, path, offset, length, whole)
            except (FileChanged, OSError) as err:
                raise GiveUp(f"reading the cached file: {err}", retryable=False) from err
            if upload.parts_done.get(number) == digest:
                continue
            await self._send_part(upload, path, number, digest, stop)
            sent += length
            try:
                await self.client.progress(upload, sent)
            except (HubUnreachable, HubRejected) as err:
                if isinstance(err, HubRejected) and err.status in (403, 404):
                    raise Dropped(f"the hub no longer knows this upload ({err})") from err
                log.warning("direct upload %s: progress not reported (%s)", upload.item_id, err)
        if whole.hexdigest() != upload.sha256:
            raise GiveUp(f"the cached file's SHA-256 is {whole.hexdigest()}; the recording's is {upload.sha256}", retryable=False)
        await self._complete(upload, stop)

    async def _send_part(self, upload: DirectUpload, path: Path, number: int, digest: str, stop: asyncio.Event) -> None:
        offset, length = upload.part_range(number)
        for attempt in range(PART_TRIES):
            (signed,) = await self.client.sign(upload, [(number, digest, length)])
            try:
                await self.client.put_part(signed, path, offset, length, digest)
                return
            except FileChanged as err:
                raise GiveUp(f"the cached file changed while it was sent: {err}", retryable=False) from err
            except PartRefused as err:
                if not err.expired or attempt + 1 == PART_TRIES:
                    raise GiveUp(f"S3 refused {err}", retryable=True) from err
                log.warning("direct upload %s: %s; signing it again", upload.item_id, err)
            except PartUnreachable as err:
                if attempt + 1 == PART_TRIES:
                    raise GiveUp(f"S3 could not be reached: {err}", retryable=True) from err
                log.warning("direct upload %s: %s; sending it again", upload.item_id, err)
                await wait_any(backoff_delay(attempt, RETRY_BASE_S, RETRY_CAP_S), stop)

    async def _complete(self, upload: DirectUpload, stop: asyncio.Event) -> None:
        for attempt in range(COMPLETE_TRIES):
            try:
                item = await self.client.complete(upload, upload.sha256)
            except HubRejected as err:
                if err.status == 409 and err.code in ("verification_failed", "checksum_mismatch", "upload_lost"):
                    raise Dropped(f"the hub refused the copy ({err.code}); it has failed the upload") from err
                if err.status == 409 and err.code == "parts_missing":
                    raise GiveUp("S3 is missing parts the node sent", retryable=True) from err
                raise
            except HubUnreachable as err:
                if attempt + 1 == COMPLETE_TRIES:
                    raise GiveUp(f"could not complete: {err}", retryable=True) from err
                await wait_any(backoff_delay(attempt, RETRY_BASE_S, RETRY_CAP_S), stop)
                continue
            log.info("direct upload %s: %s is %s", upload.item_id, upload.recording_id, item.get("state", "completed"))
            return
