"""The command line: `cli` builds the parser; one module per command group."""
