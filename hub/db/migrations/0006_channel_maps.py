"""Channel maps: templates (physical inputs -> logical channels and programmes) and each node's assignment."""

from peewee import CharField, DateTimeField, IntegerField, Model, TextField


def up(migrator, db):
    class ChannelMapTemplate(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=100, unique=True)
        description = TextField(default="")
        channels = TextField(default="[]")
        programmes = TextField(default="[]")
        channel_count = IntegerField(default=0, index=True)
        created_at = DateTimeField()
        updated_at = DateTimeField(index=True)
        version = IntegerField(default=1)

        class Meta:
            database = db
            table_name = "channel_map_template"

    class ChannelMapAssignment(Model):
        node_id = CharField(primary_key=True, max_length=40)
        template_id = CharField(max_length=40, null=True, index=True)
        previous_template_id = CharField(max_length=40, null=True, index=True)
        assigned_at = DateTimeField()
        assigned_by = TextField(default="{}")

        class Meta:
            database = db
            table_name = "channel_map_assignment"

    db.create_tables([ChannelMapTemplate, ChannelMapAssignment])


def down(migrator, db):
    for table in ("channel_map_assignment", "channel_map_template"):
        db.execute_sql(f'DROP TABLE "{table}"')
