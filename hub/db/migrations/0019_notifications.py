"""Notifications (issue 21): channels, the intake of notices, the outbox of messages, delivery attempts, storm state."""

from peewee import BooleanField, CharField, DateTimeField, FloatField, IntegerField, Model, TextField


def up(migrator, db):
    class NotificationChannel(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=100, unique=True)
        kind = CharField(max_length=12, index=True)
        site = CharField(max_length=100, null=True, index=True)
        enabled = BooleanField(default=True, index=True)
        description = TextField(default="")
        config = TextField(default="{}")
        sealed_secrets = TextField(null=True)
        secret_names = TextField(default="[]")
        subscription = TextField(default="{}")
        last_test = TextField(null=True)
        last_delivery_at = DateTimeField(null=True)
        version = IntegerField(default=1)
        created_by = TextField(default="{}")
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "notification_channel"

    class NotificationNotice(Model):
        id = CharField(primary_key=True, max_length=40)
        event_type = CharField(max_length=100, index=True)
        key = CharField(max_length=200, index=True)
        site = CharField(max_length=100, null=True, index=True)
        severity = CharField(max_length=10)
        opened = BooleanField(default=True)
        health_kind = CharField(max_length=100, null=True)
        at = DateTimeField(index=True)
        summary = TextField()
        data = TextField(default="{}")
        routed = BooleanField(default=False, index=True)
        created_at = DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "notification_notice"

    class Notification(Model):
        id = CharField(primary_key=True, max_length=40)
        channel_id = CharField(max_length=40, index=True)
        site = CharField(max_length=100, null=True, index=True)
        kind = CharField(max_length=100, index=True)
        severity = CharField(max_length=10, index=True)
        opened = BooleanField(default=True)
        thread_key = CharField(max_length=200, index=True)
        title = TextField()
        item_count = IntegerField(default=1)
        message = TextField(default="{}")
        notice_ids = TextField(default="[]")
        state = CharField(max_length=10, index=True)
        attempts = IntegerField(default=0)
        next_attempt_at = DateTimeField(null=True, index=True)
        first_attempt_at = DateTimeField(null=True)
        delivered_at = DateTimeField(null=True)
        last_error = TextField(null=True)
        provider_ref = CharField(max_length=200, null=True)
        deferred_reason = CharField(max_length=100, null=True)
        lease_epoch = IntegerField(default=0)
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "notification"

    class NotificationDelivery(Model):
        id = CharField(primary_key=True, max_length=40)
        channel_id = CharField(max_length=40, null=True, index=True)
        notification_id = CharField(max_length=40, null=True, index=True)
        attempt = IntegerField(default=1)
        test = BooleanField(default=False)
        at = DateTimeField(index=True)
        outcome = CharField(max_length=10, index=True)
        latency_ms = FloatField(null=True)
        response_code = IntegerField(null=True)
        response_message = TextField(default="")
        site = CharField(max_length=100, null=True, index=True)

        class Meta:
            database = db
            table_name = "notification_delivery"

    class NotificationGate(Model):
        channel_id = CharField(primary_key=True, max_length=40)
        state = TextField(default="{}")
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "notification_gate"

    db.create_tables([NotificationChannel, NotificationNotice, Notification, NotificationDelivery, NotificationGate])
    # The hub's own conditions (notify.failed on every delivery, storage_full...) are found by kind and state:
    # with only single-column indexes the planner may walk every open event of the fleet to find one.
    db.execute_sql('CREATE INDEX "health_event_kind_state" ON "health_event" ("kind", "state")')


def down(migrator, db):
    db.execute_sql('DROP INDEX "health_event_kind_state"')
    for table in ("notification_gate", "notification_delivery", "notification", "notification_notice", "notification_channel"):
        db.execute_sql(f'DROP TABLE "{table}"')
