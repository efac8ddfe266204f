"""Data shipped with AIBA Studio (a package only so that wheels carry it): see engine.paths."""
