"""The project's error hierarchy. Messages never carry personal values."""


class LifecycleError(Exception):
    """Base of every error lifecycle raises on purpose."""


class ConfigurationError(LifecycleError):
    """A setting, key file or policy file is missing or wrong (CLI exit code 2)."""


class ArgumentRefused(LifecycleError):
    """An argument asks for what is refused before anything is done, such as an erasure
    ahead of the clock (CLI exit code 2)."""


class InvalidFact(LifecycleError):
    """A fact does not follow the ingest format or breaks a domain rule."""


class UnknownRecord(InvalidFact):
    """A fact refers to a record the subject does not have."""


class RecordErased(InvalidFact):
    """A fact acts on a record whose values have been erased."""


class RecordExists(InvalidFact):
    """A collection reuses a record id the subject already has."""


class NoSuchConsent(InvalidFact):
    """Consent is withdrawn for a purpose it was never given for."""


class NoSuchRestriction(InvalidFact):
    """A restriction is lifted that is not in force."""


class NoSuchHold(InvalidFact):
    """A legal hold is released that was never placed."""


class RequestExists(InvalidFact):
    """A request reference the subject already used."""


class NoSuchNotification(InvalidFact):
    """An acknowledgement for an erasure the recipient was never due to be told of."""


class NoSuchRequest(InvalidFact):
    """A request step refers to a request the subject never made."""


class MissingSafeguard(InvalidFact):
    """A share outside the UK names no transfer safeguard."""


class SuppressedAddress(InvalidFact):
    """Marketing data for an e-mail on the suppression list, without fresh consent."""


class SubjectNotFound(LifecycleError):
    """No facts have been recorded for the subject reference."""


class KeyDestroyed(LifecycleError):
    """A data key was destroyed (crypto-shredded); its values are gone."""


class RebuildFailed(LifecycleError):
    """A rebuild shared among processes could not finish; the views are unchanged."""
