"""More than one hub on one PostgreSQL (issue 24): running instances, singleton leases, the shared event log,
and which instance serves each listen session."""

from peewee import BigIntegerField, CharField, DateTimeField, IntegerField, Model


def up(migrator, db):
    class HubInstance(Model):
        id = CharField(primary_key=True, max_length=80)
        host = CharField(max_length=255)
        pid = IntegerField()
        url = CharField(max_length=500, default="")
        version = CharField(max_length=40, default="")
        started_at = DateTimeField()
        seen_at = DateTimeField(index=True)
        stopped_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "hub_instance"

    class HubLease(Model):
        name = CharField(primary_key=True, max_length=40)
        holder = CharField(max_length=80, null=True)
        fence = BigIntegerField(default=0)
        acquired_at = DateTimeField(null=True)
        expires_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "hub_lease"

    db.create_tables([HubInstance, HubLease])
    if db.__class__.__name__.startswith("Sqlite"):
        db.execute_sql(
            'CREATE TABLE "event_log" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "type" VARCHAR(80) NOT NULL, '
            '"site" VARCHAR(100), "data" TEXT NOT NULL, "created_at" DATETIME NOT NULL)'
        )
    else:
        db.execute_sql(
            'CREATE TABLE "event_log" ("id" BIGSERIAL NOT NULL PRIMARY KEY, "type" VARCHAR(80) NOT NULL, '
            '"site" VARCHAR(100), "data" TEXT NOT NULL, "created_at" TIMESTAMP NOT NULL)'
        )
    db.execute_sql('CREATE INDEX "event_log_created_at" ON "event_log" ("created_at")')
    migrator.migrate(migrator.add_column("listen_session", "hub_instance", CharField(max_length=80, null=True, index=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("listen_session", "hub_instance"))
    for table in ("event_log", "hub_lease", "hub_instance"):
        db.execute_sql(f'DROP TABLE "{table}"')
