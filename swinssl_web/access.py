"""Who may use the server: loopback binding by default, and an access token for any other address.

The token comes once in the address (``/?token=...``); the server answers with an HttpOnly, SameSite=Strict
cookie and a redirect to the same page without the token, so the browser's later requests (scripts, the
websocket) present the cookie and the token does not linger in the address bar or history.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket

from aiohttp import web

TOKEN_COOKIE = "swinssl_token"
REFUSAL = "SwinSSL Web: this server needs its access token. Open the address it printed at start (it ends in ?token=...)."


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to them (``localhost``)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except socket.gaierror:
            return False
        return bool(addresses) and all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_middleware(token: str):
    """An aiohttp middleware that refuses (403) every request, page, file or websocket, without ``token``."""

    def presented(value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), token.encode())

    @web.middleware
    async def require_token(request: web.Request, handler):
        if presented(request.query.get("token")):
            query = {key: value for key, value in request.query.items() if key != "token"}
            response = web.HTTPFound(request.rel_url.with_query(query))
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
            return response
        if presented(request.cookies.get(TOKEN_COOKIE)):
            return await handler(request)
        return web.Response(status=403, text=REFUSAL)

    return require_token
