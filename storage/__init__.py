"""pocketrec.storage."""
