"""The operator's side: the admin page (``/admin``, server-rendered) and the admin API (``/api``) over the portals,
routes, runs and robots of this service; who may use them (:mod:`.access`)."""
