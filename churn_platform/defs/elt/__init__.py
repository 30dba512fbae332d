"""The ELT: staging, analytics, rejected rows, segments, quality metrics; their checks and schedule."""
