"""One module per `dubtool` command; each registers itself on `dubtool.cli.app`."""
