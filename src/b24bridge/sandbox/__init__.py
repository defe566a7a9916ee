"""A local emulator of Bitrix24 cloud portals (one, or several side by side) and of the Bitrix24 OAuth server.

This package stands alone: it imports nothing else of b24bridge, so it can be lifted out as it is.
"""
