"""What the test modules share besides fixtures: paths, the CLI as a user runs it, fault tooling,
reference readings, made-up pages and hostile files. A test module imports from here, never from
another test module."""
