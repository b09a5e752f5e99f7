"""The operator side: listing, sharding, publishing and campaign commands (``pisar.producer``)."""
