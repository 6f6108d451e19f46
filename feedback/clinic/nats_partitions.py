"""The clinic stream split into partitions by station, for loggers that each read their own.

With one durable consumer for the whole stream, two logger instances get interleaved messages
of the same sessions, and the order gate makes them take turns (bench/bench_nats.py: two
PostgreSQL loggers no faster than one). Here the server sorts each station's messages into one
of N partitions as they arrive, and a partition has one reader at a time (nats_lease.py).

How (nats-server 2.8 or later, checked on 2.9.10 with MQTT publishers): two accounts. The
stations' account (the MQTT gateway, dashboards, therapists) keeps the subjects as they are;
the loggers' account imports each logged leaf with a subject transform that adds the
partition, a hash of the clinic and station tokens:

    vmf.v1.<clinic>.<station>.<leaf>  ->  vmfp.<k>.<clinic>.<station>.<leaf>

A mapping in a single account would do the same, but it would also rename what the stations'
and dashboards' own MQTT subscriptions see (a station's `cmd`, a dashboard's `status`).
Receipts and resend requests go the other way: the loggers' account exports `.receipt`.
"""

from __future__ import annotations

from feedback.clinic.validation import LOGGED_LEAVES
from feedback.outputs.topics import TOPIC_ROOT

ROOT = "vmfp"
STREAM = "VMFP"
STATIONS_ACCOUNT = "STATIONS"
LOGGERS_ACCOUNT = "LOGGERS"
PARTITIONS = 8  # more than the instances a network runs, so that they can share them out


def _subject(topic: str) -> str:
    return topic.replace("/", ".")


def leaves() -> list[str]:
    return sorted(_subject(leaf) for leaf in LOGGED_LEAVES)


def stream_subjects(clinic: str = "*") -> list[str]:
    """Everything the imports bring (the servers choose the leaves). nats-server 2.9 takes a
    consumer's filter only within one of its stream's subjects, so the stream does not list
    the leaves, which would leave no subject that a partition's filter fits in."""
    return [f"{ROOT}.>" if clinic == "*" else f"{ROOT}.*.{clinic}.>"]


def filter_subject(partition: int, clinic: str = "*") -> str:
    return f"{ROOT}.{partition}.>" if clinic == "*" else f"{ROOT}.{partition}.{clinic}.>"


def durable_name(group: str, partition: int) -> str:
    return f"{group}-p{partition}"


def topic_of(subject: str) -> str:
    """The MQTT topic a partitioned subject came from (the two leading tokens off)."""
    rest = subject.split(".", 2)[2]
    return f"{TOPIC_ROOT}/{rest.replace('.', '/')}"


def accounts_config(partitions: int, logger_password: str, *, anonymous_stations: bool) -> str:
    """The `accounts` block (and `no_auth_user`) of every node: the same on all three.

    `logger_password` is written as given: a literal in quotes for the tests, `$VAR` for a
    deployment. `anonymous_stations`: connections without credentials land in the stations'
    account (tests and the benchmark; a deployment names its users)."""
    root = _subject(TOPIC_ROOT)
    imports = "\n".join(
        f'      {{ stream: {{ account: {STATIONS_ACCOUNT}, subject: "{root}.*.*.{leaf}" }},'
        f' to: "{ROOT}.{{{{partition({partitions},1,2)}}}}.{{{{wildcard(1)}}}}'
        f'.{{{{wildcard(2)}}}}.{leaf}" }}'
        for leaf in leaves()
    )
    stations_users = "users: [ { user: station, password: station } ]"
    text = (
        "accounts {\n"
        f"  {STATIONS_ACCOUNT}: {{\n"
        "    jetstream: enabled\n"
        f"    {stations_users}\n"
        f'    exports: [ {{ stream: "{root}.>" }} ]\n'
        f"    imports: [ {{ stream: {{ account: {LOGGERS_ACCOUNT},"
        f' subject: "{root}.*.*.receipt" }} }} ]\n'
        "  }\n"
        f"  {LOGGERS_ACCOUNT}: {{\n"
        "    jetstream: enabled\n"
        f"    users: [ {{ user: logger, password: {logger_password} }} ]\n"
        f'    exports: [ {{ stream: "{root}.*.*.receipt" }} ]\n'
        f"    imports: [\n{imports}\n    ]\n"
        "  }\n"
        "}\n"
    )
    if anonymous_stations:
        text += "no_auth_user: station\n"
    return text
