"""``listkit serve``: the small web service for what comes back from readers.

One ASGI app (Starlette on uvicorn) over the workspace's database: unsubscribes,
signups, clicks, sales and bounce webhooks. The rules: GET and HEAD never change
state (mail scanners prefetch links); every token is signed and checked in
constant time; a webhook is verified by its producer's scheme before it is
parsed; every write commits before the answer; an event that arrives twice is
recorded once; an error page is plain and shows no traceback.
"""

from listkit.web.app import create_app

__all__ = ["create_app"]
