"""`run_feedback.py --web`: the station as usual, plus the browser views on this machine.

With the embedded broker the pages connect to its own websockets listener; with `--broker URL`
the page server relays MQTT over WebSockets to that broker (feedback.web.server). Either way the
pages get exactly the messages every other subscriber gets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import webbrowser
from typing import Any

from config.settings import Settings
from feedback import app
from feedback.broker import EmbeddedBroker
from feedback.outputs.broker_access import BrokerAccess, broker_access
from feedback.web.server import RELAY_PATH, WebServer


def page_urls(base: str, clinic: str, station: str) -> tuple[str, str]:
    return (f"{base}/patient.html?clinic={clinic}&station={station}",
            f"{base}/therapist.html?clinic={clinic}&station={station}")  # fmt: skip


def page_relay(settings: Settings, broker_url: str) -> BrokerAccess:
    """The pages' way to the broker: its address and CA, but none of the station's identity.

    The page signs in with its own account; lending it the station's password or client
    certificate would let any browser on the network write as the station.
    """
    access = broker_access(settings, broker_url)
    return dataclasses.replace(access, username=None, password=None, cert_file=None, key_file=None)


async def run_with_web(settings: Settings, options: app.RunOptions) -> dict[str, Any]:
    clinic, station = settings.session.clinic, settings.session.station
    async with contextlib.AsyncExitStack() as stack:
        config: dict[str, Any] = {"clinic": clinic, "station": station}
        relay = None
        if options.broker == "embedded":
            broker = await stack.enter_async_context(EmbeddedBroker(websockets=True))
            options = dataclasses.replace(options, broker=broker.url)
            # the station tries MQTT 5 first with a broker URL; amqtt (3.1.1) refuses it with a
            # warning per attempt, then the station falls back: not worth a line on the screen
            logging.getLogger("amqtt.broker").setLevel(logging.ERROR)
            config["broker"] = broker.ws_url
        else:
            relay = page_relay(settings, options.broker)
            config["broker"], config["login"] = RELAY_PATH, True
        web = await stack.enter_async_context(WebServer(config=config, relay_to=relay))
        patient, therapist = page_urls(web.url, clinic, station)
        print(f"patient view:   {patient}\ntherapist view: {therapist}", file=sys.stderr)
        if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
            # only with a desktop: without one, webbrowser would start a text browser in this
            # terminal and take it over
            webbrowser.open(patient)
        return await app.run(settings, options)
    raise AssertionError("unreachable")  # for mypy: the async with always returns
