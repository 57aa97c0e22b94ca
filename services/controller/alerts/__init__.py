"""Health alerts: raised, updated and cleared from what certfleet knows (:mod:`.store`), and
delivered to consumers through a Redis stream and webhooks."""
