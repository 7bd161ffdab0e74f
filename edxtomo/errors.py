"""The project's own error types: a problem with the user's input, named in the message.

Every error a user can cause (a bad file, a bad option, an impossible request) is an
:class:`EdxtomoInputError`, so the workflow can print its one-line message instead of a
traceback. Programming errors keep their usual Python types.
"""


class EdxtomoInputError(ValueError):
    """Bad input: the message names the file, key or value and what is wrong with it."""


class ConfigError(EdxtomoInputError):
    """The configuration or the sample sheet is invalid."""
