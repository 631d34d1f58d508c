"""Signing of pickled state with this user's secret key, so that only state this user wrote is
ever unpickled (the Avalanche strategies' checkpoints: see :mod:`strategies.avalanche`).

Example:
    >>> mac = sign(b"state")
    >>> verify(b"state", mac)  # no error: signed here
    >>> verify(b"other", mac)
    Traceback (most recent call last):
    ...
    ValueError: the Avalanche state in this checkpoint is not signed with this user's key (written by another user or machine, or crafted), so it is not unpickled
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets


def signing_key() -> bytes:
    """This user's secret key for signing pickled state, created (mode 0600) on first use in
    ``$LIFELONG_KEY_DIR``, else ``$XDG_STATE_HOME/lifelong``, else ``~/.local/state/lifelong``."""
    folder = os.environ.get("LIFELONG_KEY_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state"), "lifelong")
    path = os.path.join(folder, "checkpoint.key")
    try:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) == 32:
            return key
    except FileNotFoundError:
        pass
    os.makedirs(folder, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    with open(path, "rb") as f:  # re-read: another process may have written the key first
        return f.read()


def sign(blob: bytes) -> str:
    """HMAC-SHA256 of ``blob`` with :func:`signing_key`."""
    return hmac.new(signing_key(), blob, hashlib.sha256).hexdigest()


def verify(blob: bytes, mac: str | None) -> None:
    """Raise ``ValueError`` unless ``mac`` is this user's signature of ``blob``.

    Avalanche's state (replay buffers as Avalanche datasets, previous models) can only be
    stored as a pickle, and unpickling runs code named in the data: so it is unpickled only
    when this user's key signed it, which a file crafted elsewhere cannot be. The price: such a
    checkpoint resumes only where it was written (same user, same key).
    """
    if not isinstance(mac, str) or not hmac.compare_digest(mac, sign(blob)):
        raise ValueError("the Avalanche state in this checkpoint is not signed with this user's key "
                         "(written by another user or machine, or crafted), so it is not unpickled")
