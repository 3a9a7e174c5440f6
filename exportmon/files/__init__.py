"""Working on export files: names, unzipping, CSV rewriting."""
