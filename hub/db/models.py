"""Peewee models. The schema itself is made by the numbered files in `migrations/`."""

from __future__ import annotations

import json
from typing import Any

import peewee

from hub.clock import utcnow

database_proxy = peewee.DatabaseProxy()


class JSONField(peewee.TextField):
    """JSON stored as text, portable between SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class User(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    username = peewee.CharField(unique=True, max_length=150)
    password_hash = peewee.TextField()
    roles = JSONField(default=list)
    sites = JSONField(null=True)  # None: every site
    disabled = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)


class AuthSession(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    user = peewee.ForeignKeyField(User, backref="sessions", on_delete="CASCADE")
    token_hash = peewee.CharField(unique=True, max_length=64)
    created_at = peewee.DateTimeField(default=utcnow)
    last_used_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField()
    revoked_at = peewee.DateTimeField(null=True)
    source_ip = peewee.CharField(max_length=64, null=True)
    user_agent = peewee.CharField(max_length=256, null=True)

    class Meta:
        table_name = "auth_session"


class Node(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(max_length=200)
    site = peewee.CharField(max_length=100, null=True, index=True)
    tags = JSONField(default=list)
    status = peewee.CharField(max_length=16, default="pending", index=True)
    hardware_id = peewee.CharField(max_length=200, null=True, unique=True)
    version = peewee.CharField(max_length=64, null=True)
    hardware = JSONField(default=dict)
    interfaces = JSONField(default=list)
    capacity = JSONField(default=dict)
    metrics = JSONField(default=dict)
    time_quality = peewee.CharField(max_length=16, null=True)
    last_seen_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
