"""The door's durable intake: accepted calls stored in groups (one transaction for all that arrive together), and
written to a local spool when the database cannot take them, to be stored from there once it is back."""
