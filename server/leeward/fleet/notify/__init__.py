"""Notifications: one durable pipeline for everything that concerns a person (the room
"notifications"). Producers call `notify()` in their own transaction (outbox.py); the delivery
loop leases what is due and sends it to each sink (delivery.py, sinks.py); each kind's text comes
from its templates (templates.py)."""
