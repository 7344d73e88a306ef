"""nordfed: a federated health data network for OMOP CDM sites."""

__version__ = "0.1.0"
