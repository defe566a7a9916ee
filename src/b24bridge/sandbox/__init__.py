"""A local emulator of one Bitrix24 cloud portal and of the Bitrix24 OAuth server.

This package stands alone: it imports nothing else of b24bridge, so it can be lifted out as it is.
"""
