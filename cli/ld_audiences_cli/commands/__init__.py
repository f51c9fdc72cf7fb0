"""One module per operator command: `register(commands)` adds its parser, `run(args)` does it and prints."""
