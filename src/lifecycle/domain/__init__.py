"""The domain: pure rules and the fact format. Imports nothing of storage, services or entry points."""
