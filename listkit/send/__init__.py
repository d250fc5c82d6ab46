"""Getting messages out: campaigns, the outbox, the sender and its SMTP layer, VERP,
follow-ups, offer tests and the capture sink.
"""
