"""API profiles: everything that differs between versions of the TK OData API, as data.

The loaders speak *canonical* names: the property names of the v4/2.0 API (the names in the real samples
and in its ``$metadata``). A profile says where a version lives, how it pages and which canonical names it
spells differently. The client maps canonical names to profile names in requests (``$select``,
``$filter``) and profile names back to canonical names in responses; the offline server
(``include.tk_replay``) serves every profile from this same table, so there is one place to correct when
the facts about a new version change.

The v5 facts come from a third-party client of the new version and are UNCONFIRMED
(``tk-api/README.md`` section 0); they live only in :data:`PROFILES` below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: Entity type key meaning "every entity type that has this property".
ANY_ENTITY = "*"


@dataclass(frozen=True)
class ApiProfile:
    """One version of the TK OData API.

    Attributes:
        name: the value of ``TK_API_PROFILE`` that selects it (``v4/2.0``, ``v5``); the default ``auto``
            tries :data:`DISCOVERY_ORDER` at run time.
        path: the path under the server root, e.g. ``/OData/v4/2.0``.
        page_size: rows per server page. The client follows ``@odata.nextLink`` when the server sends it;
            without one, a page of at least ``min(page_size, max_top)`` rows means "more may follow" and
            the next page is asked for by keyset (``TKClient.iter_pages``).
        max_top: the largest ``$top`` the server accepts (more gives HTTP 400), or None.
        renames: per entity type (or :data:`ANY_ENTITY`), canonical name -> this profile's name.
        added_properties: per entity type, properties this profile has and v4/2.0 has not,
            with their EDM type; they pass through the client under their own names.
        confirmed: False while the facts are hearsay.
    """

    name: str
    path: str
    page_size: int
    max_top: int | None = None
    renames: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    added_properties: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    confirmed: bool = True

    @property
    def page_cap(self) -> int:
        """The ``$top`` of a keyset page: the page size, never above :attr:`max_top`."""
        return self.page_size if self.max_top is None else min(self.page_size, self.max_top)

    def renames_for(self, entity_type: str) -> dict[str, str]:
        """Canonical -> profile name for ``entity_type`` (entity-specific renames win over ``*``)."""
        out = dict(self.renames.get(ANY_ENTITY, {}))
        out.update(self.renames.get(entity_type, {}))
        return out

    def to_profile(self, entity_type: str, canonical: str) -> str:
        """The profile's name for the canonical property ``canonical`` of ``entity_type``."""
        return self.renames_for(entity_type).get(canonical, canonical)

    def to_canonical_map(self, entity_type: str) -> dict[str, str]:
        """Profile name -> canonical name for ``entity_type`` (only the names that differ)."""
        return {v: k for k, v in self.renames_for(entity_type).items()}


PROFILES: Mapping[str, ApiProfile] = MappingProxyType(
    {
        "v4/2.0": ApiProfile(name="v4/2.0", path="/OData/v4/2.0", page_size=250),
        # UNCONFIRMED (tk-api/README.md section 0): base /OData/v5, $top capped at 100 (more: HTTP 400),
        # Document.DocumentNummer -> Nummer, Volgnummer -> Ondernummer,
        # Activiteit.VoortouwCommissieNaam added.
        "v5": ApiProfile(
            name="v5",
            path="/OData/v5",
            page_size=100,
            max_top=100,
            renames=MappingProxyType(
                {
                    "Document": MappingProxyType({"DocumentNummer": "Nummer"}),
                    ANY_ENTITY: MappingProxyType({"Volgnummer": "Ondernummer"}),
                }
            ),
            added_properties=MappingProxyType(
                {"Activiteit": MappingProxyType({"VoortouwCommissieNaam": "Edm.String"})}
            ),
            confirmed=False,
        ),
    }
)

AUTO = "auto"
"""The ``TK_API_PROFILE`` value meaning "find the version at run time" (:mod:`include.loaders.discovery`)."""

DISCOVERY_ORDER: tuple[str, ...] = ("v5", "v4/2.0")
"""The profiles ``auto`` tries, in this order, by their ``$metadata``: the newest first."""

DEFAULT_PROFILE = AUTO


def get_profile(name: str) -> ApiProfile:
    """The profile called ``name``; a ValueError naming the known profiles otherwise.

    ``auto`` is not a profile: resolve it first (``include.loaders.discovery.discover``).
    """
    try:
        return PROFILES[name]
    except KeyError:
        if name == AUTO:
            raise ValueError(
                "TK_API_PROFILE=auto has not been resolved yet: the version is found by "
                "include.loaders.discovery.discover() (TKClient does it on first use)."
            ) from None
        raise ValueError(
            f"Unknown TK API profile {name!r}: set TK_API_PROFILE to {AUTO} (find the version) or one of "
            f"{', '.join(sorted(PROFILES))}."
        ) from None


def check_profile_name(name: str) -> str:
    """``name`` when it is ``auto`` or a key of :data:`PROFILES`; else :func:`get_profile`'s ValueError."""
    if name != AUTO:
        get_profile(name)
    return name


def profile_of_path(url: str) -> ApiProfile | None:
    """The profile whose path ``url`` ends with (``…/OData/v5``, trailing ``/`` allowed), or None."""
    trimmed = url.rstrip("/")
    for profile in PROFILES.values():
        if trimmed.endswith(profile.path):
            return profile
    return None
