"""A NATS connection whose credentials hold for every node it may reconnect to.

nats-py reads credentials written in a server URL (`nats://user:pass@host:port`) for that URL
only. The servers also tell a client the other nodes' addresses, without credentials, and
nats-py adds them to its pool: a reconnect after a node's loss can land on one of those and
connect without credentials. A cluster with `no_auth_user` (the test cluster) then puts the
logger in the stations' account, where the partitioned stream and the lease bucket do not
exist: every lease renewal fails with "no response from stream" for as long as it stays
there. A cluster without it refuses the connection, and nats-py moves on to another node.
Credentials given as options hold for every server, listed or discovered.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import nats
from nats.aio.client import Client as NATS


def split_credentials(servers: list[str]) -> tuple[list[str], dict[str, str]]:
    """The URLs without their credentials, and the credentials as nats-py's options
    (`user`/`password`, or `token` for a URL with a user part only). Every URL that carries
    credentials must carry the same: one connection has one identity."""
    bare, found = [], set()
    for url in servers:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        if parts.username is not None:
            found.add((unquote(parts.username), unquote(parts.password or "") or None))
            host = parts.netloc.rsplit("@", 1)[1]
            parts = SplitResult(parts.scheme, host, parts.path, parts.query, parts.fragment)
        bare.append(urlunsplit(parts))
    if len(found) > 1:
        raise ValueError("the NATS URLs carry different credentials")
    if not found:
        return bare, {}
    user, password = found.pop()
    if password is None:
        return bare, {"token": user}
    return bare, {"user": user, "password": password}


async def connect(servers: list[str], **options: Any) -> NATS:
    bare, credentials = split_credentials(servers)
    return await nats.connect(servers=bare, **credentials, **options)
