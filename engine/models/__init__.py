"""Models that ship with AIBA Studio (weights under ``resources/models/``)."""
