"""API keys made by a key remember it, so revoking a key revokes what it made."""

from peewee import CharField


def up(migrator, db):
    migrator.migrate(migrator.add_column("api_key", "parent_key_id", CharField(max_length=40, null=True, index=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("api_key", "parent_key_id"))
