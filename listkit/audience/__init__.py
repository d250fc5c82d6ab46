"""Who is on the lists: lists, subscribers, imports, suppressions, addresses, audiences and
signups.
"""
