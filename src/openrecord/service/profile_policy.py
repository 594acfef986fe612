"""Write-time profile policy: a resource's declared `meta.profile`s checked on every write.

`warn` (the server's default) lets the write succeed and hands the profile issues back
(errors reported as warnings, since the write happened); `strict` refuses a resource
that breaks a profile it declares (422, nothing written); `off` skips the check.
Profiles the server does not know are reported as information and never refuse a
write: a client may declare profiles of guides this server has not loaded.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from openrecord.fhir.outcome import FHIRError, Issue
from openrecord.fhir.profiles import profile, validate_against

__all__ = ["PROFILE_POLICIES", "ProfilePolicy", "declared_profile_issues", "profile_policy"]

ProfilePolicy = Literal["warn", "strict", "off"]
PROFILE_POLICIES: tuple[ProfilePolicy, ...] = ("warn", "strict", "off")


def profile_policy(name: str) -> ProfilePolicy:
    """The policy called `name` (case-insensitive); ValueError for any other word."""
    word = name.strip().lower()
    if word not in PROFILE_POLICIES:
        raise ValueError(f"profile policy must be one of {', '.join(PROFILE_POLICIES)}: {name!r}")
    return word


def declared_profile_issues(resource: dict[str, Any], policy: ProfilePolicy) -> list[Issue]:
    """The issues of `resource` against each profile its `meta.profile` names.

    Raises 422 with the profile errors under `strict`; under `warn` errors come back
    as warnings. Runs after base R4 validation, so `resource` is structurally valid.
    """
    if policy == "off":
        return []
    meta = resource.get("meta")
    declared = meta.get("profile") if isinstance(meta, dict) else None
    if not isinstance(declared, list):
        return []
    issues: list[Issue] = []
    errors: list[Issue] = []
    for url in dict.fromkeys(u for u in declared if isinstance(u, str)):
        if profile(url) is None:
            issues.append(
                Issue(
                    "not-supported",
                    f"profile {url!r} is not known here; the resource was not checked against it",
                    severity="information",
                    expression=f"{resource.get('resourceType')}.meta.profile",
                )
            )
            continue
        for issue in validate_against(resource, url):
            labelled = replace(issue, diagnostics=f"{issue.diagnostics} (profile {url})")
            if issue.severity in ("error", "fatal"):
                errors.append(labelled)
                if policy == "warn":
                    issues.append(replace(labelled, severity="warning"))
            else:
                issues.append(labelled)
    if errors and policy == "strict":
        raise FHIRError(422, errors + issues)
    return issues
