"""Commissioning reports: what a technician's checks found on a node, kept with the node."""

from peewee import CharField, DateTimeField, Model, TextField


def up(migrator, db):
    class CommissioningReport(Model):
        id = CharField(primary_key=True, max_length=40)
        node_id = CharField(max_length=40, index=True)
        created_at = DateTimeField(index=True)
        passed = CharField(max_length=8)
        report = TextField(default="{}")

        class Meta:
            database = db
            table_name = "commissioning_report"

    db.create_tables([CommissioningReport])


def down(migrator, db):
    db.execute_sql('DROP TABLE "commissioning_report"')
