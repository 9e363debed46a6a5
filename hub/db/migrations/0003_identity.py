"""Identity and access: groups, custom roles, API keys, login throttling, settings and the audit log."""

import datetime

from peewee import BooleanField, CharField, DateTimeField, IntegerField, Model, TextField


def up(migrator, db):
    class Group(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(unique=True, max_length=150)
        description = TextField(default="")
        roles = TextField(default="[]")
        sites = TextField(null=True)
        created_at = DateTimeField(default=datetime.datetime.utcnow)
        updated_at = DateTimeField(default=datetime.datetime.utcnow)

        class Meta:
            database = db
            table_name = "group"

    class UserGroup(Model):
        user_id = CharField(max_length=40, index=True)
        group_id = CharField(max_length=40, index=True)

        class Meta:
            database = db
            table_name = "user_group"
            indexes = ((("user_id", "group_id"), True),)

    class Role(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(unique=True, max_length=100)
        description = TextField(default="")
        permissions = TextField(default="[]")
        created_at = DateTimeField(default=datetime.datetime.utcnow)
        updated_at = DateTimeField(default=datetime.datetime.utcnow)

        class Meta:
            database = db
            table_name = "role"

    class ApiKey(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=150)
        kind = CharField(max_length=16)
        user_id = CharField(max_length=40, null=True, index=True)
        scopes = TextField(default="[]")
        sites = TextField(null=True)
        key_prefix = CharField(max_length=24)
        secret_hash = CharField(unique=True, max_length=64)
        previous_hash = CharField(max_length=64, null=True, index=True)
        created_by = CharField(max_length=40, null=True)
        created_at = DateTimeField(default=datetime.datetime.utcnow)
        expires_at = DateTimeField(null=True)
        revoked_at = DateTimeField(null=True)
        last_used_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "api_key"

    class LoginThrottle(Model):
        key = CharField(primary_key=True, max_length=300)
        failures = IntegerField(default=0)
        window_start = DateTimeField()
        locked_until = DateTimeField(null=True)
        lockouts = IntegerField(default=0)

        class Meta:
            database = db
            table_name = "login_throttle"

    class Setting(Model):
        key = CharField(primary_key=True, max_length=100)
        value = TextField()
        updated_at = DateTimeField(default=datetime.datetime.utcnow)

        class Meta:
            database = db
            table_name = "setting"

    class OidcLogin(Model):
        state = CharField(primary_key=True, max_length=100)
        nonce = CharField(max_length=100)
        code_verifier = CharField(max_length=200)
        return_to = CharField(max_length=500)
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = "oidc_login"

    class AuditEvent(Model):
        id = CharField(primary_key=True, max_length=40)
        at = DateTimeField(index=True)
        actor_type = CharField(max_length=16)
        actor_id = CharField(max_length=40, null=True, index=True)
        actor_name = CharField(max_length=200, null=True)
        permission = CharField(max_length=64, null=True)
        action = CharField(max_length=100, index=True)
        target_type = CharField(max_length=40, null=True)
        target_id = CharField(max_length=200, null=True, index=True)
        before = TextField(null=True)
        after = TextField(null=True)
        outcome = CharField(max_length=16, index=True)
        reason = TextField(null=True)
        source_ip = CharField(max_length=64, null=True)

        class Meta:
            database = db
            table_name = "audit_event"

    db.create_tables([Group, UserGroup, Role, ApiKey, LoginThrottle, Setting, OidcLogin, AuditEvent])
    migrator.migrate(
        migrator.add_column("user", "password_changed_at", DateTimeField(null=True)),
        migrator.add_column("user", "oidc_subject", CharField(max_length=300, null=True)),
        migrator.add_column("user", "display_name", CharField(max_length=200, null=True)),
        migrator.add_column("auth_session", "via", CharField(max_length=16, default="password")),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("auth_session", "via"),
        migrator.drop_column("user", "display_name"),
        migrator.drop_column("user", "oidc_subject"),
        migrator.drop_column("user", "password_changed_at"),
    )
    for table in ("audit_event", "oidc_login", "setting", "login_throttle", "api_key", "role", "user_group", "group"):
        db.execute_sql(f'DROP TABLE "{table}"')
