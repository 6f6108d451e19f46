"""Serve the browser views for a clinic.

    python -m feedback.web --clinic C [--broker mqtts://broker:8883 | --ws-url wss://broker:8884/mqtt]
                           [--host 0.0.0.0] [--port 8443] [--cert server.crt --key server.key]
                           [--config FILE.toml]

With --broker the server relays MQTT over WebSockets on /mqtt to that broker (for a Mosquitto
without a websockets listener, such as Debian 12's); with --ws-url the pages connect to the
broker's own websockets listener (deploy/mosquitto/conf.d/websockets.conf). The pages ask for
the browser's account; the broker's ACL decides what each account sees (docs/web.md).
--config supplies the CA of the broker's certificate ([mqtt] tls_ca) for the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ssl
import sys

from feedback.web.server import RELAY_PATH, WebServer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m feedback.web", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--clinic", required=True, help="clinic id of the topics")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--broker", metavar="URL", help="relay to this broker (mqtt:// or mqtts://)")
    where.add_argument("--ws-url", metavar="URL", help="the broker's own websockets listener")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    p.add_argument("--cert", help="TLS certificate of this server (serve https and wss)")
    p.add_argument("--key", help="its private key")
    p.add_argument("--config", metavar="FILE.toml", help="settings ([mqtt] tls_ca)")
    return p


async def serve(args: argparse.Namespace) -> None:
    from config.loader import load_settings
    from feedback.outputs.broker_access import broker_access

    config: dict[str, object] = {"clinic": args.clinic, "login": True}
    relay = None
    if args.broker:
        settings = load_settings(args.config)
        # the relay carries the browser's own sign-in, never the station's account
        relay = dataclasses.replace(broker_access(settings, args.broker), username=None,
                                    password=None, cert_file=None, key_file=None)  # fmt: skip
        config["broker"] = RELAY_PATH
    else:
        config["broker"] = args.ws_url
    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    async with WebServer(host=args.host, port=args.port, config=config, relay_to=relay,
                         tls=tls) as web:  # fmt: skip
        print(f"patient view:   {web.url}/patient.html?station=STATION\n"
              f"therapist view: {web.url}/therapist.html", file=sys.stderr)  # fmt: skip
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as exc:
        print(f"feedback.web: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
