"""Where bytes meet the disk: checkpoint folders and atomic file writes, read and written only through safetensors
and JSON. The bottom floor: it imports nothing of unmix but its errors."""
