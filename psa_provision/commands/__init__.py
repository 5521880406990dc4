"""The tool's commands, one module each: cli.py parses arguments and prints what they return."""
