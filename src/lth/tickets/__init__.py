"""Compact lottery tickets: sparse modules for inference (:mod:`lth.tickets.sparse`)."""
