"""How to reach a broker: host, port, TLS and credentials, shared by the station and the logger.

Credentials come from configuration or the environment (`VMF_MQTT__USERNAME`,
`VMF_MQTT__PASSWORD`), never from a URL on the command line, where they would end up in the shell
history and in `ps` output: a URL with a user or password in it is refused.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from config.settings import Settings

SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}

# paho-mqtt leaves Nagle's algorithm on. Two small packets in a row (a cue then a live snapshot,
# a PUBACK then an emergency stop) then wait for the broker's delayed ACK: about 40 ms on Linux.
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def parse_broker_url(url: str) -> tuple[str, int]:
    host, port, _ = _parse(url)
    return host, port


def _parse(url: str) -> tuple[str, int, bool]:
    parsed = urlparse(url)
    if parsed.scheme not in SCHEMES or not parsed.hostname:
        raise ValueError(f"broker URL must be mqtt://host:port or mqtts://host:port, not {url!r}")
    if parsed.username or parsed.password:
        raise ValueError(
            "do not put credentials in the broker URL (they would land in the shell history); "
            "set mqtt.username / mqtt.password in the config file or VMF_MQTT__USERNAME / "
            "VMF_MQTT__PASSWORD in the environment"
        )
    tls = SCHEMES[parsed.scheme]
    return parsed.hostname, parsed.port or (8883 if tls else 1883), tls


@dataclass(frozen=True, slots=True)
class BrokerAccess:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None  # CA that signed the broker's certificate; None: system CAs
    cert_file: str | None = None  # client certificate, when the broker asks for one
    key_file: str | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> BrokerAccess:
        host, port, tls = _parse(url)
        return cls(
            host,
            port,
            tls or bool(ca_file),
            username or None,
            password or None,
            ca_file or None,
            cert_file or None,
            key_file or None,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `aiomqtt.Client` (hostname, port, credentials, TLS)."""
        return {
            "hostname": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "tls_context": self.ssl_context(),
            "socket_options": NO_DELAY,
        }


def broker_access(settings: Settings, url: str) -> BrokerAccess:
    """The broker at `url` with the account and TLS files of `settings.mqtt`. Here, not in
    feedback.app, so that the clinic logger and the viewers reach it without the station (and
    its numeric stack: numpy, scipy)."""
    m = settings.mqtt
    return BrokerAccess.from_url(
        url,
        username=m.username,
        password=m.password.get_secret_value(),
        ca_file=m.tls_ca,
        cert_file=m.tls_cert,
        key_file=m.tls_key,
    )


def describe(access: BrokerAccess) -> str:
    """The broker as shown to people: never the password."""
    scheme = "mqtts" if access.tls else "mqtt"
    user = f" as {access.username}" if access.username else ""
    return f"{scheme}://{access.host}:{access.port}{user}"
