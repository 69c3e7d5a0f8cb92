"""Closed vocabularies of the fact format v1 (documented in docs/facts.md)."""

from typing import Literal, get_args

Category = Literal[
    "identity", "contact", "technical", "usage", "feedback",
    "account", "content", "online", "special", "criminal-offence",
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
# Art 18(2): what may still be done with restricted data besides storing it.
RestrictionException = Literal[
    "consent", "legal-claims", "protection-of-others", "public-interest",
]
# Art 17(1): the ground an erasure request relies on, by its letter.
ErasureGround = Literal["a", "b", "c", "d", "e", "f"]
ERASURE_GROUNDS: dict[str, str] = {
    "a": "Art 17(1)(a): no longer necessary for the purposes collected",
    "b": "Art 17(1)(b): consent withdrawn and no other legal ground",
    "c": "Art 17(1)(c): objection under Art 21",
    "d": "Art 17(1)(d): unlawfully processed",
    "e": "Art 17(1)(e): erasure needed to comply with a legal obligation",
    "f": "Art 17(1)(f): collected in relation to information society services to a child",
}

HOME_COUNTRY = "GB"
ALL_SCOPE = "all"
DIRECT_MARKETING = "direct-marketing"
