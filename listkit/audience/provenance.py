"""Where and when a subscriber or a membership came from, as SQL.

An import stores its time and source once, in ``imports`` (m025): the
subscribers and memberships it makes point at it (``import_id``) and leave
``created``, ``source``, ``consent_method`` and ``consent_source`` NULL, the
values every row of the import would repeat. A value stored on the row (rows
made another way or before m025, or consent recorded later) wins.
Each expression reads the row of ``subscribers`` as ``s`` or of
``memberships`` as ``m``.
"""

from __future__ import annotations

_IMPORT = "(SELECT i.{column} FROM imports i WHERE i.id = {row}.import_id)"

# When listkit first saw the subscriber, and where from ('import:<file>', 'manual', ...).
SUBSCRIBER_CREATED = f"coalesce(s.created, {_IMPORT.format(column='at', row='s')})"
SUBSCRIBER_SOURCE = f"coalesce(s.source, {_IMPORT.format(column='source', row='s')})"
# When the membership began, how consent was given and where.
MEMBER_CREATED = f"coalesce(m.created, {_IMPORT.format(column='at', row='m')})"
# A membership's consent is its import's while its own consent_method is NULL;
# consent recorded later (a signup confirmed) sets consent_method, and with it
# its own source, NULL included.
CONSENT_METHOD = "coalesce(m.consent_method, iif(m.import_id IS NULL, NULL, 'import'))"
CONSENT_SOURCE = (
    "coalesce(m.consent_source, "
    f"iif(m.consent_method IS NULL, {_IMPORT.format(column='source', row='m')}, NULL))"
)
