"""Keep credentials out of every line this package prints, raises, reports or stores.

Exception texts are the usual leak: MLflow quotes the whole tracking URI (userinfo included) and an
API client may echo part of its key. Anything that turns an exception into text goes through
`first_line`, anything that quotes a URI through `redact_uri` or `scrub`.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
# Shorter fragments of a key are too common to be worth masking; longer ones identify it.
MIN_ECHO = 8
# Read at call time, so a secret supplied the way MLflow and Anthropic expect is masked too.
SECRET_ENV_VARS = ("ANTHROPIC_API_KEY", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY")
# Userinfo already masked as "***@" stays: it tells the reader where the credentials were.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?!\*\*\*@)[^/\s@'\"]+@")
_ANTHROPIC_KEY = re.compile(r"sk-ant-[A-Za-z0-9_\-.*]+")
# Query parameters that carry credentials (tokens, presigned-URL signatures).
_SECRET_PARAM = re.compile(r"(?i)([?&][\w.\-]*(?:token|password|passwd|secret|signature|credential|key)[\w.\-]*=)[^&\s'\"]+")


def redact_uri(uri: str) -> str:
    """Drop credentials (user:password@) and query strings, which may carry tokens."""
    parts = urlsplit(uri)
    if not (parts.username or parts.password or parts.query):
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host, query=""))


def uri_secrets(uri: str) -> list[str]:
    """The parts of a URI that are secret: the password (raw and decoded) and the query string."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:  # an unparsable port: treat the whole thing as opaque
        return []
    found = [s for s in (password, unquote(password or ""), parts.query) if s]
    return list(dict.fromkeys(found))


def scrub(text: str, *secrets: str | None) -> str:
    """`text` without the given secrets, any URL userinfo, `sk-ant-` keys or env-supplied secrets.

    A secret that looks like a URI (`scheme://...`) contributes its password and query string;
    any other secret is masked whole and in every echoed fragment of at least MIN_ECHO characters.
    """
    from_env = [os.environ.get(name) or "" for name in SECRET_ENV_VARS]
    plain: list[str] = []
    # An env secret shorter than MIN_ECHO is left alone: masking every "testing" would garble text.
    for secret in [*secrets, *(s for s in from_env if len(s) >= MIN_ECHO)]:
        if not secret:
            continue
        if "://" in secret:
            text = text.replace(secret, redact_uri(secret))
            plain += uri_secrets(secret)
        else:
            plain.append(secret)
    text = _SECRET_PARAM.sub(r"\g<1>" + MASK, _USERINFO.sub(r"\g<scheme>", text))
    for secret in sorted(set(plain), key=len, reverse=True):
        text = text.replace(secret, MASK)
    for secret in plain:
        text = _mask_fragments(text, secret)
    return _ANTHROPIC_KEY.sub("sk-ant-" + MASK, text)


def first_line(exc: BaseException, *secrets: str | None, limit: int = 300) -> str:
    """The first non-blank line of an exception's message, scrubbed; its type name if it has none."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return scrub(lines[0] if lines else type(exc).__name__, *secrets)[:limit]


@contextlib.contextmanager
def scrubbed_stdout(*secrets: str | None) -> Iterator[None]:
    """Scrub what a library prints on stdout meanwhile (MLflow's "View run ... at: URL" line)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        text = captured.getvalue()
        if text:
            sys.stdout.write(scrub(text, *secrets))


def _mask_fragments(text: str, secret: str) -> str:
    """Mask every run of text covered by some MIN_ECHO-long piece of `secret` (a partial echo)."""
    if len(secret) < MIN_ECHO or len(text) < MIN_ECHO:
        return text
    pieces = {secret[i:i + MIN_ECHO] for i in range(len(secret) - MIN_ECHO + 1)}
    covered = [False] * len(text)
    for i in range(len(text) - MIN_ECHO + 1):
        if text[i:i + MIN_ECHO] in pieces:
            covered[i:i + MIN_ECHO] = [True] * MIN_ECHO
    if not any(covered):
        return text
    out, i = [], 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append(MASK)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
