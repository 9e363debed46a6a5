"""Channel-map plans: a staged template change across many nodes, and each node's part in it."""

from peewee import CharField, CompositeKey, DateTimeField, FloatField, IntegerField, Model, TextField


def up(migrator, db):
    class ChannelMapPlan(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=100)
        description = TextField(default="")
        template_id = CharField(max_length=40, null=True, index=True)
        target = TextField(default="{}")
        state = CharField(max_length=20, default="staged", index=True)
        timeout_s = FloatField(default=120.0)
        site = CharField(max_length=100, null=True, index=True)
        created_by = TextField(default="{}")
        created_by_id = CharField(max_length=40, null=True, index=True)
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()
        applied_at = DateTimeField(null=True)
        rollback_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)
        version = IntegerField(default=1)

        class Meta:
            database = db
            table_name = "channel_map_plan"

    class ChannelMapPlanNode(Model):
        plan_id = CharField(max_length=40, index=True)
        node_id = CharField(max_length=40, index=True)
        node_name = CharField(max_length=200, default="")
        site = CharField(max_length=100, null=True)
        before_template_id = CharField(max_length=40, null=True)
        after_template_id = CharField(max_length=40, null=True)
        state = CharField(max_length=16, default="pending", index=True)
        error = TextField(null=True)
        sent_at = DateTimeField(null=True)
        confirmed_at = DateTimeField(null=True)
        rolled_back_at = DateTimeField(null=True)
        rollback_confirmed_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "channel_map_plan_node"
            primary_key = CompositeKey("plan_id", "node_id")

    db.create_tables([ChannelMapPlan, ChannelMapPlanNode])


def down(migrator, db):
    for table in ("channel_map_plan_node", "channel_map_plan"):
        db.execute_sql(f'DROP TABLE "{table}"')
