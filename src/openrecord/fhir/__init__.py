"""The FHIR R4 specification in memory: definitions, validation, FHIRPath, index extraction.

Pure code: nothing here does I/O beyond reading the package's own compiled data.
"""
