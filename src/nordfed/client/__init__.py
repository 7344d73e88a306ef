"""Researcher SDK and the network federation."""

from nordfed.client.api import Client, HubError, RunResult
from nordfed.client.federation import HubFederation

__all__ = ["Client", "HubError", "HubFederation", "RunResult"]
