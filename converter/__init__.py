"""pocketrec.converter."""
