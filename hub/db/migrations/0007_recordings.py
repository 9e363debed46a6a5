"""Recordings: profiles, the recordings library and the jobs that capture and upload them."""

from peewee import BooleanField, CharField, DateTimeField, FloatField, IntegerField, Model, TextField


def up(migrator, db):
    class RecordingProfile(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=100, unique=True)
        description = TextField(default="")
        builtin = BooleanField(default=False)
        format = CharField(max_length=8)
        sample_rate = IntegerField()
        bit_depth = IntegerField()
        channels = IntegerField(null=True)
        channel_map_template_id = CharField(max_length=40, null=True)
        segment_s = FloatField()
        preroll_s = FloatField()
        max_duration_s = FloatField()
        created_at = DateTimeField()
        updated_at = DateTimeField(index=True)
        version = IntegerField(default=1)

        class Meta:
            database = db
            table_name = "recording_profile"

    class Recording(Model):
        id = CharField(primary_key=True, max_length=40)
        node_id = CharField(max_length=40, index=True)
        site = CharField(max_length=100, null=True, index=True)
        name = CharField(max_length=200)
        status = CharField(max_length=16, index=True)
        profile_id = CharField(max_length=40, null=True)
        profile = TextField(default="{}")
        format = CharField(max_length=8)
        sample_rate = IntegerField()
        bit_depth = IntegerField()
        channels = IntegerField(null=True)
        requested_duration_s = FloatField(null=True)
        started_at = DateTimeField(null=True, index=True)
        ended_at = DateTimeField(null=True)
        duration_s = FloatField(null=True)
        size_bytes = IntegerField(null=True)
        sha256 = CharField(max_length=64, null=True)
        storage_key = CharField(max_length=300, null=True)
        metadata = TextField(default="{}")
        integrity = TextField(default="{}")
        interrupted = BooleanField(default=False)
        time_quality = CharField(max_length=16, null=True)
        clock_offset_ms = FloatField(null=True)
        error = TextField(null=True)
        created_at = DateTimeField(index=True)
        created_by = TextField(default="{}")
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "recording"

    class RecordingJob(Model):
        id = CharField(primary_key=True, max_length=40)
        recording_id = CharField(max_length=40, index=True)
        node_id = CharField(max_length=40, index=True)
        site = CharField(max_length=100, null=True, index=True)
        state = CharField(max_length=16, index=True)
        lease_epoch = IntegerField(default=0)
        stop_requested = BooleanField(default=False)
        capture_started = BooleanField(default=False)
        claimed_at = DateTimeField(null=True)
        last_heartbeat_at = DateTimeField(null=True)
        progress = TextField(default="{}")
        attempts = IntegerField(default=0)
        error = TextField(null=True)
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "recording_job"

    db.create_tables([RecordingProfile, Recording, RecordingJob])


def down(migrator, db):
    for table in ("recording_job", "recording", "recording_profile"):
        db.execute_sql(f'DROP TABLE "{table}"')
