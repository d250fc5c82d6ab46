"""What a message is: offers, composing, MIME, tracked links and clicks, DKIM, and the
sender check (doctor).
"""
