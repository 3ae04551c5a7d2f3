"""Content negotiation of the replay server: which representation a request asks for, and 406 when none.

OData JSON Format v4.01 §3 (Requesting the JSON Format) and Protocol v4.01 §8.2.1 (Header Accept),
§11.2.11 / URL Conventions v4.01 §5.1.9 (System Query Option ``$format``): a client asks for JSON with
``$format`` (``json``, ``application/json``, either with parameters such as ``;odata.metadata=full``) or,
without ``$format``, with the ``Accept`` header. The parameters understood are ``odata.metadata`` (or
``metadata``, 4.01) = ``minimal`` | ``full`` | ``none``, ``odata.streaming``, ``IEEE754Compatible`` and
``charset``; other parameters are ignored, as media type parameters a server does not know should be.
``$format`` wins over ``Accept``. A format the service cannot produce (Atom or XML for data, JSON for
``$metadata``, an unknown ``odata.metadata`` level) is HTTP 406 Not Acceptable.
"""

from __future__ import annotations

from include.tk_replay.odata import LEVELS, MINIMAL, JsonFormat, ODataError

_JSON_ALIASES = {"json", "application/json"}
_XML_ALIASES = {"xml", "application/xml"}


def _parse_media(text: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` (lower case) and its parameters (names lower case, values unquoted)."""
    parts = [p.strip() for p in text.split(";")]
    params: dict[str, str] = {}
    for p in parts[1:]:
        if not p:
            continue
        name, _, value = p.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return parts[0].lower(), params


def _json_format(params: dict[str, str], asked: str) -> JsonFormat:
    level = (params.get("odata.metadata") or params.get("metadata") or "minimal").lower()
    if level not in LEVELS:
        raise ODataError(
            406,
            f"The format '{asked}' cannot be served: odata.metadata must be one of {', '.join(LEVELS)}.",
        )
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8", "*"):
        raise ODataError(406, f"The format '{asked}' cannot be served: responses are in charset utf-8.")
    streaming = (params.get("odata.streaming") or params.get("streaming") or "true").lower() != "false"
    ieee754 = params.get("ieee754compatible", "false").lower() == "true"
    return JsonFormat(level, ieee754, streaming)


def _accept_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """The media ranges of an ``Accept`` header, best first (q descending, then as written); q=0 out."""
    ranges = []
    for i, item in enumerate(a for a in accept.split(",") if a.strip()):
        media, params = _parse_media(item)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append((-q, i, media, params))
    return [(m, p) for _, _, m, p in sorted(ranges)]


def negotiate_json(format_option: str | None, accept: str | None) -> JsonFormat:
    """The JSON format of a data or service-document response; ODataError 406 when JSON is not wanted."""
    if format_option is not None:
        media, params = _parse_media(format_option)
        # ``json`` with parameters (``json;odata.metadata=full``) is not the spec's spelling (JSON Format
        # v4.01 §3 gives the abbreviation without parameters) but clients written for the real API send
        # it: it is read as application/json with those parameters rather than refused.
        if media not in _JSON_ALIASES:
            raise ODataError(
                406,
                f"The format '{format_option}' is not supported for this resource: it is served as JSON "
                "only ($format=json or application/json, with optional ;odata.metadata=minimal|full|none).",
            )
        return _json_format(params, format_option)
    if not accept or not accept.strip():
        return MINIMAL
    refusal: ODataError | None = None
    for media, params in _accept_ranges(accept):
        if media in ("application/json", "application/*", "*/*"):
            try:
                return _json_format(params, media)
            except ODataError as e:
                refusal = e
    raise refusal or ODataError(
        406,
        f"None of the media types in the Accept header '{accept}' can be served: this resource is JSON "
        "(application/json).",
    )


def negotiate_metadata(format_option: str | None, accept: str | None) -> None:
    """Check a ``$metadata`` request asks for what is served: CSDL XML (Protocol §11.1.2); else 406.

    The service implements no CSDL JSON, so ``$format=json`` or an ``Accept`` naming only JSON is 406.
    """
    if format_option is not None:
        media, _ = _parse_media(format_option)
        if media not in _XML_ALIASES:
            raise ODataError(
                406,
                f"The format '{format_option}' is not supported for $metadata: it is served as CSDL XML "
                "only ($format=xml or application/xml).",
            )
        return
    if not accept or not accept.strip():
        return
    for media, _ in _accept_ranges(accept):
        if media in ("application/xml", "application/*", "*/*", "text/xml"):
            return
    raise ODataError(
        406,
        f"None of the media types in the Accept header '{accept}' can be served: $metadata is CSDL XML "
        "(application/xml).",
    )
