"""The responders' desk service: one process serving the API (/api/...) and the pages."""
