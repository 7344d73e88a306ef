"""One router per resource; ``ROUTERS`` is mounted under /api by ``create_app``."""

from nordfed.hub.routers import auth, collaborations, ledger, nodes, organizations, runs, studies, tasks, users

ROUTERS = [
    auth.router,
    organizations.router,
    users.router,
    collaborations.router,
    nodes.router,
    ledger.router,
    studies.router,
    tasks.router,
    runs.router,
]
