"""Who may use the server: loopback binding by default, an access token for any other address, and one driving
page at a time (:class:`OneDriver`: later pages watch).

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
from wslink.websocket import LinkProtocol

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


def names_loopback(host: str) -> bool:
    """A Host header naming this machine's loopback literally: no name lookup, which a rebinding domain controls."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def cookie_name(port: int | None) -> str:
    """One cookie per port: browsers send cookies to every port of a host, so two servers must not share one."""
    return f"{TOKEN_COOKIE}_{port or 0}"


def same_origin(request: web.Request) -> bool:
    """False for a request another site's page made (its Origin is not this server): a page on any website
    could otherwise open this server's websocket from the user's browser, even on 127.0.0.1."""
    origin = request.headers.get("Origin")
    return origin is None or origin in (f"http://{request.host}", f"https://{request.host}")


def access_middleware(token: str | None):
    """An aiohttp middleware for every request (pages, files, the websocket).

    Always: refuses requests from another site's page (Origin) and, without a token, any Host header but a
    loopback one (DNS rebinding: a foreign name that resolves to 127.0.0.1). With ``token``: refuses (403)
    whatever does not present it, in the address once (traded for a cookie) or in the cookie.
    """

    def presented(value: str | None) -> bool:
        return value is not None and token is not None and hmac.compare_digest(value.encode(), token.encode())

    @web.middleware
    async def check_access(request: web.Request, handler):
        if not same_origin(request):
            return web.Response(status=403, text="SwinSSL Web: requests from other sites are refused.")
        if token is None:
            if not names_loopback(request.url.host or ""):
                return web.Response(status=403, text="SwinSSL Web: this server answers on 127.0.0.1 only.")
            return await handler(request)
        name = cookie_name(request.url.port)
        if presented(request.query.get("token")):
            query = {key: value for key, value in request.query.items() if key != "token"}
            response = web.HTTPFound(request.rel_url.with_query(query))
            response.set_cookie(name, token, httponly=True, samesite="Strict")
            return response
        if presented(request.cookies.get(name)):
            return await handler(request)
        return web.Response(status=403, text=REFUSAL)

    return check_access


class OneDriver(LinkProtocol):
    """The server holds one case and one engine, so one page drives it at a time: the first page that says hello
    (:meth:`hello`, with a token the page made for itself) drives; pages that connect later watch only (the page
    makes its controls and views inert and says why, from ``state.web_driver``, the driving page's token); when the
    driving page closes, the page that said hello next takes over. Pages are told apart by their websocket
    (wslink's client id of the call being served); a call from a watching page is refused by :meth:`drives`.

    Register it with the trame server's protocol (``server.add_protocol_to_configure``) and give it the wslink web
    app (``on_server_bind``) so it can tell which page a call came from."""

    def __init__(self, state) -> None:
        super().__init__()
        self.state = state
        self.web_app = None
        self.tabs: dict[str, str] = {}  # the websockets that said hello, in order: client id -> the page's token
        self.driver: str | None = None
        state.web_driver = ""

    def caller(self) -> str | None:
        return self.web_app.last_active_client_id if self.web_app is not None else None

    def hello(self, token: str) -> None:
        """A page (re)connected and made itself ``token``; it drives when no other page does."""
        client = self.caller()
        if client is None or not isinstance(token, str):
            return
        self.tabs[client] = token[:64]
        if self.driver is None or self.driver == client:
            self.hand_over(client)

    def drives(self) -> bool:
        """Whether the call being served comes from the driving page (or no page drives yet, or no page made it)."""
        client = self.caller()
        return self.driver is None or client is None or client == self.driver

    def onClose(self, client_id) -> None:  # noqa: N802 (wslink's name)
        self.tabs.pop(client_id, None)
        if client_id == self.driver:
            self.hand_over(next(iter(self.tabs), None))

    def hand_over(self, client: str | None) -> None:
        self.driver = client
        with self.state:
            self.state.web_driver = self.tabs.get(client, "") if client is not None else ""
