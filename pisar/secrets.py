"""Keeping passwords, tokens and secret keys out of everything a person or a log reads.

Two layers. ``redact_url`` hides the credentials a URL carries in any form it can take: a
password in the user part (also one holding an unencoded ``/``, ``@`` or ``:``, which the
standard parsers misread as host or path), secret query parameters (``?password=``, ``sslpassword``,
``token``, ``secret``, ``key``) and a URL without a scheme (``u:S@host``). ``scrub`` then removes,
from any text at all (an error, a log line, a traceback), every secret this process was configured
with, whatever shape the text put it in: the net under the messages no rule foresaw.
``scrub_logging`` applies it to every log record the process makes.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from functools import lru_cache
from urllib.parse import parse_qsl, quote, unquote, urlencode

MASK = "***"
#: Query parameters whose value is a credential (libpq's password/sslpassword, tokens, keys).
SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|auth|credential|signature", re.IGNORECASE)
#: Settings whose whole value, or the credentials in it, are secrets.
SECRET_SETTINGS = (
    "PISAR_DATABASE_URL",
    "PISAR_REDIS_URL",
    "PISAR_FLOWER_BASIC_AUTH",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
MIN_SECRET_LENGTH = 3  # shorter values would mask ordinary words; they are no secret worth the name anyway


def split_userinfo(url: str) -> tuple[str, str, str | None, str]:
    """``(head, user, password, tail)`` of a URL as a person meant it; ``password`` is ``None`` when there is none.

    The user part ends at the *last* ``@`` before the query (``?``) or fragment (``#``), so a
    password holding an unencoded ``/``, ``@`` or ``:``, which a strict parser cuts short, is still
    found whole.
    """
    scheme, sep, rest = url.partition("://")
    head, rest = (scheme + sep, rest) if sep else ("", url)
    query_at = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, query_at)
    if at < 0:
        return head, "", None, rest
    userinfo, tail = rest[:at], rest[at:]
    user, colon, password = userinfo.partition(":")
    return head, user, password if colon else None, tail


def redact_url(url: str) -> str:
    """``url`` with its password and secret query values replaced by ``***``: for anything shown or logged."""
    head, user, password, tail = split_userinfo(url)
    if password is not None:
        url = f"{head}{user}:{MASK}{tail}"
    base, question, query = url.partition("?")
    if not question:
        return url
    query, hash_, fragment = query.partition("#")
    pairs = [(k, MASK if SECRET_PARAM.search(k) else v) for k, v in parse_qsl(query, keep_blank_values=True)]
    return base + "?" + urlencode(pairs, safe="*/:") + hash_ + fragment


def credentials_in(value: str) -> list[str]:
    """The secrets a setting's value holds: a URL's password (as written and decoded) and secret query values,
    or for a value that is no URL (a secret key, ``user:password`` pairs) the value and its passwords."""
    found: list[str] = []
    if "://" in value or "@" in value:
        _, _, password, _ = split_userinfo(value)
        if password:
            found += [password, unquote(password)]
        _, _, query = value.partition("?")
        found += [v for k, v in parse_qsl(query.partition("#")[0], keep_blank_values=True) if SECRET_PARAM.search(k)]
    else:
        found.append(value)
        found += [pair.partition(":")[2] for pair in value.split(",") if ":" in pair]  # Flower's user:password[,user:password]
    return [s for s in found if len(s) >= MIN_SECRET_LENGTH]


def check_url(url: str) -> str:
    """``url`` in canonical form (``canonical_url``); ``ValueError`` naming the problem, never the URL's secrets.

    A password holding an unencoded ``/``, ``@``, ``:``, ``?`` or ``#`` is refused: each library
    would read a different host, port or path out of it (and show the password in its errors).
    """
    from urllib.parse import urlsplit

    head, _, password, _ = split_userinfo(url)
    if password is not None and (set(password) & set("/@:?#") or re.search(r"%(?![0-9A-Fa-f]{2})", password)):
        raise ValueError(
            "its password holds a character that must be percent-encoded in a URL "
            "('/' as %2F, '@' as %40, ':' as %3A, '?' as %3F, '#' as %23, '%' as %25)"
        )
    try:
        parsed = urlsplit(url)
        parsed.port  # noqa: B018 - raises on a port that is no number
    except ValueError:
        raise ValueError("is not a valid URL (its host or port cannot be read)") from None
    if not head:
        raise ValueError("is not a URL (no scheme://)")
    return canonical_url(url)


def canonical_url(url: str) -> str:
    """The same URL with a ``password`` query parameter moved into the user part, percent-encoded there,
    so that every library's own sanitiser (SQLAlchemy's, kombu's, redis-py's) sees and hides it."""
    base, question, rest = url.partition("?")
    if not question:
        return url
    query, hash_, fragment = rest.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    passwords = [v for k, v in pairs if k == "password"]
    if not passwords:
        return url
    head, user, password, tail = split_userinfo(base)
    if password is None:
        named = [v for k, v in pairs if k in ("user", "username")]
        user = user or (quote(named[-1], safe="") if named else "")
        base = f"{head}{user}:{quote(passwords[-1], safe='')}@{tail.removeprefix('@')}"
    kept = [(k, v) for k, v in pairs if k not in ("password", "user", "username")]
    return base + (("?" + urlencode(kept)) if kept else "") + hash_ + fragment


def known_secrets(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """Every secret this process was configured with (environment and ``.env``, read once), longest first."""
    return _known_secrets(tuple(sorted((environ if environ is not None else _configured()).items())))


@lru_cache(maxsize=8)
def _known_secrets(items: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    found = {s for name, value in items if name in SECRET_SETTINGS and value for s in credentials_in(value)}
    return tuple(sorted(found, key=len, reverse=True))


@lru_cache(maxsize=1)
def _configured() -> dict[str, str]:
    """The secret settings from the environment, and from ``.env`` where the environment lacks them
    (read once per process: every log record is scrubbed with them)."""
    values = {name: os.environ[name] for name in SECRET_SETTINGS if os.environ.get(name)}
    if os.path.isfile(".env"):
        try:
            from dotenv import dotenv_values

            for name, value in dotenv_values(".env").items():
                if name in SECRET_SETTINGS and value and name not in values:
                    values[name] = value
        except Exception:  # a .env python-dotenv cannot read: pydantic-settings reports it; nothing to scrub from it
            pass
    return values


def scrub(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """``text`` with every URL's credentials hidden and every configured secret replaced by ``***``."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    for secret in known_secrets() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    """The record with its message and traceback scrubbed (``scrub``), rendered once here."""
    message = record.getMessage()
    clean = scrub(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info:
        record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        record.exc_info = None  # the scrubbed text stands in for it
    return record


def scrub_logging() -> None:
    """From now on every log record this process (and its forked children) makes is scrubbed as it is made.

    A record factory rather than a handler filter: Celery, Flower (tornado) and the libraries under
    them install handlers of their own, at times Pisar does not choose; every record passes here.
    """
    make = logging.getLogRecordFactory()
    if getattr(make, "scrubs", False):
        return

    def scrubbed(*args: object, **kwargs: object) -> logging.LogRecord:
        return scrub_record(make(*args, **kwargs))

    scrubbed.scrubs = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(scrubbed)
