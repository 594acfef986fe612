"""The record service: the one door to the data, for every way in (REST, CLI, portal, jobs)."""

from openrecord.service.bundles import BundleProcessor
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService, SearchResult, WriteResult

__all__ = ["BundleProcessor", "RecordService", "SearchResult", "SecurityContext", "WriteResult"]
