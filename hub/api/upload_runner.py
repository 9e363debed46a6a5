"""The upload runner: routes."""

from __future__ import annotations
