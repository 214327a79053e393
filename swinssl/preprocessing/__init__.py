"""Turning source volumes into normalised, RAS-oriented arrays cached on disk."""
