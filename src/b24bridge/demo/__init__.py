"""``b24bridge demo``: sandbox portals and b24bridge in one process, a scripted story, and what arrived.

``story`` starts everything and plays it, on ``plumbing`` (servers in one event loop, portals reached over HTTP);
``report`` prints the result. Entry level, like ``app``: it may use the sandbox and the composition root, and nothing
below imports it.
"""

from b24bridge.demo.plumbing import DemoError
from b24bridge.demo.story import DemoOptions, run

__all__ = ["DemoError", "DemoOptions", "run"]
