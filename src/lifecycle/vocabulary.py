"""Closed vocabularies of the fact format v1 (documented in docs/facts.md)."""

from typing import Literal, get_args

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
# How a person unsubscribed: a closed list, so no free text (an address, a name) is stored.
Channel = Literal[
    "email-link", "email-reply", "web-form", "preference-centre", "phone", "post",
    "in-person", "sms", "other",
]
CHANNELS: tuple[str, ...] = get_args(Channel)

HOME_COUNTRY = "GB"
ALL_SCOPE = "all"
DIRECT_MARKETING = "direct-marketing"
