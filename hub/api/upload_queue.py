"""Upload queue and runner (issue 20): routes."""

from __future__ import annotations
