"""History that lasts: one row per node per minute of meter levels and of heartbeat metrics.

`minute` is the Unix time (seconds, UTC) the minute starts at, so buckets of any size are plain
integer arithmetic on both SQLite and PostgreSQL; rows older than the retention are pruned.
"""

from peewee import BigIntegerField, CharField, CompositeKey, FloatField, IntegerField, Model, TextField

METRIC_COLUMNS = (
    "cpu_pct_mean",
    "cpu_pct_max",
    "memory_used_pct_mean",
    "memory_used_pct_max",
    "disk_used_pct_mean",
    "disk_used_pct_max",
    "disk_free_bytes_min",
    "temperature_c_mean",
    "temperature_c_max",
    "outbox_depth_mean",
    "outbox_depth_max",
    "clock_offset_ms_mean",
    "clock_offset_ms_max_abs",
    "load_1m_mean",
    "load_1m_max",
)


def up(migrator, db):
    class MeterMinute(Model):
        node_id = CharField(max_length=40)
        minute = BigIntegerField(index=True)
        frames = IntegerField()
        channels = TextField()
        momentary_lufs_max = FloatField(null=True)
        short_term_lufs_max = FloatField(null=True)
        integrated_lufs = FloatField(null=True)

        class Meta:
            database = db
            table_name = "meter_minute"
            primary_key = CompositeKey("node_id", "minute")

    class MetricMinute(Model):
        node_id = CharField(max_length=40)
        minute = BigIntegerField(index=True)
        samples = IntegerField()

        class Meta:
            database = db
            table_name = "metric_minute"
            primary_key = CompositeKey("node_id", "minute")

    for column in METRIC_COLUMNS:
        MetricMinute._meta.add_field(column, FloatField(null=True))
    db.create_tables([MeterMinute, MetricMinute])


def down(migrator, db):
    for table in ("metric_minute", "meter_minute"):
        db.execute_sql(f'DROP TABLE "{table}"')
