"""An example Tidings plugin: the `statuspage` connector kind."""
