"""Outputs fed by the session runner: terminal view, MQTT publisher, SQLite session log."""
