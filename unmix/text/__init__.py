"""Text conditioning: caption variants (captions), a frozen text encoder (encoder), cached caption embeddings (bank)."""
