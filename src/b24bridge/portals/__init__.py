"""Portals that installed b24bridge: install and uninstall, tokens encrypted at rest."""
