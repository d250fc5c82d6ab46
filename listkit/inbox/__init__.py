"""What comes back: bounce and complaint reports from mailboxes and relays."""
