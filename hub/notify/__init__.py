"""Notifications (issue 21): channels, delivery and storm control."""
