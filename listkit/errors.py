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


def quoted(value: object) -> str:
    """``value`` as an error message may show it: never personal data nor a record.

    A message names the file, line and field of what it refuses. It may quote
    a short value that should have been a number, a code, a date or a status
    (``'29,00,0'``); anything that may be a person's data or a whole record
    (an address, a long text, an object, a list) is described instead.
    """
    if isinstance(value, dict):
        return "(an object)"
    if isinstance(value, list | tuple):
        return "(a list)"
    if isinstance(value, str):
        if "@" in value or "%40" in value.lower():
            return "(an address)"
        if len(value) > 32 or not value.isprintable():
            return f"(a text of {len(value)} characters)"
        return repr(value)
    text = repr(value)
    return text if len(text) <= 32 else f"(a value of {len(text)} characters)"
