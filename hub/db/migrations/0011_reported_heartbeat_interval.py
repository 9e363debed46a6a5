"""The heartbeat interval a node reports using, beside the one the hub asks for: missed heartbeats are judged by it."""

from peewee import FloatField


def up(migrator, db):
    migrator.migrate(migrator.add_column("node", "reported_heartbeat_interval_s", FloatField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("node", "reported_heartbeat_interval_s"))
