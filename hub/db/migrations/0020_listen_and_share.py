"""Live listen sessions and recording share links (issue 23)."""

from peewee import BigIntegerField, BooleanField, CharField, DateTimeField, IntegerField, Model, TextField


def up(migrator, db):
    class ListenSession(Model):
        id = CharField(primary_key=True, max_length=40)
        node_id = CharField(max_length=40, index=True)
        site = CharField(max_length=100, null=True, index=True)
        user_id = CharField(max_length=40, null=True, index=True)
        actor = TextField(default="{}")
        client_address = CharField(max_length=64, null=True)
        user_agent = CharField(max_length=300, null=True)
        codec = CharField(max_length=8)
        bitrate = IntegerField(null=True)
        sample_rate = IntegerField()
        channels = TextField(default="[]")
        programme = CharField(max_length=100, null=True)
        stream_id = CharField(max_length=40, index=True)
        state = CharField(max_length=16, index=True)
        started_at = DateTimeField(index=True)
        connected_at = DateTimeField(null=True)
        disconnected_at = DateTimeField(null=True)
        ended_at = DateTimeField(null=True)
        end_reason = CharField(max_length=32, null=True)
        ended_by = TextField(null=True)
        bytes_sent = BigIntegerField(default=0)
        frames_sent = BigIntegerField(default=0)
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "listen_session"

    class ShareLink(Model):
        id = CharField(primary_key=True, max_length=40)
        recording_id = CharField(max_length=40, index=True)
        site = CharField(max_length=100, null=True, index=True)
        token_sha256 = CharField(max_length=64, unique=True)
        token_prefix = CharField(max_length=12)
        label = CharField(max_length=200, default="")
        password_hash = TextField(null=True)
        expires_at = DateTimeField(index=True)
        max_uses = IntegerField(null=True)
        uses = IntegerField(default=0)
        allow_download = BooleanField(default=False)
        created_by = TextField(default="{}")
        created_by_id = CharField(max_length=40, null=True, index=True)
        created_at = DateTimeField(index=True)
        revoked_at = DateTimeField(null=True)
        revoked_by = TextField(null=True)
        last_used_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "share_link"

    db.create_tables([ListenSession, ShareLink])


def down(migrator, db):
    for table in ("share_link", "listen_session"):
        db.execute_sql(f'DROP TABLE "{table}"')
