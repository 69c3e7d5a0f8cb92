"""The responders' desk: case actions, finding a person, and desk users.

Shared by the command line (`lifecycle.cli.cases`) and the service (`lifecycle.web`).
"""
