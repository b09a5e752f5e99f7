"""Secrets in every shape a URL or a message can hold them: hidden, refused where ambiguous, scrubbed from any text."""

from __future__ import annotations

import logging

import pytest

from pisar.secrets import canonical_url, check_url, known_secrets, redact_url, scrub, scrub_record

S = "Sentinel7Pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://u:{S}@h:5432/db", "postgresql://u:***@h:5432/db"),
        (f"postgresql://u:{S}/x@h/db", "postgresql://u:***@h/db"),  # an unencoded / that parsers take for the path
        (f"postgresql://u:{S}@x@h/db", "postgresql://u:***@h/db"),  # an unencoded @
        (f"postgresql://h/db?password={S}&application_name=p", "postgresql://h/db?password=***&application_name=p"),
        (f"postgresql://h/db?sslpassword={S}", "postgresql://h/db?sslpassword=***"),
        (f"u:{S}@127.0.0.1", "u:***@127.0.0.1"),  # no scheme at all
        (f"redis://:{S}@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("sqlite:////tmp/a@b/pisar.db", "sqlite:////tmp/a@b/pisar.db"),  # an @ in a path is no password
    ],
)
def test_redact_url_hides_the_password_in_every_form(url: str, shown: str) -> None:
    assert redact_url(url) == shown and S not in redact_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"postgresql://u:{S}/x@h/db", "percent-encoded"),
        (f"postgresql://u:{S}@x@h/db", "percent-encoded"),
        (f"postgresql://u:{S}%zz@h/db", "percent-encoded"),
        (f"postgresql://u:{S}@h:port/db", "host or port"),
        (f"postgresql://u:{S}@[::1/db", "host or port"),
    ],
)
def test_an_ambiguous_url_is_refused_without_its_secret(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as refused:
        check_url(url)
    assert S not in str(refused.value)


def test_a_password_parameter_moves_into_the_user_part_where_every_library_hides_it() -> None:
    assert canonical_url(f"postgresql://h/db?password={S}%2F&sslmode=disable") == f"postgresql://:{S}%2F@h/db?sslmode=disable"
    assert canonical_url(f"postgresql://h/db?user=ops&password={S}") == f"postgresql://ops:{S}@h/db"
    assert check_url(f"postgresql://u:{S}%40x@h/db") == f"postgresql://u:{S}%40x@h/db"  # encoded: fine as it is


def test_scrub_removes_configured_secrets_from_any_text_and_log_records() -> None:
    environ = {"PISAR_DATABASE_URL": f"postgresql://u:{S}%2F@h/db", "PISAR_FLOWER_BASIC_AUTH": "ops:open sesame", "PATH": "/bin"}
    secrets = known_secrets(environ)
    assert set(secrets) >= {f"{S}%2F", f"{S}/", "open sesame"}
    text = f"failed: password '{S}/' rejected; ops:open sesame; see postgresql://u:{S}%2F@h/db"
    assert scrub(text, secrets) == "failed: password '***' rejected; ***; see postgresql://u:***@h/db"  # Flower's whole value is one
    try:
        raise RuntimeError(f"connect postgresql://x:{S}@h/db")
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "lost %s", (f"redis://:{S}@h",), exc_info=True)
        import sys

        record.exc_info = sys.exc_info()
    clean = scrub_record(record)
    assert S not in clean.getMessage() and S not in (clean.exc_text or "") and "RuntimeError" in clean.exc_text
