"""The node inventory."""

import datetime

from peewee import CharField, DateTimeField, Model, TextField


def up(migrator, db):
    class Node(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=200)
        site = CharField(max_length=100, null=True, index=True)
        tags = TextField(default="[]")
        status = CharField(max_length=16, default="pending", index=True)
        hardware_id = CharField(max_length=200, null=True, unique=True)
        version = CharField(max_length=64, null=True)
        hardware = TextField(default="{}")
        interfaces = TextField(default="[]")
        capacity = TextField(default="{}")
        metrics = TextField(default="{}")
        time_quality = CharField(max_length=16, null=True)
        last_seen_at = DateTimeField(null=True)
        created_at = DateTimeField(default=datetime.datetime.utcnow)
        updated_at = DateTimeField(default=datetime.datetime.utcnow)

        class Meta:
            database = db
            table_name = "node"

    db.create_tables([Node])


def down(migrator, db):
    db.execute_sql('DROP TABLE "node"')
