"""The hub's read-only web dashboard: server-rendered HTML (Jinja2, inline CSS, no scripts) under /dashboard.

Users log in with their hub password; the dashboard keeps a normal user token in an HttpOnly, SameSite=Strict
cookie and shows exactly what the REST API would show that user. Logging in and out are its only state changes
(both CSRF-protected); nodes' tokens are refused. Not part of the OpenAPI schema.
"""

from nordfed.hub.dashboard.routes import router

__all__ = ["router"]
