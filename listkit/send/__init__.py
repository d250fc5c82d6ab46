"""Getting messages out: campaigns and their outbox (``campaigns``, ``outbox``,
``marks``), a campaign's send (``prepare``, ``sender``, ``run``, ``render``,
``due`` for `send --due`), SMTP (``connect``, ``smtp``: the one transaction),
single messages (``single``), VERP, follow-ups, offer tests and the capture sink.
"""
