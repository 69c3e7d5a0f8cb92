"""`lifecycle serve`: the app on uvicorn, with the same store settings as the CLI."""

from __future__ import annotations

import sys

import click

from lifecycle.domain.errors import ConfigurationError
from lifecycle.support.logs import get_logger
from lifecycle.store.settings import load_settings

log = get_logger("lifecycle.web")


def run(host: str, port: int, tls_cert: str | None = None, tls_key: str | None = None) -> None:
    import uvicorn

    from lifecycle.web.app import create_app
    from lifecycle.web.desk import Desk

    if (tls_cert is None) != (tls_key is None):
        click.echo("lifecycle: serve: --tls-cert and --tls-key go together", err=True)
        sys.exit(2)
    refused = _cannot_listen(host, port)
    if refused is not None:
        click.echo(f"lifecycle: serve: cannot listen on {host}:{port}: {refused}", err=True)
        sys.exit(2)
    try:
        desk = Desk(load_settings())
    except ConfigurationError as error:
        click.echo(f"lifecycle: configuration error: {error}", err=True)
        sys.exit(2)
    app = create_app(desk)
    scheme = "https" if tls_cert else "http"
    log.info("serve.started", url=f"{scheme}://{host}:{port}")
    try:
        # uvicorn's own access log prints raw paths and queries: ours logs route templates.
        uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning",
                    ssl_certfile=tls_cert, ssl_keyfile=tls_key, server_header=False)
    finally:
        desk.close()


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the address cannot be listened on (in use, not this machine's), or None."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as error:
        return error.strerror or type(error).__name__
    return None
