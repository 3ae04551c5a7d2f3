"""The replay HTTP server: the TK OData API offline, for both profiles, with faults on demand.

    with ReplayServer(Dataset.generate(1000, seed=1), faults=FaultConfig.mixed(0.2)) as server:
        root = server.url                   # http://127.0.0.1:<port>
        v4 = server.service_root("v4/2.0")  # …/OData/v4/2.0
        server.set_faults(FaultConfig())    # change faults at run time
        server.dataset.mutate(seed=2)       # change the data between loads

The SyncFeed of the same data is under ``/SyncFeed/2.0`` (``Feed``, ``Entiteiten/<id>``,
``Resources/<id>``; :mod:`include.tk_replay.syncfeed_server`), with the same faults.

Admin endpoints (not part of the TK API): ``GET /_faults`` (config and counts), ``POST /_faults`` (a JSON
:class:`FaultConfig`; ``{}`` clears), ``GET /_stats``, ``POST /_mutate`` (``{"seed": 1, "fraction": 0.05}``).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from include.loaders.api_profiles import PROFILES, ApiProfile
from include.tk_replay import syncfeed_server
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig, FaultInjector
from include.tk_replay.odata import ODataError, View, parse_query

log = logging.getLogger(__name__)

_JSON = (
    "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
)
_SERVER_ERROR = "An error has occurred."
_KEY_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\((.*)\))?(/\$count)?$")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _without_id(rendered: bytes) -> bytes:
    """A rendered row without its ``Id`` (the ``without_id`` fault)."""
    row = json.loads(rendered)
    row.pop("Id", None)
    return _dumps(row)


def _error_body(message: str) -> bytes:
    return _dumps({"error": {"code": "", "message": message}})


def profile_metadata(
    xml: str,
    profile: ApiProfile,
    renames: Mapping[str, Mapping[str, str]],
    drops: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """The canonical ``$metadata`` without ``drops`` (type -> canonical names), with ``renames`` (type ->
    canonical -> served) and the profile's additions."""
    types = set(re.findall(r'<EntityType Name="([^"]+)"', xml))
    drops = drops or {}

    def patch(match: re.Match[str]) -> str:
        name, body = match.group(1), match.group(2)
        for canonical in drops.get(name, ()):
            body = re.sub(rf'<Property Name="{re.escape(canonical)}" [^>]*?/>\s*', "", body)
        for canonical, served in renames.get(name, {}).items():
            body = body.replace(f'<Property Name="{canonical}" ', f'<Property Name="{served}" ')
        extra = "".join(
            f'<Property Name="{p}" Type="{t}" />' for p, t in profile.added_properties.get(name, {}).items()
        )
        if extra:
            body = body.replace("<NavigationProperty ", extra + "<NavigationProperty ", 1)
        return f'<EntityType Name="{name}">{body}</EntityType>'

    if not any(renames.get(t) or drops.get(t) for t in types) and not profile.added_properties:
        return xml
    return re.sub(r'<EntityType Name="([^"]+)">(.*?)</EntityType>', patch, xml, flags=re.S)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    _truncate_pending = False

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # -- plumbing ------------------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = _JSON,
        headers: Mapping[str, str] | None = None,
        declared_length: int | None = None,
    ) -> None:
        reason = HTTPStatus(status).phrase
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body) if declared_length is None else declared_length}",
            "OData-Version: 4.0",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.close_connection:
            lines.append("Connection: close")
        self.server.replay._count(f"http_{status}")  # before the write: a client may look at once
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, _error_body(message), headers=headers)

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def do_GET(self) -> None:
        try:
            self._get()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # a bug in the replay server: answer like the real API, log the traceback
            log.exception("replay server failed on %s", self.path)
            self._error(500, _SERVER_ERROR)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        replay = self.server.replay
        try:
            body = json.loads(raw or b"{}")
            if self.path == "/_faults":
                replay.set_faults(FaultConfig.from_dict(body))
                self._send(200, _dumps(replay.fault_status()))
            elif self.path == "/_mutate":
                report = replay.dataset.mutate(
                    int(body.get("seed", 0)), fraction=float(body.get("fraction", 0.05))
                )
                self._send(200, _dumps(report.to_json()))
            else:
                self._error(404, f"No admin resource at '{self.path}'.")
        except (ValueError, TypeError) as e:
            self._error(400, f"Bad admin request to {self.path}: {e}")

    # -- routing -------------------------------------------------------------------------------------
    def _get(self) -> None:
        replay = self.server.replay
        if replay.basic_auth is not None and not self._authorized(replay.basic_auth):
            return self._error(401, "Authorization has been denied for this request.")
        split = urlsplit(self.path)
        path = unquote(split.path)
        if path == "/_faults":
            return self._send(200, _dumps(replay.fault_status()))
        if path == "/_stats":
            return self._send(200, _dumps(replay.stats()))
        if path == syncfeed_server.PATH or path.startswith(syncfeed_server.PATH + "/"):
            return self._syncfeed(replay, path[len(syncfeed_server.PATH) :].strip("/"), split.query)
        for profile in replay.profiles.values():
            if path == profile.path or path.startswith(profile.path + "/"):
                break
        else:
            return self._error(
                404, f"No HTTP resource was found that matches the request URI '{self._url()}'."
            )
        rest = path[len(profile.path) :].strip("/")
        view = replay.views[profile.name]
        root = f"http://{self.headers.get('Host') or replay.host_port}{profile.path}"
        data_request = rest not in ("", "$metadata")
        if data_request or replay.faults.config.include_metadata:
            if self._inject(replay, data_request=data_request, rest=rest):
                return
        try:
            if rest == "$metadata":
                return self._send(200, replay.metadata(profile.name).encode("utf-8"), "application/xml")
            if rest == "":
                sets = [{"name": s, "kind": "EntitySet", "url": s} for s in view.dataset.schema.entity_sets]
                return self._send(200, _dumps({"@odata.context": f"{root}/$metadata", "value": sets}))
            m = _KEY_RE.match(rest)
            if not m or m.group(1) not in view.dataset.schema.entity_sets:
                return self._error(
                    404, f"No HTTP resource was found that matches the request URI '{self._url()}'."
                )
            entity_set, key, count_path = m.groups()
            params = parse_qsl(split.query, keep_blank_values=True)
            q = parse_query(params, profile)
            if key is not None:
                return self._single(view, root, entity_set, key, q, count_path)
            if count_path:
                with view.dataset.lock:
                    n = view.count(entity_set, q)
                return self._send(200, str(n).encode(), "text/plain; charset=utf-8")
            return self._collection(view, profile, root, entity_set, q, split.query)
        except ODataError as e:
            return self._error(e.status, e.message)

    def _syncfeed(self, replay: ReplayServer, rest: str, query: str) -> None:
        """A SyncFeed request (:mod:`include.tk_replay.syncfeed_server`), with the same faults as OData."""
        if self._inject(replay, data_request=True, rest=rest):
            return
        root = f"http://{self.headers.get('Host') or replay.host_port}{syncfeed_server.PATH}"
        out = syncfeed_server.answer(replay.dataset, root, rest, query, replay.faults)
        if out.status != 200:
            return self._send(out.status, out.body, out.content_type)
        replay._count("feed_pages")
        self._send_body(out.body, out.content_type)

    def _authorized(self, expected: tuple[str, str]) -> bool:
        """Whether the request carries HTTP basic credentials equal to ``expected`` (user, password)."""
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
        except ValueError:
            return False
        return (user, password) == expected

    def _url(self) -> str:
        return f"http://{self.headers.get('Host') or self.server.replay.host_port}{self.path}"

    def _inject(self, replay: ReplayServer, data_request: bool, rest: str) -> bool:
        """Apply latency and a random fault; True when the request has been dealt with."""
        cfg = replay.faults.config
        if cfg.latency:
            replay.stop_event.wait(cfg.latency)
        kind = replay.faults.draw()
        if kind is None:
            return False
        log.debug("replay fault %s on %s", kind, self.path)
        if kind == "error":
            self._error(500, _SERVER_ERROR)
        elif kind == "throttle":
            self._error(429, "Too many requests.", headers={"Retry-After": str(int(cfg.retry_after))})
        elif kind == "hang":
            replay.stop_event.wait(cfg.hang_seconds)
            self.close_connection = True
        elif kind == "reset":
            self._reset()
        elif kind == "truncate":
            self._truncate_pending = True  # the body is cut when it is sent (see _send_body)
            return False
        return True

    def _single(
        self, view: View, root: str, entity_set: str, key: str, q: Any, count_path: str | None
    ) -> None:
        if count_path:
            raise ODataError(400, "The query specified in the URI is not valid. $count is not a collection.")
        k = key.strip()
        if k.startswith("Id="):
            k = k[3:]
        if not _GUID_RE.match(k):
            raise ODataError(
                400,
                f"The query specified in the URI is not valid. Bad Request - Error in query "
                f"syntax: the key '{key}' is not a valid Edm.Guid (write it unquoted, without guid'…').",
            )
        info = view.dataset.schema.entity_sets[entity_set]
        with view.dataset.lock:
            row = view.dataset.rows[entity_set].get(k.lower())
            if row is None:
                raise ODataError(
                    404, f"No entity of type '{view.namespace}.{info.name}' with key '{k}' exists."
                )
            body = {"@odata.context": f"{root}/$metadata#{entity_set}/$entity", **view.renderer(info, q)(row)}
        self._send_body(_dumps(body))

    def _collection(
        self, view: View, profile: ApiProfile, root: str, entity_set: str, q: Any, raw_query: str
    ) -> None:
        replay = self.server.replay
        info = view.dataset.schema.entity_sets[entity_set]
        with view.dataset.lock:
            render = view.encoder(info, q)
            page = view.query(entity_set, q, profile.page_size)
            cfg = replay.faults.config
            if cfg.max_skip is not None and (q.skip or 0) > cfg.max_skip:
                replay.faults.count("deep_skip")
                return self._error(500, _SERVER_ERROR)
            if cfg.fail_after_entity == entity_set and page.offset() + len(page.rows) > cfg.fail_after_items:
                replay.faults.count("fail_after")
                return self._error(500, _SERVER_ERROR)
            if cfg.without_id:
                value = b",".join(
                    [_without_id(render(r)) if r["Id"] in cfg.without_id else render(r) for r in page.rows]
                )
            else:
                value = b",".join([render(r) for r in page.rows])
        parts = [b'{"@odata.context":', _dumps(f"{root}/$metadata#{entity_set}")]
        if page.count is not None:
            parts.append(b',"@odata.count":%d' % page.count)
        parts += [b',"value":[', value, b"]"]
        if page.next_id:
            kept = [
                p
                for p in raw_query.split("&")
                if p and unquote(p.split("=", 1)[0]) not in ("$skiptoken", "$skip")
            ]
            kept.append(f"$skiptoken=Id-{page.next_id}")
            parts += [b',"@odata.nextLink":', _dumps(f"{root}/{entity_set}?" + "&".join(kept))]
        parts.append(b"}")
        replay._count("pages")  # before the write: a client may look at once
        self._send_body(b"".join(parts))

    def _send_body(self, body: bytes, content_type: str = _JSON) -> None:
        """Send a 200 body (JSON unless told), cut in half when this request drew the truncate fault."""
        replay = self.server.replay
        if self._truncate_pending:
            half = body[: len(body) // 2]
            if replay.faults.truncate_mode() == "close":
                self.close_connection = True
                self._send(200, half, content_type, declared_length=len(body))
            else:
                self._send(200, half, content_type)
            return
        self._send(200, body, content_type)

    def handle_one_request(self) -> None:
        self._truncate_pending = False
        super().handle_one_request()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    replay: ReplayServer

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class ReplayServer:
    """An offline TK OData API over a :class:`Dataset`, serving every profile of ``PROFILES``.

    Args:
        dataset: what to serve; the real samples when None.
        host, port: where to listen; port 0 picks a free port (see :attr:`url` after :meth:`start`).
        faults: the initial :class:`FaultConfig` (none by default).
        drift: extra property renames applied to every profile, type -> canonical -> served name, in
            ``$metadata`` and data alike: a model of an API that renamed something (metadata-check tests).
        drops: properties removed from every profile, type -> canonical names: absent from ``$metadata``
            and from the data, and unknown to ``$select``, ``$filter`` and ``$orderby`` (HTTP 400, as for
            any unknown name): a model of an API that dropped attributes (served-model tests).
        basic_auth: (user, password) every GET must carry as HTTP basic auth, else HTTP 401 (None: no
            login). ``@odata.nextLink`` is built from the ``Host`` header, without credentials, as a real
            server does.
    """

    def __init__(
        self,
        dataset: Dataset | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultConfig | None = None,
        drift: Mapping[str, Mapping[str, str]] | None = None,
        drops: Mapping[str, Iterable[str]] | None = None,
        basic_auth: tuple[str, str] | None = None,
    ):
        self.dataset = dataset if dataset is not None else Dataset.samples()
        self.host = host
        self.port = port
        self.profiles: dict[str, ApiProfile] = dict(PROFILES)
        drift_d = {k: dict(v) for k, v in (drift or {}).items()}
        drops_d = {k: frozenset(v) for k, v in (drops or {}).items()}
        self.views = {name: View(self.dataset, p, drift_d, drops_d) for name, p in self.profiles.items()}
        self._metadata = {
            name: profile_metadata(
                self.dataset.metadata_xml,
                p,
                {t: self.views[name].renames(t) for t in self._type_names()},
                drops_d,
            )
            for name, p in self.profiles.items()
        }
        self.faults = FaultInjector(faults)
        self.basic_auth = basic_auth
        self.stop_event = threading.Event()
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _type_names(self) -> list[str]:
        return sorted({i.name for i in self.dataset.schema.entity_sets.values()})

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> str:
        """Listen and serve in a background thread; returns :attr:`url`."""
        if self._httpd is not None:
            return self.url
        self.stop_event.clear()
        self._httpd = _HTTPServer((self.host, self.port), _Handler)
        self._httpd.replay = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"tk-replay-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("TK replay server on %s serving %s", self.url, self.dataset.summary())
        return self.url

    @property
    def serving(self) -> bool:
        """Whether the server thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def serve_forever(self) -> None:
        """Listen and serve in this thread until interrupted (the CLI)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving; hanging requests are released."""
        self.stop_event.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> ReplayServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses, faults, stats --------------------------------------------------------------------
    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:8123`` (use as ``TK_API_BASE_URL``)."""
        return f"http://{self.host_port}"

    def service_root(self, profile: str = "v4/2.0") -> str:
        """The OData service root of ``profile``, e.g. ``http://127.0.0.1:8123/OData/v4/2.0``."""
        return self.url + self.profiles[profile].path

    def metadata(self, profile: str) -> str:
        return self._metadata[profile]

    def set_faults(self, config: FaultConfig | None) -> None:
        """Replace the fault configuration (None: no faults); the random sequence restarts from its seed."""
        self.faults.configure(config or FaultConfig())
        log.info("TK replay faults now %s", self.faults.config)

    def fault_status(self) -> dict[str, Any]:
        return {"config": self.faults.config.to_dict(), "injected": dict(self.faults.stats)}

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self._stats[key] += 1

    def stats(self) -> dict[str, Any]:
        """Responses by status, pages served and faults injected so far."""
        with self._stats_lock:
            out = dict(self._stats)
        out["faults"] = dict(self.faults.stats)
        return out
