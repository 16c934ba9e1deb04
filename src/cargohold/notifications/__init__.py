"""Notifications: Distribution's webhooks, spooled on disk so that no event is lost.

``notifier.py`` takes events from the request pipeline into the spool
(``spool.py``); ``delivery.py`` sends them to each endpoint, rendered by
``envelope.py``.
"""
