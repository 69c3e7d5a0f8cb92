"""Closed vocabularies of the fact format v1 (DESIGN.md §3)."""

from typing import Literal

Category = Literal[
    "identity", "contact", "technical", "usage", "feedback",
    "account", "content", "online", "special",
]
Basis = Literal[
    "consent", "contract", "legal-obligation",
    "legitimate-interests", "vital-interests", "public-task",
]
Source = Literal["data-subject", "third-party", "public"]
Role = Literal["processor", "controller"]
RestrictionReason = Literal[
    "contested-accuracy", "unlawful-processing", "legal-claims", "objection-pending",
]

HOME_COUNTRY = "GB"
ALL_SCOPE = "all"
DIRECT_MARKETING = "direct-marketing"
