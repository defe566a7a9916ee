"""Business Process robots: declared in code, registered in portals, answered by jobs."""
