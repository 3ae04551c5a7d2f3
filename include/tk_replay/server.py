"""The replay HTTP server: the TK OData API offline, for both profiles, with faults on demand.

    with ReplayServer(Dataset.generate(1000, seed=1), faults=FaultConfig.mixed(0.2)) as server:
        root = server.url                   # http://127.0.0.1:<port>
        v4 = server.service_root("v4/2.0")  # …/OData/v4/2.0
        server.set_faults(FaultConfig())    # change faults at run time
        server.dataset.mutate(seed=2)       # change the data between loads

What it serves follows the OData v4.01 Protocol, URL Conventions and JSON Format (answering
``OData-Version: 4.0`` as the real API does): content negotiation by ``$format`` and ``Accept``
(:mod:`include.tk_replay.formats`), the control information of ``odata.metadata=minimal|full|none``,
context URLs, the resource paths ``Set``, ``Set/$count``, ``Set(key)``, ``Set(key)/Nav[(key)]``,
``…/Nav/$count``, ``…/Nav/$ref``, ``Set(key)/Prop[/$value]`` and ``Set(key)/resource`` (a row's file), and
the query engine of :mod:`include.tk_replay.odata`. Valid OData it does not implement is HTTP 501, a
malformed request 400, a format it cannot give 406, a write 405, each with the OData error body
(``tests/test_odata_conformance.py`` names the section each behaviour follows).

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
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from include.loaders.api_profiles import PROFILES, ApiProfile
from include.tk_replay import syncfeed_server
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig, FaultInjector
from include.tk_replay.formats import negotiate_json, negotiate_metadata
from include.tk_replay.odata import MINIMAL, JsonFormat, ODataError, Query, View, not_implemented, parse_query

log = logging.getLogger(__name__)

_JSON = (
    "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
)
_SERVER_ERROR = "An error has occurred."
_SEGMENT_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\((.*)\))?$")
_INVALID = "The query specified in the URI is not valid. "
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


def _single_options(q: Query) -> None:
    """A single entity takes ``$select``, ``$expand`` and ``$format`` only (Protocol v4.01 §11.2.2)."""
    for name, given in (
        ("$filter", q.filter),
        ("$orderby", q.orderby),
        ("$top", q.top is not None),
        ("$skip", q.skip),
        ("$count", q.count),
        ("$skiptoken", q.skiptoken),
    ):
        if given:
            raise ODataError(400, f"{_INVALID}The query option '{name}' does not apply to a single entity.")


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
        head = self._head(
            status, content_type, len(body) if declared_length is None else declared_length, headers
        )
        self.server.replay._count(f"http_{status}")  # before the write: a client may look at once
        self.wfile.write(head + body)

    def _head(
        self, status: int, content_type: str, length: int, headers: Mapping[str, str] | None = None
    ) -> bytes:
        """The status line and headers of a response of ``length`` bytes."""
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
        if status != 204:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {length}"]
        lines.append("OData-Version: 4.0")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

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
        if self.path not in ("/_faults", "/_mutate"):
            return self._not_allowed()
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
                self._not_allowed()
        except (ValueError, TypeError) as e:
            self._error(400, f"Bad admin request to {self.path}: {e}")

    def _not_allowed(self) -> None:
        """Every TK resource is read-only: 405 Method Not Allowed (Protocol v4.01 §9.2.2), ``Allow: GET``;
        a batch request (``POST …/$batch``, Protocol §11.7) is valid OData not implemented here: 501."""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.command == "POST" and urlsplit(self.path).path.rstrip("/").endswith("/$batch"):
            return self._error(501, "Batch requests ($batch) are not implemented by the replay server.")
        self._error(
            405,
            f"The TK API is read-only: {self.command} is not allowed on '{urlsplit(self.path).path}' "
            "(only GET).",
            headers={"Allow": "GET"},
        )

    do_PUT = do_PATCH = do_DELETE = do_MERGE = _not_allowed

    # -- routing -------------------------------------------------------------------------------------
    def _get(self) -> None:
        replay = self.server.replay
        if replay.basic_auth is not None and not self._authorized(replay.basic_auth):
            return self._error(401, "Authorization has been denied for this request.")
        split = urlsplit(self.path)
        path = unquote(split.path)
        names = {unquote(p.split("=", 1)[0]) for p in split.query.split("&") if p}
        if "$skip" in names:
            replay._count("skip_requests")  # tests assert that no load pages with $skip
        if "$skiptoken" in names:
            replay._count("skiptoken_requests")
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
            params = parse_qsl(split.query, keep_blank_values=True)
            accept = self.headers.get("Accept")
            if rest == "$metadata":
                replay._count("metadata_requests")
                negotiate_metadata(dict(params).get("$format"), accept)
                return self._send(200, replay.metadata(profile.name).encode("utf-8"), "application/xml")
            q = parse_query(params, profile)
            if rest == "":
                fmt = negotiate_json(q.format, accept)
                sets = [{"name": s, "kind": "EntitySet", "url": s} for s in view.dataset.schema.entity_sets]
                return self._send_json({"value": sets}, fmt, f"{root}/$metadata")
            return self._resource(view, profile, root, rest, q, split.query)
        except ODataError as e:
            return self._error(e.status, e.message)

    def _resource(
        self, view: View, profile: ApiProfile, root: str, rest: str, q: Query, raw_query: str
    ) -> None:
        """Route a resource path (URL Conventions v4.01 §4): ``Set``, ``Set/$count``, ``Set(key)`` and
        what follows a key: ``/Nav``, ``/Nav(key)``, ``/Nav/$count``, ``/Nav/$ref``, ``/Prop``,
        ``/Prop/$value`` and ``/resource`` (the media of a row with ``ContentType``/``ContentLength``)."""
        sets = view.dataset.schema.entity_sets
        segments = rest.split("/")
        m = _SEGMENT_RE.match(segments[0])
        if not m or m.group(1) not in sets:
            raise ODataError(404, f"No HTTP resource was found that matches the request URI '{self._url()}'.")
        entity_set, key = m.groups()
        info = sets[entity_set]
        tail = segments[1:]
        if key is None:
            if not tail:
                fmt = negotiate_json(q.format, self.headers.get("Accept"))
                return self._collection(view, profile, root, entity_set, q, raw_query, fmt=fmt)
            if tail == ["$count"]:
                with view.dataset.lock:
                    n = view.count(entity_set, q)
                return self._send(200, str(n).encode(), "text/plain; charset=utf-8")
            return self._no_segment(entity_set, tail[0])
        if not tail:
            _single_options(q)
            fmt = negotiate_json(q.format, self.headers.get("Accept"))
            with view.dataset.lock:
                row = self._lookup(view, entity_set, key)
                body = view.renderer(info, q, fmt, root)(row)
            context = f"{root}/$metadata#{entity_set}{view.context_select(q)}/$entity"
            return self._send_json(body, fmt, context)
        head = tail[0]
        if head == "$count":
            raise ODataError(
                400, f"{_INVALID}$count is not a collection: '{entity_set}({key})' is one entity."
            )
        if head in ("resource", "Resource") and len(tail) == 1:
            return self._media(view, entity_set, key)
        if head == "$value":
            raise ODataError(
                400,
                f"{_INVALID}'{entity_set}' is not a media entity, so it has no $value (Protocol v4.01 "
                f"§11.2.3); a row's file is at {entity_set}(<id>)/resource.",
            )
        if tail == ["$ref"]:
            with view.dataset.lock:
                row = self._lookup(view, entity_set, key)
            fmt = negotiate_json(q.format, self.headers.get("Accept"))
            return self._send_json(
                {"@odata.id": f"{root}/{entity_set}({row['Id']})"}, fmt, f"{root}/$metadata#$ref"
            )
        nm = _SEGMENT_RE.match(head)
        if nm and nm.group(1) in info.navigations:
            return self._navigation(
                view, profile, root, entity_set, key, nm.group(1), nm.group(2), tail[1:], q, raw_query
            )
        if head in view.served_properties(info) and (len(tail) == 1 or tail[1:] == ["$value"]):
            return self._property(view, root, entity_set, key, head, raw=len(tail) == 2, q=q)
        return self._no_segment(f"{entity_set}({key})", head)

    def _no_segment(self, parent: str, segment: str) -> None:
        """A path segment the service does not serve after ``parent``: 501 for OData's own segments
        (``$ref`` of a set, ``$value``, ``$entity``…), else 404."""
        if segment in ("$ref", "$value", "$entity", "$all", "$crossjoin", "$batch", "$each", "$filter"):
            raise not_implemented(f"The path segment '{segment}' after '{parent}'")
        raise ODataError(
            404,
            f"No HTTP resource was found that matches the request URI '{self._url()}': '{parent}' has no "
            f"navigation or property '{segment}'.",
        )

    def _lookup(self, view: View, entity_set: str, key: str) -> dict[str, Any]:
        """The row of ``entity_set`` with ``key`` (``<guid>`` or ``Id=<guid>``); 400 or 404 as the API does.
        Call under ``dataset.lock``."""
        k = key.strip()
        if k.startswith("Id="):
            k = k[3:].strip()
        if not _GUID_RE.match(k):
            raise ODataError(
                400,
                f"The query specified in the URI is not valid. Bad Request - Error in query "
                f"syntax: the key '{key}' is not a valid Edm.Guid (write it unquoted, without guid'…').",
            )
        row = view.dataset.rows[entity_set].get(k.lower())
        if row is None:
            info = view.dataset.schema.entity_sets[entity_set]
            raise ODataError(404, f"No entity of type '{view.namespace}.{info.name}' with key '{k}' exists.")
        return row

    def _navigation(
        self,
        view: View,
        profile: ApiProfile,
        root: str,
        entity_set: str,
        key: str,
        nav: str,
        nav_key: str | None,
        tail: list[str],
        q: Query,
        raw_query: str,
    ) -> None:
        """``Set(key)/Nav…``: Protocol v4.01 §11.2.7 Requesting Related Entities: a collection with the
        query options of a set, paging included, or the single related entity (204 No Content when null,
        §9.1.4); ``/$count`` (URL Conventions §4.8) and ``/$ref`` (Protocol §11.2.8) after it."""
        ds = view.dataset
        info = ds.schema.entity_sets[entity_set]
        target_set = info.navigations[nav]
        target = ds.schema.entity_sets.get(target_set)
        if target is None:
            raise ODataError(404, f"The navigation '{nav}' of '{entity_set}' has no entity set here.")
        many = nav in info.collections
        path = f"{entity_set}({key})/{nav}"
        if nav_key is not None and not many:
            raise ODataError(400, f"{_INVALID}'{nav}' is single-valued: it takes no key.")

        def related() -> list[str]:  # under dataset.lock
            row = self._lookup(view, entity_set, key)
            found = ds.navigate(entity_set, row, nav)
            if many:
                return [t["Id"] for t in found]  # type: ignore[union-attr]
            return [] if found is None else [found["Id"]]  # type: ignore[index]

        if many and nav_key is None:
            if not tail:
                fmt = negotiate_json(q.format, self.headers.get("Accept"))
                return self._collection(
                    view, profile, root, target_set, q, raw_query, fmt=fmt, path=path, ids_of=related
                )
            if tail == ["$count"]:
                with ds.lock:
                    n = view.count(target_set, q, related())
                return self._send(200, str(n).encode(), "text/plain; charset=utf-8")
            if tail == ["$ref"]:
                return self._references(view, root, target_set, q, related, many=True)
            return self._no_segment(path, tail[0])
        if tail == ["$ref"] and nav_key is None:
            return self._references(view, root, target_set, q, related, many=False)
        if tail:
            name = _SEGMENT_RE.match(tail[0])
            if name and (
                name.group(1) in target.navigations or name.group(1) in view.served_properties(target)
            ):
                raise not_implemented(f"A path beyond the navigation '{path}' ('{tail[0]}')")
            return self._no_segment(path, tail[0])
        _single_options(q)
        fmt = negotiate_json(q.format, self.headers.get("Accept"))
        body = None
        with ds.lock:
            ids = related()
            if nav_key is not None:
                wanted = self._lookup(view, target_set, nav_key)["Id"]
                if wanted not in ids:
                    raise ODataError(
                        404, f"No entity with key '{nav_key}' is related to '{entity_set}({key})' by '{nav}'."
                    )
                ids = [wanted]
            if ids:
                body = view.renderer(target, q, fmt, root)(ds.rows[target_set][ids[0]])
        if body is None:
            return self._send(204, b"")
        return self._send_json(body, fmt, f"{root}/$metadata#{target_set}{view.context_select(q)}/$entity")

    def _references(
        self, view: View, root: str, target_set: str, q: Query, related: Any, *, many: bool
    ) -> None:
        """``Set(key)/Nav/$ref``: the entity references an ``@odata.associationLink`` points to
        (Protocol v4.01 §11.2.8 and §10.11-10.12; JSON Format v4.01 §14 Entity Reference)."""
        if q.select or q.expand or q.expand_all:
            raise ODataError(400, f"{_INVALID}$select and $expand do not apply to entity references.")
        fmt = negotiate_json(q.format, self.headers.get("Accept"))
        ds = view.dataset
        with ds.lock:
            ids = related()
            if many:
                rows, count = view.selection(ds.schema.entity_sets[target_set], q)(
                    [ds.rows[target_set][i] for i in ids]
                )
        if not many:
            if not ids:
                return self._send(204, b"")
            return self._send_json(
                {"@odata.id": f"{root}/{target_set}({ids[0]})"}, fmt, f"{root}/$metadata#$ref"
            )
        body = {"value": [{"@odata.id": f"{root}/{target_set}({r['Id']})"} for r in rows]}
        if count is not None:
            body = {"@odata.count": str(count) if fmt.ieee754 else count, **body}
        return self._send_json(body, fmt, f"{root}/$metadata#Collection($ref)")

    def _property(
        self, view: View, root: str, entity_set: str, key: str, prop: str, *, raw: bool, q: Query
    ) -> None:
        """``Set(key)/Prop`` (Protocol v4.01 §11.2.4, context URL §10.13) and ``/Prop/$value``
        (§11.2.4.1, text/plain); a null value is 204 No Content."""
        info = view.dataset.schema.entity_sets[entity_set]
        with view.dataset.lock:
            row = self._lookup(view, entity_set, key)
            value = view.getter(info, prop)(row)
        if value is None:
            return self._send(204, b"")
        if raw:
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            return self._send(200, text.encode("utf-8"), "text/plain; charset=utf-8")
        fmt = negotiate_json(q.format, self.headers.get("Accept"))
        typ = view.prop_type(info, prop)
        body: dict[str, Any] = {}
        if fmt.metadata == "full" and typ not in ("Edm.String", "Edm.Boolean", "Edm.Double"):
            body["@odata.type"] = "#" + typ.removeprefix("Edm.")  # JSON Format §4.5.3
        body["value"] = str(value) if fmt.ieee754 and typ in ("Edm.Int64", "Edm.Decimal") else value
        return self._send_json(body, fmt, f"{root}/$metadata#{entity_set}({row['Id']})/{prop}")

    def _media(self, view: View, entity_set: str, key: str) -> None:
        """``Set(key)/resource``: the row's file, ``ContentType`` as Content-Type and exactly
        ``ContentLength`` bytes, streamed; 404 for a row without them, as the real API answers."""
        ds = view.dataset
        with ds.lock:
            row = self._lookup(view, entity_set, key)
            content_type, length = row.get("ContentType"), row.get("ContentLength")
            if not content_type or not isinstance(length, int) or length < 0:
                raise ODataError(
                    404,
                    f"'{entity_set}({row['Id']})' has no resource: its ContentType or ContentLength is null.",
                )
            chunks = ds.resource_chunks(row["Id"], length)
            length = ds.resource_length(row["Id"], length)
        self.server.replay._count("http_200")
        self.wfile.write(self._head(200, content_type, length))
        for chunk in chunks:
            self.wfile.write(chunk)

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

    def _collection(
        self,
        view: View,
        profile: ApiProfile,
        root: str,
        entity_set: str,
        q: Query,
        raw_query: str,
        *,
        fmt: JsonFormat = MINIMAL,
        path: str | None = None,
        ids_of: Callable[[], list[str]] | None = None,
    ) -> None:
        """A page of ``entity_set`` (or of the related rows ``ids_of()`` returns, for ``path`` =
        ``Set(key)/Nav``) with ``@odata.count`` and ``@odata.nextLink`` (JSON Format v4.01 §13, Protocol
        §11.2.6.7)."""
        replay = self.server.replay
        info = view.dataset.schema.entity_sets[entity_set]
        path = path or entity_set
        with view.dataset.lock:
            render = view.encoder(info, q, fmt, root)
            page = view.query(entity_set, q, profile.page_size, ids_of() if ids_of else None)
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
        parts = [b"{"]
        if fmt.metadata != "none":
            context = f"{root}/$metadata#{entity_set}{view.context_select(q)}"
            parts += [b'"@odata.context":', _dumps(context), b","]
        if page.count is not None:
            count = _dumps(str(page.count)) if fmt.ieee754 else b"%d" % page.count
            parts += [b'"@odata.count":', count, b","]
        parts += [b'"value":[', value, b"]"]
        if page.next_id and profile.name in replay.next_link_versions:
            kept = [
                p
                for p in raw_query.split("&")
                if p and unquote(p.split("=", 1)[0]) not in ("$skiptoken", "$skip")
            ]
            kept.append(f"$skiptoken=Id-{page.next_id}")
            parts += [b',"@odata.nextLink":', _dumps(f"{root}/{path}?" + "&".join(kept))]
        parts.append(b"}")
        replay._count("pages")  # before the write: a client may look at once
        self._send_body(b"".join(parts), fmt.content_type)

    def _send_json(self, body: dict[str, Any], fmt: JsonFormat, context: str) -> None:
        """Send a JSON object led by its ``@odata.context``, unless ``odata.metadata=none`` (JSON Format
        v4.01 §4.5.1)."""
        if fmt.metadata != "none":
            body = {"@odata.context": context, **body}
        self._send_body(_dumps(body), fmt.content_type)

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
    """An offline TK OData API over a :class:`Dataset`, serving the profiles of ``PROFILES`` (all, or some).

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
        versions: the profile names served (None: all of ``PROFILES``); the path of one not served
            answers HTTP 404 with the OData error body, as a closed endpoint does.
        next_link: True: every served version pages with ``@odata.nextLink`` (when the request has no
            ``$top``, as the real v4/2.0 does); False, or the names of some versions: those page WITHOUT
            it, a page of ``page_size`` rows and nothing to say more exist (a client that only follows
            nextLinks silently gets the first page: the v5 to fear).

    ``$top`` above a profile's ``max_top`` is HTTP 400 (:func:`~include.tk_replay.odata.parse_query`).
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
        versions: Iterable[str] | None = None,
        next_link: bool | Iterable[str] = True,
    ):
        self.dataset = dataset if dataset is not None else Dataset.samples()
        self.host = host
        self.port = port
        served = set(PROFILES) if versions is None else set(versions)
        without = (set() if next_link else set(PROFILES)) if isinstance(next_link, bool) else set(next_link)
        unknown = sorted((served | without) - set(PROFILES))
        if unknown:
            raise ValueError(f"Unknown API version(s) {unknown}: choose from {', '.join(PROFILES)}.")
        self.profiles: dict[str, ApiProfile] = {n: p for n, p in PROFILES.items() if n in served}
        self.next_link_versions = frozenset(self.profiles) - without
        """The served versions that page with ``@odata.nextLink``."""
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
        with self.dataset.lock:
            for view in self.views.values():
                view.warm()
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
        """The OData service root of ``profile``, e.g. ``http://127.0.0.1:8123/OData/v4/2.0`` (also for a
        version not served: its URL answers 404)."""
        return self.url + PROFILES[profile].path

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
        """Responses by status (``http_200``…), ``pages`` served, requests with ``$skip``
        (``skip_requests``) and with ``$skiptoken`` (``skiptoken_requests``), ``$metadata`` requests
        (``metadata_requests``), and faults injected so far."""
        with self._stats_lock:
            out = dict(self._stats)
        out["faults"] = dict(self.faults.stats)
        return out
