"""The responders' desk: case actions, finding a person, and desk users.

Shared by the command line (`lifecycle.cli_cases`) and the service (`lifecycle.web`).
"""
