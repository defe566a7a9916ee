"""b24bridge: a self-hosted Bitrix24 integration service."""

__version__ = "0.1.0"
