"""The portal-to-portal bridge: deals handed from a source portal to a target portal by declarative routes.

``routes`` reads the operator's route file, ``mapping`` turns source records into target fields, ``check``
validates routes against the portals' real field and stage lists.
"""
