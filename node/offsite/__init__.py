"""Off-site uploads from the node (issue 20): the direct route sends recordings from the cache straight to S3."""

from hark_fleet.node.offsite.client import DirectUploadClient
from hark_fleet.node.offsite.worker import DirectUploadWorker

__all__ = ["DirectUploadClient", "DirectUploadWorker"]
