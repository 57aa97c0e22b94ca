"""certfleet's own CA bundle: fetched from bundle sources, checked, tried against the servers
that must stay reachable, installed atomically, and pushed to every device."""
