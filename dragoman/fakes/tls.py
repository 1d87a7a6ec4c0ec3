"""A self-signed certificate for the fake's TLS port (127.0.0.1 and localhost).

The Gemini SDK only speaks ``wss://`` to the Live API, so its fake must serve TLS; a test
points the SDK (``SSL_CERT_FILE``) and the browser at this certificate. It is made by
``serve --https``'s own ``dragoman.http.tls.self_signed``.
"""

from __future__ import annotations

from pathlib import Path

from dragoman.http.tls import self_signed as make


def self_signed(folder: Path) -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` in ``folder``, made once (a restarted fake keeps the
    certificate its clients already trust)."""
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    if not (cert_path.exists() and key_path.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        made = make(["localhost", "127.0.0.1"], folder)
        cert_path, key_path = made.cert, made.key
    return cert_path, key_path
