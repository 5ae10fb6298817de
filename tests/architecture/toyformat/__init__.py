"""A fourth container format for the architecture tests: one folder, one registry line."""
