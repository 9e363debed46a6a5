"""Lifecycle jobs: allowlisted actions sent to a node, with their state and captured output."""

from peewee import CharField, DateTimeField, FloatField, IntegerField, Model, TextField


def up(migrator, db):
    class LifecycleJob(Model):
        id = CharField(primary_key=True, max_length=40)
        node_id = CharField(max_length=40, index=True)
        site = CharField(max_length=100, null=True, index=True)
        action = CharField(max_length=40)
        state = CharField(max_length=16, index=True)
        created_at = DateTimeField()
        created_by = TextField(default="{}")
        expires_at = DateTimeField()
        timeout_s = FloatField()
        sent_at = DateTimeField(null=True)
        deliveries = IntegerField(default=0)
        started_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)
        exit_code = IntegerField(null=True)
        output = TextField(default="")
        error = TextField(null=True)

        class Meta:
            database = db
            table_name = "lifecycle_job"

    db.create_tables([LifecycleJob])


def down(migrator, db):
    db.execute_sql('DROP TABLE "lifecycle_job"')
