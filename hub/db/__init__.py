"""Peewee models, the database binding and migrations."""
