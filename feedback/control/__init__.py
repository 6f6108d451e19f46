"""Therapist commands as typed values, and the one way in for them.

`commands` holds the values (Stop, ChangeBand, EmergencyStop, ...); `bus.CommandBus` delivers them
to whoever acts (the session runner); `gate.CommandGate` turns a command arriving over MQTT into
one of those values once it passed validation and authorisation, and the dashboard link turns
its buttons into the same values: one control interface for both.
"""
