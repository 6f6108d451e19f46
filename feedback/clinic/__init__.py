"""The clinic side: the MQTT logger, its database, reports and therapist commands."""
