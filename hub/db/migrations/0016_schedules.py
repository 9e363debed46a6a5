"""Schedules: the timetable, its occurrences, and the scheduled columns of recordings and their jobs."""

from peewee import BooleanField, CharField, DateTimeField, FloatField, IntegerField, Model, TextField

JOB_COLUMNS = (
    ("schedule_id", lambda: CharField(max_length=40, null=True, index=True)),
    ("occurrence_id", lambda: CharField(max_length=40, null=True, index=True)),
    ("start_at", lambda: DateTimeField(null=True, index=True)),
    ("end_at", lambda: DateTimeField(null=True)),
    ("revision", lambda: IntegerField(default=0)),
)
RECORDING_COLUMNS = (
    ("schedule_id", lambda: CharField(max_length=40, null=True, index=True)),
    ("occurrence_id", lambda: CharField(max_length=40, null=True, index=True)),
    ("scheduled_start_at", lambda: DateTimeField(null=True)),
    ("late_s", lambda: FloatField(null=True)),
)


def up(migrator, db):
    class Schedule(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=100)
        description = TextField(default="")
        enabled = BooleanField(default=True, index=True)
        target = TextField(default="{}")
        site = CharField(max_length=100, null=True, index=True)
        time_zone = CharField(max_length=64)
        start_local = CharField(max_length=19)
        duration_s = IntegerField()
        rrule = TextField(null=True)
        exdates = TextField(default="[]")
        valid_from = DateTimeField(null=True)
        valid_until = DateTimeField(null=True)
        solar = TextField(null=True)
        profile_id = CharField(max_length=40)
        channel_map_id = CharField(max_length=40, null=True)
        metadata = TextField(default="{}")
        tags = TextField(default="[]")
        on_conflict = CharField(max_length=8, default="reject")
        version = IntegerField(default=1)
        created_by = TextField(default="{}")
        created_by_id = CharField(max_length=40, null=True, index=True)
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "schedule"

    class ScheduleOccurrence(Model):
        id = CharField(primary_key=True, max_length=40)
        schedule_id = CharField(max_length=40, index=True)
        site = CharField(max_length=100, null=True, index=True)
        start_at = DateTimeField(index=True)
        end_at = DateTimeField()
        local_start = CharField(max_length=40)
        state = CharField(max_length=16, index=True)
        reason = TextField(null=True)
        run_now = BooleanField(default=False)
        skipped_by = TextField(null=True)
        dispatched_at = DateTimeField(null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "schedule_occurrence"
            indexes = ((("schedule_id", "start_at"), True),)

    db.create_tables([Schedule, ScheduleOccurrence])
    migrator.migrate(*(migrator.add_column("recording_job", name, make()) for name, make in JOB_COLUMNS))
    migrator.migrate(*(migrator.add_column("recording", name, make()) for name, make in RECORDING_COLUMNS))
    migrator.migrate(migrator.add_index("recording_job", ("occurrence_id", "node_id"), True))


def down(migrator, db):
    migrator.migrate(migrator.drop_index("recording_job", "recording_job_occurrence_id_node_id"))
    migrator.migrate(*(migrator.drop_column("recording", name) for name, _ in RECORDING_COLUMNS))
    migrator.migrate(*(migrator.drop_column("recording_job", name) for name, _ in JOB_COLUMNS))
    for table in ("schedule_occurrence", "schedule"):
        db.execute_sql(f'DROP TABLE "{table}"')
