"""Flower behind HTTP basic auth by default, its ``/metrics`` included.

Flower guards its pages and API when ``basic_auth`` is set, but serves ``/metrics`` (task names,
arguments' counts, worker names) to anyone (flower #1305-era handlers carry no auth check). Pisar
turns basic auth on unless told ``--no-auth``, passes the credentials through the environment (never
the command line, which ``ps`` shows), and puts ``/metrics`` behind the same check. ``/healthcheck``
stays open: it says only "OK", and container healthchecks need it.
"""

from __future__ import annotations

import os

from pisar.errors import ConfigError

#: Flower's own ways to configure authentication; any of them set means auth is configured.
FLOWER_AUTH_VARIABLES = ("FLOWER_BASIC_AUTH", "FLOWER_AUTH")


def check_credentials(value: str) -> str:
    """``user:password[,user2:password2]`` as Flower reads it; a ``ConfigError`` (password hidden) if malformed."""
    entries = [entry for entry in value.split(",") if entry]
    for number, entry in enumerate(entries, start=1):
        user, sep, password = entry.partition(":")
        if not (sep and user.strip() and password):
            raise ConfigError(f"PISAR_FLOWER_BASIC_AUTH entry {number} is not user:password")
    if not entries:
        raise ConfigError("PISAR_FLOWER_BASIC_AUTH is empty: expected user:password")
    return ",".join(entries)


def configure_auth(credentials: str | None, no_auth: bool) -> str:
    """Set Flower's environment for this process; returns how Flower is guarded, for the operator."""
    if credentials:
        os.environ["FLOWER_BASIC_AUTH"] = check_credentials(credentials)
    elif not any(os.environ.get(name) for name in FLOWER_AUTH_VARIABLES):
        if not no_auth:
            raise ConfigError("Flower needs a password: set PISAR_FLOWER_BASIC_AUTH=user:password, or pass --no-auth explicitly")
        return "no authentication (--no-auth): anyone who reaches the port can see and control the workers"
    protect_metrics()
    return "basic auth" if os.environ.get("FLOWER_BASIC_AUTH") else "Flower's own auth settings"


def protect_metrics() -> None:
    """Give ``/metrics`` the same authentication check as every other Flower page (idempotent)."""
    from flower.views.monitor import Metrics
    from tornado import web

    if not getattr(Metrics.get, "_pisar_protected", False):
        guarded = web.authenticated(Metrics.get)
        guarded._pisar_protected = True  # type: ignore[attr-defined]
        Metrics.get = guarded
