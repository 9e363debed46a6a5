"""Watchdog policies (settings), their calibrations, what each node runs, and the health event timeline's steps."""

from peewee import BooleanField, CharField, DateTimeField, FloatField, IntegerField, Model, TextField


def up(migrator, db):
    class WatchdogPolicy(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=100, unique=True)
        description = TextField(default="")
        builtin = BooleanField(default=False)
        detectors = TextField(default="{}")
        assignments = TextField(default="[]")
        baselines = TextField(default="{}")
        created_at = DateTimeField()
        updated_at = DateTimeField(index=True)
        version = IntegerField(default=1)

        class Meta:
            database = db
            table_name = "watchdog_policy"

    class WatchdogCalibration(Model):
        id = CharField(primary_key=True, max_length=40)
        policy_id = CharField(max_length=40, index=True)
        node_id = CharField(max_length=40, index=True)
        site = CharField(max_length=100, null=True, index=True)
        duration_s = FloatField()
        state = CharField(max_length=16, index=True)
        requested_at = DateTimeField(index=True)
        sent_at = DateTimeField(null=True)
        completed_at = DateTimeField(null=True)
        requested_by = TextField(default="{}")
        baseline = TextField(null=True)
        error = TextField(null=True)

        class Meta:
            database = db
            table_name = "watchdog_calibration"

    class WatchdogApplied(Model):
        node_id = CharField(primary_key=True, max_length=40)
        policy_id = CharField(max_length=40, null=True)
        version = IntegerField(null=True)
        ok = BooleanField(default=True)
        error = TextField(null=True)
        at = DateTimeField()

        class Meta:
            database = db
            table_name = "watchdog_applied"

    class HealthEventStep(Model):
        id = CharField(primary_key=True, max_length=40)
        event_id = CharField(max_length=40, index=True)
        node_id = CharField(max_length=40, null=True, index=True)
        at = DateTimeField(index=True)
        type = CharField(max_length=32)
        detector = CharField(max_length=40, null=True)
        step = IntegerField(null=True)
        action = CharField(max_length=40, null=True)
        outcome = CharField(max_length=16, null=True)
        reason = TextField(null=True)
        output = TextField(default="")

        class Meta:
            database = db
            table_name = "health_event_step"

    db.create_tables([WatchdogPolicy, WatchdogCalibration, WatchdogApplied, HealthEventStep])


def down(migrator, db):
    for table in ("health_event_step", "watchdog_applied", "watchdog_calibration", "watchdog_policy"):
        db.execute_sql(f'DROP TABLE "{table}"')
