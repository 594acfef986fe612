"""Who is asking, for whom, and why: the security context every data access carries."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SecurityContext"]


@dataclass(frozen=True, slots=True)
class SecurityContext:
    """The caller of the record service.

    `user` and `client` identify the person and the app; `patient` narrows access to one
    patient's compartment; `scopes` are SMART scopes; `purpose` the purpose of use
    (e.g. "TREAT", "PATRQT"). Until the authorization server lands, the REST API runs
    `open()`: full access, recorded as such.
    """

    user: str | None = None
    client: str | None = None
    patient: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    purpose: str | None = None
    unrestricted: bool = False

    @classmethod
    def open(cls, purpose: str | None = None) -> SecurityContext:
        """Full access: a development server without authorization, or a CLI operator."""
        return cls(unrestricted=True, scopes=frozenset({"system/*.cruds"}), purpose=purpose)
