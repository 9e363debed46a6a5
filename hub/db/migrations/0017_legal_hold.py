"""Legal hold on recordings (issue 20): a held recording is never deleted, by a user or by retention."""

from peewee import SQL, BooleanField, DateTimeField, TextField

COLUMNS = (
    ("legal_hold", lambda: BooleanField(default=False, index=True, constraints=[SQL("DEFAULT FALSE")])),
    ("legal_hold_reason", lambda: TextField(null=True)),
    ("legal_hold_at", lambda: DateTimeField(null=True)),
    ("legal_hold_by", lambda: TextField(null=True)),  # JSON {type, id, name}
)


def up(migrator, db):
    migrator.migrate(*(migrator.add_column("recording", name, make()) for name, make in COLUMNS))


def down(migrator, db):
    migrator.migrate(*(migrator.drop_column("recording", name) for name, _ in COLUMNS))
