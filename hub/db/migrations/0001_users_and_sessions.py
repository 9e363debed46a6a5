"""Users and login sessions."""

import datetime

from peewee import BooleanField, CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class User(Model):
        id = CharField(primary_key=True, max_length=40)
        username = CharField(unique=True, max_length=150)
        password_hash = TextField()
        roles = TextField(default="[]")
        sites = TextField(null=True)
        disabled = BooleanField(default=False)
        created_at = DateTimeField(default=datetime.datetime.utcnow)
        updated_at = DateTimeField(default=datetime.datetime.utcnow)

        class Meta:
            database = db
            table_name = "user"

    class AuthSession(Model):
        id = CharField(primary_key=True, max_length=40)
        user = ForeignKeyField(User, on_delete="CASCADE")
        token_hash = CharField(unique=True, max_length=64)
        created_at = DateTimeField()
        last_used_at = DateTimeField()
        expires_at = DateTimeField()
        revoked_at = DateTimeField(null=True)
        source_ip = CharField(max_length=64, null=True)
        user_agent = CharField(max_length=256, null=True)

        class Meta:
            database = db
            table_name = "auth_session"

    db.create_tables([User, AuthSession])


def down(migrator, db):
    db.execute_sql('DROP TABLE "auth_session"')
    db.execute_sql('DROP TABLE "user"')
