"""The scoring job's own error, raised by its plan, its actors and its output directory."""


class ScoringError(ValueError):
    """The job cannot run as asked (bad model reference, output owned by another model, ...)."""
