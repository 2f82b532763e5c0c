"""The `potok` command: one module per subcommand."""
