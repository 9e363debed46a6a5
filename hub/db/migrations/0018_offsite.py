"""Off-site upload and retention (issue 20): providers, policies, the upload queue, retention policies and runs,
and where each recording's copies are."""

from peewee import BigIntegerField, BooleanField, CharField, DateTimeField, FloatField, IntegerField, Model, TextField

RECORDING_COLUMNS = (
    ("hub_evicted_at", lambda: DateTimeField(null=True)),
    ("hub_evicted_reason", lambda: TextField(null=True)),
    ("node_cache", lambda: CharField(max_length=12, null=True)),
    ("node_cache_at", lambda: DateTimeField(null=True)),
)


def up(migrator, db):
    class UploadProvider(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=100, unique=True)
        kind = CharField(max_length=8, index=True)
        enabled = BooleanField(default=True, index=True)
        description = TextField(default="")
        config = TextField(default="{}")
        sealed_secrets = TextField(null=True)
        secret_names = TextField(default="[]")
        rate_limit_bps = BigIntegerField(null=True)
        max_concurrency = IntegerField(default=2)
        last_test = TextField(null=True)
        version = IntegerField(default=1)
        created_by = TextField(default="{}")
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "upload_provider"

    class UploadPolicy(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=100, unique=True)
        enabled = BooleanField(default=True, index=True)
        description = TextField(default="")
        criteria = TextField(default="{}")
        provider_ids = TextField(default="[]")
        key_template = CharField(max_length=500)
        key_time_zone = CharField(max_length=8, default="utc")
        when = CharField(max_length=12, default="completed")
        window_start = CharField(max_length=5, null=True)
        window_end = CharField(max_length=5, null=True)
        bandwidth_cap_bps = BigIntegerField(null=True)
        route = CharField(max_length=8, default="via_hub")
        priority = IntegerField(default=0)
        version = IntegerField(default=1)
        created_by = TextField(default="{}")
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "upload_policy"

    class UploadItem(Model):
        id = CharField(primary_key=True, max_length=40)
        recording_id = CharField(max_length=40, index=True)
        provider_id = CharField(max_length=40, index=True)
        policy_id = CharField(max_length=40, null=True, index=True)
        site = CharField(max_length=100, null=True, index=True)
        node_id = CharField(max_length=40, index=True)
        route = CharField(max_length=8, default="via_hub")
        state = CharField(max_length=12, index=True)
        state_reason = TextField(null=True)
        attempts = IntegerField(default=0)
        bytes_total = BigIntegerField(null=True)
        bytes_sent = BigIntegerField(default=0)
        last_error = TextField(null=True)
        remote_key = CharField(max_length=1024, null=True)
        checksum_sha256 = CharField(max_length=64, null=True)
        verified_by = CharField(max_length=40, null=True)
        next_attempt_at = DateTimeField(null=True, index=True)
        lease_epoch = IntegerField(default=0)
        resume = TextField(default="{}")
        started_at = DateTimeField(null=True)
        synced_at = DateTimeField(null=True, index=True)
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "upload_item"
            indexes = ((("recording_id", "provider_id"), True),)

    class RetentionPolicy(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=100, unique=True)
        enabled = BooleanField(default=True, index=True)
        description = TextField(default="")
        sites = TextField(default="[]")
        profile_ids = TextField(default="[]")
        tags = TextField(default="[]")
        keep_on_hub_days = FloatField(null=True)
        keep_on_node_until_hub_has_it = BooleanField(default=True)
        required_providers = TextField(default="[]")
        min_free_bytes_hub = BigIntegerField(default=0)
        min_free_bytes_node = BigIntegerField(default=0)
        priority = IntegerField(default=0)
        version = IntegerField(default=1)
        created_by = TextField(default="{}")
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "retention_policy"

    class RetentionRun(Model):
        id = CharField(primary_key=True, max_length=40)
        trigger = CharField(max_length=12)
        started_at = DateTimeField(index=True)
        finished_at = DateTimeField(null=True)
        deleted = IntegerField(default=0)
        freed_bytes = BigIntegerField(default=0)
        held = IntegerField(default=0)
        shortfall_bytes = BigIntegerField(default=0)
        details = TextField(default="{}")
        actor = TextField(default="{}")

        class Meta:
            database = db
            table_name = "retention_run"

    db.create_tables([UploadProvider, UploadPolicy, UploadItem, RetentionPolicy, RetentionRun])
    migrator.migrate(*(migrator.add_column("recording", name, make()) for name, make in RECORDING_COLUMNS))


def down(migrator, db):
    migrator.migrate(*(migrator.drop_column("recording", name) for name, _ in RECORDING_COLUMNS))
    for table in ("retention_run", "retention_policy", "upload_item", "upload_policy", "upload_provider"):
        db.execute_sql(f'DROP TABLE "{table}"')
