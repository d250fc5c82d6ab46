"""The one exception family listkit raises for anything a user can fix.

The CLI turns every ``ListkitError`` into ``Error: <message>`` and exit code 1,
with no traceback. Messages say what is wrong, where (file, line, field,
setting) and, when it is not obvious, what to do next.
"""


class ListkitError(Exception):
    """Base class: a problem the user can act on."""


class ConfigError(ListkitError):
    """A setting is missing or malformed; the message names the setting."""


class NotFound(ListkitError):
    """A list, subscriber, offer, campaign or sale that does not exist."""


class InputError(ListkitError):
    """A file or value given to listkit cannot be read as expected."""


class TemplateError(ListkitError):
    """An offer's template cannot be rendered."""


class HeaderInjection(ListkitError):
    """A header value from data carries control characters or encoded tricks."""


class SendError(ListkitError):
    """Sending cannot go on (connection, authentication, TLS)."""
