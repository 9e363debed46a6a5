"""Direct uploads (agent, issue 20): routes."""

from __future__ import annotations
