"""pocketrec.runtime."""
