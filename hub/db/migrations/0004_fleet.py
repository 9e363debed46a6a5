"""The fleet: node credentials, status history, outbox deduplication and health events."""

from peewee import CharField, DateTimeField, FloatField, IntegerField, Model, TextField


def up(migrator, db):
    class NodeStatusChange(Model):
        id = CharField(primary_key=True, max_length=40)
        node_id = CharField(max_length=40, index=True)
        at = DateTimeField()
        from_status = CharField(max_length=16, null=True)
        to_status = CharField(max_length=16)
        reason = CharField(max_length=200, null=True)

        class Meta:
            database = db
            table_name = "node_status_change"

    class ReceivedMessage(Model):
        node_id = CharField(max_length=40)
        msg_id = CharField(max_length=100)
        received_at = DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "received_message"
            primary_key = False
            indexes = ((("node_id", "msg_id"), True),)

    class HealthEvent(Model):
        id = CharField(primary_key=True, max_length=40)
        node_id = CharField(max_length=40, null=True, index=True)
        site = CharField(max_length=100, null=True, index=True)
        kind = CharField(max_length=100, index=True)
        severity = CharField(max_length=16)
        state = CharField(max_length=16, index=True)
        first_seen = DateTimeField()
        last_seen = DateTimeField()
        count = IntegerField(default=1)
        details = TextField(default="{}")
        acknowledged_by = CharField(max_length=200, null=True)
        acknowledged_at = DateTimeField(null=True)
        suppressed_until = DateTimeField(null=True)
        resolved_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "health_event"

    db.create_tables([NodeStatusChange, ReceivedMessage, HealthEvent])
    migrator.migrate(
        migrator.add_column("node", "credential_hash", CharField(max_length=64, null=True, index=True)),
        migrator.add_column("node", "previous_credential_hash", CharField(max_length=64, null=True, index=True)),
        migrator.add_column("node", "previous_valid_until", DateTimeField(null=True)),
        migrator.add_column("node", "last_heartbeat_at", DateTimeField(null=True)),
        migrator.add_column("node", "heartbeat_interval_s", FloatField(default=10.0)),
        migrator.add_column("node", "clock_offset_ms", FloatField(null=True)),
        migrator.add_column("node", "connected_at", DateTimeField(null=True)),
        migrator.add_column("node", "settings", TextField(default="{}")),
    )


def down(migrator, db):
    for column in (
        "settings",
        "connected_at",
        "clock_offset_ms",
        "heartbeat_interval_s",
        "last_heartbeat_at",
        "previous_valid_until",
        "previous_credential_hash",
        "credential_hash",
    ):
        migrator.migrate(migrator.drop_column("node", column))
    for table in ("health_event", "received_message", "node_status_change"):
        db.execute_sql(f'DROP TABLE "{table}"')
