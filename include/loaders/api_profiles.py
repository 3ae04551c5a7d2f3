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
        name: the value of ``TK_API_PROFILE`` that selects it (``v4/2.0``, ``v5``).
        path: the path under the server root, e.g. ``/OData/v4/2.0``.
        page_size: rows per server page (informational: paging is server-driven).
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

DEFAULT_PROFILE = "v4/2.0"


def get_profile(name: str) -> ApiProfile:
    """The profile called ``name``; a ValueError naming the known profiles otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"Unknown TK API profile {name!r}: set TK_API_PROFILE to one of {', '.join(sorted(PROFILES))}."
        ) from None
