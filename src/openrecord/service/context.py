"""Who is asking, for whom, and why: the security context every data access carries."""

from __future__ import annotations

from dataclasses import dataclass, field

from openrecord.auth.scopes import ScopePolicy, parse_scopes

__all__ = ["SecurityContext"]


@dataclass(frozen=True, slots=True)
class SecurityContext:
    """The caller of the record service.

    `user` and `client` identify the person and the app; `patient` narrows access to one
    patient's compartment; `scopes` are SMART scopes; `purpose` the purpose of use
    (e.g. "TREAT", "PATRQT"). Until the authorization server lands, the REST API runs
    `open()`: full access, recorded as such. `policy` is what the scopes grant, parsed
    once here (an invalid scope raises `ScopeError`); `service/access.py` enforces it.
    """

    user: str | None = None
    client: str | None = None
    patient: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    purpose: str | None = None
    unrestricted: bool = False
    policy: ScopePolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", parse_scopes(self.scopes))

    @classmethod
    def of(
        cls, scopes: str, *, patient: str | None = None, user: str | None = None
    ) -> SecurityContext:
        """A context from a space-separated scope string (what a token carries)."""
        return cls(user=user, patient=patient, scopes=frozenset(scopes.split()))

    @classmethod
    def open(cls, purpose: str | None = None) -> SecurityContext:
        """Full access: a development server without authorization, or a CLI operator."""
        return cls(unrestricted=True, scopes=frozenset({"system/*.cruds"}), purpose=purpose)
